"""Wrapper around a GIMP image and its source layer: pixels and selection in, preview and result layers out.

The only module besides the entry file that calls GIMP; call it on the plug-in's main thread only.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from .bridge_package import SETTINGS_KEY, Rect
from .job import ResultLayer
from .pixels import mask_runs

Gimp: Any = importlib.import_module("gi.repository.Gimp")
Gegl: Any = importlib.import_module("gi.repository.Gegl")

PIXEL_FORMAT = "R'G'B'A u8"  # gamma-encoded, as the model expects, whatever the image's precision
MASK_FORMAT = "Y u8"  # selection values as stored: 255 selected, feathering in between
PREVIEW_NAME = "Img2Img preview"
PREVIEW_MARK = "img2img-bridge-preview"  # parasite on the preview layer
FROZEN_MARK = "img2img-bridge-frozen"  # parasite on the image while its history is frozen for previews
RESULT_MARK = "img2img-bridge-result"  # parasite on a result layer: the id of the layer it replaces


class GimpCanvas:
    """The ``SourceReader`` and ``Canvas`` of a job, over ``layer`` of ``image``."""

    def __init__(self, image: Any, layer: Any) -> None:
        self.image = image
        self.layer = layer
        self.result: Any = None  # the first (shown) result layer
        self.results: list[Any] = []
        self.group: Any = None  # the layer group holding the variations, when there are several
        self._preview: Any = None
        self._preview_rect: Rect | None = None

    # --- reading ------------------------------------------------------------------------------

    def layer_rect(self) -> Rect:
        x, y = self._offsets()
        return Rect(x, y, self.layer.get_width(), self.layer.get_height())

    def canvas_rect(self) -> Rect:
        return Rect(0, 0, self.image.get_width(), self.image.get_height())

    def selection_box(self) -> Rect | None:
        if Gimp.Selection.is_empty(self.image):
            return None
        _, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(self.image)  # [0] is the call's success flag
        return Rect(x1, y1, x2 - x1, y2 - y1) if non_empty else None

    def read_rgba(self, rect: Rect) -> bytes:
        x, y = self._offsets()
        area = Gegl.Rectangle.new(rect.x - x, rect.y - y, rect.width, rect.height)
        return bytes(self.layer.get_buffer().get(area, 1.0, PIXEL_FORMAT, Gegl.AbyssPolicy.NONE))

    def read_mask(self, rect: Rect) -> bytes:
        area = Gegl.Rectangle.new(rect.x, rect.y, rect.width, rect.height)
        return bytes(self.image.get_selection().get_buffer().get(area, 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE))

    # --- writing ------------------------------------------------------------------------------

    def freeze_history(self) -> None:
        self.image.undo_freeze()
        self.image.attach_parasite(Gimp.Parasite.new(FROZEN_MARK, 0, b"1"))

    def thaw_history(self) -> None:
        self.image.detach_parasite(FROZEN_MARK)
        self.image.undo_thaw()

    def show_preview(self, rect: Rect, rgba: bytes) -> None:
        if self._preview is not None and self._preview_rect != rect:
            self.remove_preview()
        if self._preview is None:
            self._preview = self._new_layer(PREVIEW_NAME, rect)
            self._preview.attach_parasite(Gimp.Parasite.new(PREVIEW_MARK, 0, b"1"))
            self._insert_above_source(self._preview)
            self._preview_rect = rect
        self._write(self._preview, Rect(0, 0, rect.width, rect.height), rgba)

    def remove_preview(self) -> None:
        if self._preview is not None:
            self.image.remove_layer(self._preview)
            self._preview, self._preview_rect = None, None
            Gimp.displays_flush()

    def add_results(self, results: Sequence[ResultLayer], group: str | None) -> None:
        """Add, for each result, a copy of the source (its mask, opacity, mode and alpha kept) with the result
        written in, and hide the source and its earlier results: the canvas then shows the source replaced by
        the first result, whatever its alpha. With ``group`` the copies go into a new layer group of that name,
        the first visible and the others hidden. A group's projection cannot be written: its result is a layer
        over the area. Each layer carries its settings (a parasite). All of it is one undo step.
        """
        self.image.undo_group_start()
        try:
            earlier = self._earlier_results()
            position = min([self.image.get_item_position(item) for item in [self.layer, *earlier]])
            parent = self.layer.get_parent()
            holder = None
            if group is not None:
                holder = Gimp.GroupLayer.new(self.image, group)
                self.image.insert_layer(holder, parent, position)
                parent, position = holder, 0
            layers = []
            for index, result in enumerate(results):
                layer = self._result_layer(result)
                layer.set_visible(index == 0)
                self.image.insert_layer(layer, parent, position + index)
                origin = (result.rect.x, result.rect.y) if self.layer.is_group() else self._offsets()
                self._write(layer, result.rect.translate(-origin[0], -origin[1]), result.rgba, result.mask)
                layers.append(layer)
            added = holder if holder is not None else layers[0]
            added.attach_parasite(Gimp.Parasite.new(RESULT_MARK, 0, str(self.layer.get_id()).encode()))
            if not self.layer.is_group():
                for shown in [self.layer, *earlier]:
                    if shown.get_visible():
                        shown.set_visible(False)
        finally:
            self.image.undo_group_end()
        self.image.set_selected_layers([layers[0]])
        self.result = layers[0]
        self.results = layers
        self.group = holder

    def _result_layer(self, result: ResultLayer) -> Any:
        if self.layer.is_group():
            layer = self._new_layer(result.name, result.rect)
        else:
            layer = self.layer.copy()
            layer.set_name(result.name)
        layer.attach_parasite(Gimp.Parasite.new(SETTINGS_KEY, Gimp.PARASITE_PERSISTENT, result.settings.encode()))
        return layer

    def set_progress(self, fraction: float | None, text: str) -> None:
        Gimp.progress_set_text(text)
        if fraction is None:
            Gimp.progress_pulse()
        else:
            Gimp.progress_update(min(1.0, max(0.0, fraction)))

    def recover(self) -> None:
        """Undo what a run that GIMP killed (Cancel in the status bar) left: its preview layer and frozen history."""
        frozen = self.image.get_parasite(FROZEN_MARK) is not None
        leftovers = [layer for layer in _all_layers(self.image) if layer.get_parasite(PREVIEW_MARK) is not None]
        if not frozen and not leftovers:
            return
        if not frozen:
            self.image.undo_freeze()  # remove the leftovers without a trace in history
        for layer in leftovers:
            self.image.remove_layer(layer)
        self.thaw_history()
        Gimp.displays_flush()

    # --- internals ----------------------------------------------------------------------------

    def _offsets(self) -> tuple[int, int]:
        _, x, y = self.layer.get_offsets()
        return x, y

    def _new_layer(self, name: str, rect: Rect) -> Any:
        layer = Gimp.Layer.new(self.image, name, rect.width, rect.height, self.layer.type_with_alpha(), 100.0, Gimp.LayerMode.NORMAL)
        layer.set_offsets(rect.x, rect.y)
        return layer

    def _insert_above_source(self, layer: Any) -> None:
        self.image.insert_layer(layer, self.layer.get_parent(), self.image.get_item_position(self.layer))

    def _earlier_results(self) -> list[Any]:
        """The results of earlier runs on this layer that lie beside it: a new result goes above them all."""
        mark = str(self.layer.get_id()).encode()
        parent = self.layer.get_parent()
        siblings = parent.get_children() if parent is not None else self.image.get_layers()
        found = []
        for layer in siblings:
            parasite = layer.get_parasite(RESULT_MARK)
            if parasite is not None and bytes(parasite.get_data()) == mark:
                found.append(layer)
        return found

    def _write(self, layer: Any, local: Rect, rgba: bytes, mask: bytes | None = None) -> None:
        """Write ``rgba`` over ``local`` (layer coordinates); with ``mask`` only where it is not 0."""
        buffer = layer.get_buffer()
        if mask is None:
            buffer.set(Gegl.Rectangle.new(local.x, local.y, local.width, local.height), PIXEL_FORMAT, rgba)
        else:
            row = local.width
            for y, start, end in mask_runs(mask, row):
                area = Gegl.Rectangle.new(local.x + start, local.y + y, end - start, 1)
                buffer.set(area, PIXEL_FORMAT, rgba[(y * row + start) * 4 : (y * row + end) * 4])
        buffer.flush()
        layer.update(local.x, local.y, local.width, local.height)
        Gimp.displays_flush()


def _all_layers(image: Any) -> list[Any]:
    found: list[Any] = []
    pending = list(image.get_layers())
    while pending:
        layer = pending.pop()
        found.append(layer)
        if layer.is_group():
            pending.extend(layer.get_children())
    return found
