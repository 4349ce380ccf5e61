"""Which pixels of the layer are sent, and with what mask.

All rectangles are in image (canvas) coordinates: the adapter turns them into
layer coordinates when it reads pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .bridge_package import Rect, context_rect
from .errors import PluginError


@dataclass(frozen=True)
class Source:
    """The sent pixels: ``rgba`` covers ``rect``; ``mask`` (one byte a pixel) too, or is None for the whole area."""

    rect: Rect
    rgba: bytes
    mask: bytes | None


class SourceReader(Protocol):
    """What the editor must tell about the layer and the selection."""

    def layer_rect(self) -> Rect: ...

    def canvas_rect(self) -> Rect: ...

    def selection_box(self) -> Rect | None:
        """The selection's bounding box, or None without a selection."""
        ...

    def read_rgba(self, rect: Rect) -> bytes:
        """The layer's gamma-encoded RGBA u8 pixels over ``rect`` (inside the layer)."""
        ...

    def read_mask(self, rect: Rect) -> bytes:
        """The selection's values over ``rect``, one byte a pixel, feathering kept."""
        ...


def plan_area(layer: Rect, canvas: Rect, selection: Rect | None) -> Rect:
    """The rectangle to send: the layer's visible part, or the selection's box plus context inside it."""
    visible = layer.intersect(canvas)
    if visible.empty:
        raise PluginError("The layer lies outside the canvas: move it onto the canvas or pick another layer.")
    if selection is None:
        return visible
    box = selection.intersect(visible)
    if box.empty:
        raise PluginError(
            "The selection does not overlap the active layer: select part of the layer, or use Select > None to process the whole layer."
        )
    return context_rect(box, visible)


def read_source(reader: SourceReader) -> Source:
    """Read the pixels (and the selection mask) that the job sends."""
    selection = reader.selection_box()
    rect = plan_area(reader.layer_rect(), reader.canvas_rect(), selection)
    rgba = reader.read_rgba(rect)
    if len(rgba) != rect.width * rect.height * 4:
        raise PluginError(f"GIMP returned {len(rgba)} bytes for a {rect.width}x{rect.height} area; expected RGBA.")
    if selection is None:
        return Source(rect, rgba, None)
    mask = reader.read_mask(rect)
    if mask.count(0) == len(mask):
        raise PluginError("Nothing is selected on this layer: select part of it, or use Select > None.")
    fully_selected = mask.count(255) == len(mask)  # then it is plain img2img over the whole area
    return Source(rect, rgba, None if fully_selected else mask)
