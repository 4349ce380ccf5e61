"""Which rectangle and mask each source sends: rectangles in document coordinates, masks one byte per pixel."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from .bridge_package import Rect, context_rect, invert_mask
from .pixels import PixelFormat
from .settings import Source


class CaptureError(Exception):
    """The document cannot be sent as asked; ``message`` tells the user what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Capture:
    """What was read from the document for one job.

    ``pixels`` are Krita's raw bytes in ``fmt`` for ``rect``; ``mask`` (one byte per
    pixel of ``rect``, 255 = regenerate) is None for a whole layer. ``target`` is the
    host's handle on where results go (document and the layer to put them above).
    """

    rect: Rect
    pixels: bytes
    fmt: PixelFormat
    mask: bytes | None
    target: object = field(default=None, compare=False)

    @property
    def key(self) -> tuple[Rect, int, int]:
        """A cheap fingerprint of the capture: live mode compares these, not the pixels."""
        return (self.rect, zlib.adler32(self.pixels), -1 if self.mask is None else zlib.adler32(self.mask))


def check_node_type(node_type: str, from_canvas: bool) -> None:
    """Only paint layers are read directly; anything else needs the visible canvas."""
    if from_canvas or node_type == "paintlayer":
        return
    kind = node_type.replace("layer", " layer").replace("mask", " mask") if node_type else "not a layer"
    raise CaptureError(f"the active layer is a {kind}; select a paint layer, or tick 'Visible canvas' to use all layers")


def plan_rect(source: Source, canvas: Rect, content: Rect, selection: Rect | None) -> Rect:
    """The rectangle to send.

    ``content`` is the active layer's bounds (the canvas when reading the visible
    canvas); ``selection`` is the selection's bounding box, None without one.
    """
    if source is Source.LAYER:
        rect = content.intersect(canvas)
        if rect.empty:
            raise CaptureError("the active layer is empty inside the canvas; paint on it or tick 'Visible canvas'")
        return rect
    what = "the part to regenerate" if source is Source.SELECTION else "the subject to keep"
    if selection is None or selection.empty:
        raise CaptureError(f"nothing is selected: select {what} first, or choose Layer as the source")
    inside = selection.intersect(canvas)
    if inside.empty:
        raise CaptureError("the selection lies outside the canvas; select something inside the image")
    if source is Source.SELECTION:
        return context_rect(inside, canvas)
    return canvas


def region_mask(source: Source, selection_pixels: bytes | None) -> bytes | None:
    """The mask to send for ``source``, from the selection's bytes over the planned rectangle."""
    if source is Source.LAYER:
        return None
    if selection_pixels is None:
        raise CaptureError("nothing is selected: select an area first, or choose Layer as the source")
    mask = selection_pixels if source is Source.SELECTION else invert_mask(selection_pixels)
    if not mask.strip(b"\x00"):
        if source is Source.SELECTION:
            raise CaptureError("the selection is empty; select the part to regenerate")
        raise CaptureError("the selection covers the whole image, so no background is left to replace")
    return mask
