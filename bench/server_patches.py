"""Prototype changes to the server's side, switchable between runs against the same live server.

- ``progress-every-step``: a progress event after every denoising step, as
  before they were throttled (``server.PROGRESS_INTERVAL_S``); measures what the
  throttle saves.

The earlier prototypes (framing a raw result once from the array, queueing
views, releasing frames) shipped in commit 125bcd2; their measurements against
the code before it are in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from bridge import server

PATCHES = ("progress-every-step",)


@contextmanager
def patched(names: tuple[str, ...] | list[str]) -> Iterator[None]:
    """Apply the named patches to the server modules for the duration of the block."""
    unknown = set(names) - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown server patches {sorted(unknown)}; known: {', '.join(PATCHES)}")
    with ExitStack() as stack:
        if "progress-every-step" in names:
            stack.callback(setattr, server, "PROGRESS_INTERVAL_S", server.PROGRESS_INTERVAL_S)
            server.PROGRESS_INTERVAL_S = 0.0
        yield


def parse_variant(variant: str) -> tuple[str, ...]:
    return () if variant == "shipped" else tuple(variant.split("+"))
