"""Rectangle and mask arithmetic shared by the plug-ins (standard library only; plug-ins carry a copy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def intersect(self, other: Rect) -> Rect:
        x, y = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        return Rect(x, y, max(0, right - x), max(0, bottom - y))

    def translate(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.width, self.height)

    def grow(self, margin: int) -> Rect:
        return Rect(self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin)


def context_rect(selection: Rect, bounds: Rect, fraction: float = 0.25, minimum: int = 32) -> Rect:
    """The selection's box plus surrounding context, clipped to ``bounds``.

    The model sees some of what lies around the selection so the regenerated
    part fits in; ``fraction`` of the box's larger side, at least ``minimum`` pixels.
    """
    margin = max(minimum, round(max(selection.width, selection.height) * fraction))
    return selection.grow(margin).intersect(bounds)


def mask_bounds(mask: bytes, width: int, height: int) -> Rect | None:
    """The smallest rectangle holding every non-zero mask byte, or None for an empty mask."""
    top = bottom = -1
    left, right = width, -1
    for row in range(height):
        line = mask[row * width : (row + 1) * width]
        if not any(line):
            continue
        if top < 0:
            top = row
        bottom = row
        first = next(i for i, v in enumerate(line) if v)
        last = width - 1 - next(i for i, v in enumerate(reversed(line)) if v)
        left, right = min(left, first), max(right, last)
    if top < 0:
        return None
    return Rect(left, top, right - left + 1, bottom - top + 1)


def crop(data: bytes, width: int, rect: Rect, channels: int) -> bytes:
    """Cut ``rect`` out of a row-major buffer ``width`` pixels wide."""
    stride = width * channels
    start = rect.x * channels
    row_bytes = rect.width * channels
    return b"".join(data[(rect.y + r) * stride + start : (rect.y + r) * stride + start + row_bytes] for r in range(rect.height))


def invert_mask(mask: bytes) -> bytes:
    """255 - every byte: "regenerate everything but the selection"."""
    return mask.translate(bytes(255 - i for i in range(256)))
