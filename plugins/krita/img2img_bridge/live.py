"""Live mode's scheduling, as a state machine driven by ticks, finished frames and a clock.

The host captures the source on every tick and as soon as a live frame comes
back, and passes its fingerprint to ``observe``. One live job is in flight at a
time; changes made meanwhile are never queued: the newest state replaces the
older pending one and goes out when the running job ends.

While frames are fast the newest state goes out at once, so results follow the
brush. Only when the measured frame time (an EWMA) is slow does a change wait
for the canvas to be still, for about one frame time (at most ``max_pause``):
a slow frame spent on a state the brush has already left would delay the final
state by a whole frame, so waiting up to that long costs no more. A long stroke
still shows frames: no change waits more than two pauses after the last frame.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Hashable

TICK_S = 0.05  # how often the host looks at the canvas when no frame is coming back
FAST_FRAME_S = 0.5  # frames faster than this go out while the brush moves
MAX_PAUSE_S = 1.0
FRAME_WEIGHT = 0.3  # the EWMA's weight of the newest frame time
_FPS_WINDOW_S = 2.0
_FPS_FRAMES = 64


class LiveState(Enum):
    OFF = "off"
    IDLE = "idle"  # the last state seen has been sent
    SETTLING = "settling"  # a newer state waits for the canvas to be still
    RUNNING = "running"  # a live job is in flight


@dataclass(frozen=True)
class LiveStats:
    """What the docker shows about live frames; None where nothing was measured yet."""

    fps: float | None = None  # frames shown per second over the last two seconds of frames
    latency_s: float | None = None  # the last frame's: first seen on the canvas to shown
    frame_s: float | None = None  # EWMA of sent to shown
    capture_ms: float | None = None  # the last capture's cost on the host's main thread
    pause_s: float = 0.0  # how long a change waits for the canvas to be still (0 while frames are fast)

    def describe(self) -> str:
        if self.fps is None and self.latency_s is None:
            return ""
        parts = [f"{self.fps:.1f} fps" if self.fps is not None else "– fps"]
        if self.latency_s is not None:
            parts.append(f"latency {self.latency_s * 1000:.0f} ms")
        if self.capture_ms is not None:
            parts.append(f"capture {self.capture_ms:.1f} ms")
        if self.pause_s > 0:
            parts.append(f"waits {self.pause_s * 1000:.0f} ms for a pause")
        return " · ".join(parts)


class LiveScheduler:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        fast_frame: float = FAST_FRAME_S,
        max_pause: float = MAX_PAUSE_S,
    ) -> None:
        self.fast_frame = fast_frame
        self.max_pause = max_pause
        self._clock = clock
        self._on = False
        self._seen: Hashable | None = None
        self._seen_at = 0.0  # when the state seen was first seen
        self._changed_at: float | None = None  # None: the state seen needs no pause
        self._pending_since: float | None = None  # the first change not sent yet
        self._back_at = 0.0  # when the last job ended
        self._sent: Hashable | None = None
        self._in_flight: str | None = None
        self._sent_at = 0.0
        self._in_flight_seen_at = 0.0
        self._frame_s: float | None = None
        self._latency_s: float | None = None
        self._shown: deque[float] = deque(maxlen=_FPS_FRAMES)

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

    @property
    def pause(self) -> float:
        """How long a change waits for the canvas to be still before it goes out."""
        if self._frame_s is None or self._frame_s <= self.fast_frame:
            return 0.0
        return min(self._frame_s, self.max_pause)

    def stats(self, capture_ms: float | None = None) -> LiveStats:
        fps = None
        if len(self._shown) >= 2:
            recent = [t for t in self._shown if self._shown[-1] - t <= _FPS_WINDOW_S]
            span = recent[-1] - recent[0]
            fps = (len(recent) - 1) / span if len(recent) >= 2 and span > 0 else None
        return LiveStats(fps, self._latency_s, self._frame_s, capture_ms, self.pause)

    def start(self) -> None:
        """Turn on; the first state observed goes out at once. Frame times measured before are kept."""
        self._on = True
        self._seen = self._sent = self._in_flight = None
        self._changed_at = self._pending_since = None
        self._latency_s = None
        self._shown.clear()

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
                if self._pending_since is None:
                    self._pending_since = now
            self._seen, self._seen_at = key, now
        if self._in_flight is not None or key == self._sent:
            return False
        pause = self.pause
        if self._changed_at is not None and now - self._changed_at < pause - 1e-9:
            waited = now - max(self._pending_since or now, self._back_at)
            if waited < 2 * pause - 1e-9:
                return False
        self._changed_at = self._pending_since = None
        return True

    def sent(self, job_id: str, key: Hashable) -> None:
        """A job for ``key`` went out."""
        if self._on:
            self._in_flight = job_id
            self._sent = key
            self._sent_at = self._clock()
            self._in_flight_seen_at = self._seen_at if key == self._seen else self._sent_at

    def finished(self, job_id: str, *, shown: bool = False) -> bool:
        """A job ended (``shown``: its result is on screen; else an error or a cancel).

        True if it was this scheduler's job in flight; only shown frames count in the frame time.
        """
        if job_id != self._in_flight:
            return False
        self._in_flight = None
        now = self._back_at = self._clock()
        if shown:
            took = now - self._sent_at
            self._frame_s = took if self._frame_s is None else FRAME_WEIGHT * took + (1 - FRAME_WEIGHT) * self._frame_s
            self._latency_s = now - self._in_flight_seen_at
            self._shown.append(now)
        return True

    def invalidate(self) -> None:
        """The settings changed: render the current state again (after the pause, when frames are slow)."""
        if self._on:
            self._sent = None
            self._changed_at = self._clock()
