"""Live mode's scheduling, as a state machine driven by ticks and a clock.

Every tick the host captures the source and passes its fingerprint to
``observe``. A change is sent once the canvas has been still for ``debounce``
seconds, and only while no live job of this document is in flight; changes made
meanwhile are not queued one by one: the newest state simply replaces the older
pending one and goes out when the running job ends.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Callable, Hashable

DEBOUNCE_S = 0.3
TICK_S = 0.1


class LiveState(Enum):
    OFF = "off"
    IDLE = "idle"  # the last state seen has been sent
    SETTLING = "settling"  # a newer state waits for the canvas to be still
    RUNNING = "running"  # a live job is in flight


class LiveScheduler:
    def __init__(self, debounce: float = DEBOUNCE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.debounce = debounce
        self._clock = clock
        self._on = False
        self._seen: Hashable | None = None
        self._changed_at: float | None = None  # None: the state seen has been still long enough
        self._sent: Hashable | None = None
        self._in_flight: str | None = None

    @property
    def state(self) -> LiveState:
        if not self._on:
            return LiveState.OFF
        if self._in_flight is not None:
            return LiveState.RUNNING
        if self._seen is not None and self._seen != self._sent:
            return LiveState.SETTLING
        return LiveState.IDLE

    @property
    def in_flight(self) -> str | None:
        return self._in_flight

    def start(self) -> None:
        """Turn on; the first state observed goes out at once."""
        self._on = True
        self._seen = self._sent = self._in_flight = None
        self._changed_at = None

    def stop(self) -> str | None:
        """Turn off; returns the job still in flight, which the caller cancels."""
        job_id = self._in_flight
        self._on = False
        self._seen = self._sent = self._in_flight = None
        return job_id

    def observe(self, key: Hashable) -> bool:
        """Record the current state's fingerprint; True when it should be sent now."""
        if not self._on:
            return False
        now = self._clock()
        if key != self._seen:
            if self._seen is not None:
                self._changed_at = now
            self._seen = key
        if self._in_flight is not None or key == self._sent:
            return False
        if self._changed_at is not None and now - self._changed_at < self.debounce - 1e-9:
            return False
        self._changed_at = None
        return True

    def sent(self, job_id: str, key: Hashable) -> None:
        """A job for ``key`` went out."""
        if self._on:
            self._in_flight = job_id
            self._sent = key

    def finished(self, job_id: str) -> bool:
        """A job ended (result, error or cancel); True if it was this scheduler's job in flight."""
        if job_id != self._in_flight:
            return False
        self._in_flight = None
        return True

    def invalidate(self) -> None:
        """The settings changed: render the current state again once things are still."""
        if self._on:
            self._sent = None
            self._changed_at = self._clock()
