from __future__ import annotations

import pytest
from img2img_bridge.pixels import U8
from img2img_bridge.settings import Source
from img2img_bridge.sources import Capture, CaptureError, check_node_type, plan_rect, region_mask

from bridge.editor.regions import Rect

CANVAS = Rect(0, 0, 400, 300)


def test_layer_source_sends_the_layer_clipped_to_the_canvas() -> None:
    layer = Rect(-50, 100, 200, 400)
    assert plan_rect(Source.LAYER, CANVAS, layer, None) == Rect(0, 100, 150, 200)


def test_layer_source_ignores_the_selection() -> None:
    assert plan_rect(Source.LAYER, CANVAS, CANVAS, Rect(10, 10, 5, 5)) == CANVAS


def test_an_empty_layer_is_refused() -> None:
    with pytest.raises(CaptureError, match="empty"):
        plan_rect(Source.LAYER, CANVAS, Rect(0, 0, 0, 0), None)


def test_selection_source_adds_context_around_the_selection() -> None:
    rect = plan_rect(Source.SELECTION, CANVAS, CANVAS, Rect(100, 100, 80, 40))
    assert rect.x < 100 and rect.y < 100 and rect.right > 180 and rect.bottom > 140
    assert rect.intersect(CANVAS) == rect


def test_replace_background_sends_the_whole_canvas() -> None:
    assert plan_rect(Source.BACKGROUND, CANVAS, Rect(50, 50, 10, 10), Rect(100, 100, 80, 40)) == CANVAS


@pytest.mark.parametrize("source", [Source.SELECTION, Source.BACKGROUND])
def test_selection_sources_need_a_selection(source: Source) -> None:
    with pytest.raises(CaptureError, match="nothing is selected"):
        plan_rect(source, CANVAS, CANVAS, None)
    with pytest.raises(CaptureError, match="outside the canvas"):
        plan_rect(source, CANVAS, CANVAS, Rect(500, 500, 10, 10))


def test_selection_mask_is_sent_as_is_feather_included() -> None:
    selected = bytes([0, 64, 255, 0])
    assert region_mask(Source.SELECTION, selected) == selected


def test_replace_background_inverts_the_selection() -> None:
    assert region_mask(Source.BACKGROUND, bytes([0, 64, 255])) == bytes([255, 191, 0])


def test_layer_source_sends_no_mask() -> None:
    assert region_mask(Source.LAYER, None) is None


def test_masks_that_regenerate_nothing_are_refused() -> None:
    with pytest.raises(CaptureError, match="selection is empty"):
        region_mask(Source.SELECTION, bytes(4))
    with pytest.raises(CaptureError, match="covers the whole image"):
        region_mask(Source.BACKGROUND, bytes([255] * 4))


def test_only_paint_layers_are_read_directly() -> None:
    check_node_type("paintlayer", from_canvas=False)
    check_node_type("grouplayer", from_canvas=True)
    with pytest.raises(CaptureError, match="group layer"):
        check_node_type("grouplayer", from_canvas=False)


def test_capture_key_changes_with_pixels_and_mask() -> None:
    base = Capture(Rect(0, 0, 1, 1), bytes(4), U8, None)
    assert base.key == Capture(Rect(0, 0, 1, 1), bytes(4), U8, None, target="elsewhere").key
    assert base.key != Capture(Rect(0, 0, 1, 1), bytes([1, 0, 0, 0]), U8, None).key
    assert base.key != Capture(Rect(0, 0, 1, 1), bytes(4), U8, bytes([255])).key
    assert base.key != Capture(Rect(1, 0, 1, 1), bytes(4), U8, None).key
