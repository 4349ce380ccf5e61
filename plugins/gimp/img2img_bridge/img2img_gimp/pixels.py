"""How GIMP writes a masked result: run by run, so that a pixel the mask leaves out is never written."""

from __future__ import annotations

import re

_SELECTED = re.compile(rb"[^\x00]+")


def mask_runs(mask: bytes, width: int) -> list[tuple[int, int, int]]:
    """The mask's non-zero pixels as runs ``(row, first column, column after the last)``, row by row.

    The result is written run by run, so that a pixel the mask leaves out is
    never written: it keeps its exact value at any precision.
    """
    if width <= 0 or len(mask) % width:
        raise ValueError(f"a mask of {len(mask)} bytes is not made of rows of {width} pixels")
    runs: list[tuple[int, int, int]] = []
    for y in range(len(mask) // width):
        row = mask[y * width : (y + 1) * width]
        runs.extend((y, m.start(), m.end()) for m in _SELECTED.finditer(row))
    return runs
