"""Prototype changes to the server's side, switchable between runs against the same live server.

- ``progress-throttle``: progress events at most every 50 ms (and always the
  last step); each one wakes the server's loop and the client, which on two
  cores takes time from the denoising.

The earlier prototypes (framing a raw result once from the array, queueing
views, releasing frames) shipped in commit 125bcd2; their measurements against
the code before it are in docs/benchmarks.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from bridge import server

PATCHES = ("progress-throttle",)
_PROGRESS_INTERVAL_S = 0.05
_ORIGINAL_PROGRESS = server._JobHooks.progress


def _progress_throttled(self: Any, index: int, step: int, steps: int) -> None:
    now = time.monotonic()
    if step < steps and now - getattr(self, "_progress_sent", -1.0) < _PROGRESS_INTERVAL_S:
        return
    self._progress_sent = now
    _ORIGINAL_PROGRESS(self, index, step, steps)


@contextmanager
def patched(names: tuple[str, ...] | list[str]) -> Iterator[None]:
    """Apply the named patches to the server modules for the duration of the block."""
    unknown = set(names) - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown server patches {sorted(unknown)}; known: {', '.join(PATCHES)}")
    with ExitStack() as stack:
        if "progress-throttle" in names:
            stack.callback(setattr, server._JobHooks, "progress", _ORIGINAL_PROGRESS)
            server._JobHooks.progress = _progress_throttled  # type: ignore[method-assign]
        yield


def parse_variant(variant: str) -> tuple[str, ...]:
    return () if variant == "shipped" else tuple(variant.split("+"))
