from __future__ import annotations

import pytest

from bridge.editor.regions import Rect, context_rect, crop, invert_mask, mask_bounds


def test_rect_edges() -> None:
    rect = Rect(3, 4, 10, 20)
    assert (rect.right, rect.bottom) == (13, 24)
    assert not rect.empty
    assert Rect(3, 4, 0, 5).empty
    assert Rect(3, 4, 5, -1).empty


def test_intersect_overlapping_rects() -> None:
    assert Rect(0, 0, 10, 10).intersect(Rect(5, 6, 10, 10)) == Rect(5, 6, 5, 4)
    assert Rect(5, 6, 10, 10).intersect(Rect(0, 0, 10, 10)) == Rect(5, 6, 5, 4)


def test_intersect_with_a_rect_inside_gives_the_inner_one() -> None:
    assert Rect(0, 0, 100, 100).intersect(Rect(10, 20, 30, 40)) == Rect(10, 20, 30, 40)


@pytest.mark.parametrize("other", [Rect(20, 0, 5, 5), Rect(0, 20, 5, 5), Rect(10, 0, 5, 5), Rect(-10, -10, 5, 5)])
def test_intersect_of_disjoint_or_touching_rects_is_empty(other: Rect) -> None:
    assert Rect(0, 0, 10, 10).intersect(other).empty


def test_translate_and_grow() -> None:
    assert Rect(1, 2, 3, 4).translate(10, -2) == Rect(11, 0, 3, 4)
    assert Rect(10, 10, 4, 6).grow(3) == Rect(7, 7, 10, 12)
    assert Rect(10, 10, 4, 6).grow(-1) == Rect(11, 11, 2, 4)


def test_context_rect_uses_the_minimum_margin_for_small_selections() -> None:
    assert context_rect(Rect(100, 100, 40, 20), Rect(0, 0, 1000, 1000)) == Rect(68, 68, 104, 84)


def test_context_rect_margin_grows_with_the_larger_side() -> None:
    # a quarter of 400 is 100, more than the 32 pixel minimum
    assert context_rect(Rect(300, 300, 400, 200), Rect(0, 0, 1000, 1000)) == Rect(200, 200, 600, 400)
    assert context_rect(Rect(300, 300, 400, 200), Rect(0, 0, 1000, 1000), fraction=0.5, minimum=0) == Rect(100, 100, 800, 600)


def test_context_rect_clips_at_the_top_left_edges() -> None:
    assert context_rect(Rect(0, 5, 10, 10), Rect(0, 0, 50, 50)) == Rect(0, 0, 42, 47)


def test_context_rect_clips_at_the_bottom_right_edges() -> None:
    assert context_rect(Rect(45, 40, 5, 10), Rect(0, 0, 50, 50)) == Rect(13, 8, 37, 42)


def test_context_rect_never_leaves_bounds_that_do_not_start_at_zero() -> None:
    bounds = Rect(100, 200, 64, 64)
    assert context_rect(Rect(100, 200, 64, 64), bounds) == bounds
    assert context_rect(Rect(120, 220, 8, 8), bounds) == Rect(100, 200, 60, 60)


def test_mask_bounds_of_an_empty_mask_is_none() -> None:
    assert mask_bounds(bytes(5 * 4), 5, 4) is None


def test_mask_bounds_of_a_single_pixel() -> None:
    mask = bytearray(5 * 4)
    mask[2 * 5 + 3] = 1
    assert mask_bounds(bytes(mask), 5, 4) == Rect(3, 2, 1, 1)


def test_mask_bounds_of_a_full_mask() -> None:
    assert mask_bounds(b"\xff" * (5 * 4), 5, 4) == Rect(0, 0, 5, 4)


def test_mask_bounds_spans_separate_pixels() -> None:
    mask = bytearray(6 * 5)
    mask[1 * 6 + 4] = 255
    mask[3 * 6 + 1] = 10
    assert mask_bounds(bytes(mask), 6, 5) == Rect(1, 1, 4, 3)


def test_mask_bounds_at_the_corners() -> None:
    mask = bytearray(4 * 3)
    mask[0] = mask[-1] = 1
    assert mask_bounds(bytes(mask), 4, 3) == Rect(0, 0, 4, 3)


def test_crop_single_channel() -> None:
    data = bytes(range(4 * 3))  # 4 wide, 3 high
    assert crop(data, 4, Rect(1, 1, 2, 2), 1) == bytes([5, 6, 9, 10])


def test_crop_rgba_keeps_whole_pixels() -> None:
    data = bytes(range(3 * 2 * 4))  # 3 wide, 2 high, RGBA
    assert crop(data, 3, Rect(2, 0, 1, 2), 4) == bytes([8, 9, 10, 11, 20, 21, 22, 23])


def test_crop_of_the_whole_buffer_is_the_buffer() -> None:
    data = bytes(range(24))
    assert crop(data, 3, Rect(0, 0, 3, 2), 4) == data


def test_invert_mask() -> None:
    assert invert_mask(b"\x00\xff\x80\x01") == b"\xff\x00\x7f\xfe"
    every = bytes(range(256))
    assert invert_mask(every) == every[::-1]
    assert invert_mask(invert_mask(every)) == every
