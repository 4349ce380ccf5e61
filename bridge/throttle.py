"""A logging filter that keeps a flood of similar lines (one per hostile connection) from filling the disk."""

from __future__ import annotations

import logging
import time
from typing import Callable


class LogThrottle(logging.Filter):
    """Let through at most ``burst`` records of one message template per ``window`` seconds.

    When a template's window ends, the first record after it says how many similar lines were dropped.
    """

    def __init__(self, burst: int = 20, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        self._seen: dict[tuple[str, object], list[float | int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            dropped = 0 if entry is None else int(entry[2])
            if len(self._seen) > 1000:  # templates are few; a flood of distinct ones must not grow this
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} ({dropped} similar lines were dropped in the last {self.window:.0f} s)"
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        entry[2] += 1
        return False
