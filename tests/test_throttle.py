"""The log throttle: a flood of one line is cut to a burst per window, then summarised."""

from __future__ import annotations

import logging

from bridge.throttle import LogThrottle


def record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("img2img_bridge", logging.WARNING, __file__, 1, msg, None, None)


def test_a_flood_of_one_line_is_cut_to_the_burst_and_the_drop_is_reported() -> None:
    now = [0.0]
    throttle = LogThrottle(burst=3, window=10.0, clock=lambda: now[0])
    passed = [throttle.filter(record("closing %s")) for _ in range(100)]
    assert passed.count(True) == 3
    assert throttle.filter(record("another line"))  # other templates have their own budget
    now[0] = 10.0
    first = record("closing %s")
    assert throttle.filter(first)
    assert "97 similar lines were dropped" in str(first.msg)
