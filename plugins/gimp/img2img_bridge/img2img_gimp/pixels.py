"""Pixel operations on raw RGBA u8 rows, in pure Python fast enough for a live preview."""

from __future__ import annotations

import re

_SELECTED = re.compile(rb"[^\x00]+")


def scale_nearest(rgba: bytes, width: int, height: int, new_width: int, new_height: int) -> bytes:
    """Scale an RGBA image to ``new_width`` x ``new_height`` by nearest neighbour (previews only)."""
    if len(rgba) != width * height * 4:
        raise ValueError(f"{len(rgba)} bytes are not a {width}x{height} RGBA image")
    if (width, height) == (new_width, new_height):
        return rgba
    columns = [((2 * x + 1) * width) // (2 * new_width) for x in range(new_width)]
    rows: list[bytes] = []
    last_source_row, last_row = -1, b""
    for y in range(new_height):
        source_row = ((2 * y + 1) * height) // (2 * new_height)
        if source_row != last_source_row:
            line = rgba[source_row * width * 4 : (source_row + 1) * width * 4]
            pixels = [line[i : i + 4] for i in range(0, len(line), 4)]
            last_source_row, last_row = source_row, b"".join([pixels[c] for c in columns])
        rows.append(last_row)
    return b"".join(rows)


def alpha_from_mask(rgba: bytes, mask: bytes) -> bytes:
    """``rgba`` with its alpha replaced by ``mask``: a preview shows only where the selection regenerates."""
    _check(rgba, mask)
    out = bytearray(rgba)
    out[3::4] = mask
    return bytes(out)


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


def _check(rgba: bytes, mask: bytes) -> None:
    if len(rgba) != len(mask) * 4:
        raise ValueError(f"{len(rgba)} RGBA bytes do not match a mask of {len(mask)} pixels")
