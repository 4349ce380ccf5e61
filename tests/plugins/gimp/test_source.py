from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from img2img_gimp.errors import PluginError
from img2img_gimp.source import plan_area, read_source

from bridge.editor.regions import Rect


@dataclass
class FakeLayer:
    """A layer at ``rect`` (image coordinates) whose pixel at image (x, y) is (x, y, 7, 255) mod 256."""

    rect: Rect
    canvas: Rect = field(default_factory=lambda: Rect(0, 0, 100, 80))
    selection: Rect | None = None
    mask_value: int = 200
    reads: list[Rect] = field(default_factory=list)

    def layer_rect(self) -> Rect:
        return self.rect

    def canvas_rect(self) -> Rect:
        return self.canvas

    def selection_box(self) -> Rect | None:
        return self.selection

    def read_rgba(self, rect: Rect) -> bytes:
        self.reads.append(rect)
        assert rect.intersect(self.rect) == rect, "reads must stay inside the layer"
        return bytes(value for y in range(rect.y, rect.bottom) for x in range(rect.x, rect.right) for value in (x % 256, y % 256, 7, 255))

    def read_mask(self, rect: Rect) -> bytes:
        sel = self.selection
        assert sel is not None
        return bytes(
            self.mask_value if sel.x <= x < sel.right and sel.y <= y < sel.bottom else 0
            for y in range(rect.y, rect.bottom)
            for x in range(rect.x, rect.right)
        )


CANVAS = Rect(0, 0, 100, 80)


def test_without_selection_the_whole_layer_is_sent() -> None:
    assert plan_area(Rect(10, 5, 30, 20), CANVAS, None) == Rect(10, 5, 30, 20)


def test_a_layer_larger_than_the_canvas_is_clipped_to_it() -> None:
    assert plan_area(Rect(-50, -20, 300, 200), CANVAS, None) == CANVAS


def test_a_layer_partly_off_canvas_sends_its_visible_part() -> None:
    assert plan_area(Rect(90, 70, 40, 40), CANVAS, None) == Rect(90, 70, 10, 10)


def test_a_layer_outside_the_canvas_is_refused() -> None:
    with pytest.raises(PluginError, match="outside the canvas"):
        plan_area(Rect(200, 0, 10, 10), CANVAS, None)


def test_a_selection_sends_its_box_plus_context_inside_the_layer() -> None:
    area = plan_area(Rect(0, 0, 100, 80), CANVAS, Rect(40, 30, 10, 10))
    assert area.intersect(Rect(40, 30, 10, 10)) == Rect(40, 30, 10, 10)
    assert area.width > 10 and area.height > 10
    assert area.intersect(CANVAS) == area


def test_context_never_leaves_the_layer() -> None:
    layer = Rect(30, 20, 40, 30)
    area = plan_area(layer, CANVAS, Rect(32, 22, 5, 5))
    assert area.intersect(layer) == area


def test_a_selection_off_the_layer_is_refused() -> None:
    with pytest.raises(PluginError, match="does not overlap"):
        plan_area(Rect(0, 0, 20, 20), CANVAS, Rect(50, 50, 10, 10))


def test_read_source_reads_layer_pixels_at_image_coordinates() -> None:
    layer = FakeLayer(Rect(10, 5, 4, 3))
    source = read_source(layer)
    assert source.rect == Rect(10, 5, 4, 3)
    assert source.mask is None
    assert source.rgba[:8] == bytes([10, 5, 7, 255, 11, 5, 7, 255])


def test_read_source_with_selection_sends_the_mask_over_the_same_area() -> None:
    layer = FakeLayer(Rect(0, 0, 100, 80), selection=Rect(40, 30, 10, 10))
    source = read_source(layer)
    assert source.mask is not None
    assert len(source.mask) == source.rect.width * source.rect.height
    assert len(source.rgba) == len(source.mask) * 4
    assert source.mask.count(200) == 100
    first = (30 - source.rect.y) * source.rect.width + (40 - source.rect.x)
    assert source.mask[first] == 200 and source.mask[first - 1] == 0


def test_an_empty_mask_is_refused() -> None:
    layer = FakeLayer(Rect(0, 0, 100, 80), selection=Rect(40, 30, 10, 10), mask_value=0)
    with pytest.raises(PluginError, match="Nothing is selected"):
        read_source(layer)


def test_a_fully_selected_area_needs_no_mask() -> None:
    layer = FakeLayer(Rect(10, 10, 20, 20), selection=Rect(0, 0, 100, 80), mask_value=255)
    source = read_source(layer)
    assert source.mask is None
    assert source.rect == Rect(10, 10, 20, 20)


def test_a_wrong_pixel_count_from_the_editor_is_refused() -> None:
    class Short(FakeLayer):
        def read_rgba(self, rect: Rect) -> bytes:
            return b"\0" * 3

    with pytest.raises(PluginError, match="expected RGBA"):
        read_source(Short(Rect(0, 0, 2, 2)))
