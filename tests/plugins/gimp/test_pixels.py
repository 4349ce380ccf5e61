from __future__ import annotations

import time

import pytest
from img2img_gimp.pixels import alpha_from_mask, mask_runs, scale_nearest


def image(width: int, height: int) -> bytes:
    return bytes(v for y in range(height) for x in range(width) for v in (x, y, 100, 255))


def pixel(rgba: bytes, width: int, x: int, y: int) -> tuple[int, ...]:
    start = (y * width + x) * 4
    return tuple(rgba[start : start + 4])


def test_scale_nearest_doubles_each_pixel() -> None:
    big = scale_nearest(image(2, 2), 2, 2, 4, 4)
    assert len(big) == 4 * 4 * 4
    assert [pixel(big, 4, x, 0)[0] for x in range(4)] == [0, 0, 1, 1]
    assert [pixel(big, 4, 0, y)[1] for y in range(4)] == [0, 0, 1, 1]


def test_scale_nearest_to_an_odd_size_keeps_the_corners() -> None:
    big = scale_nearest(image(3, 2), 3, 2, 7, 5)
    assert len(big) == 7 * 5 * 4
    assert pixel(big, 7, 0, 0) == (0, 0, 100, 255)
    assert pixel(big, 7, 6, 4) == (2, 1, 100, 255)


def test_scale_nearest_same_size_is_identity() -> None:
    data = image(3, 3)
    assert scale_nearest(data, 3, 3, 3, 3) is data


def test_scale_nearest_refuses_a_wrong_buffer() -> None:
    with pytest.raises(ValueError):
        scale_nearest(b"\0" * 5, 2, 2, 4, 4)


def test_scale_nearest_is_fast_enough_for_a_live_preview() -> None:
    small = image(256, 256)
    start = time.perf_counter()
    big = scale_nearest(small, 256, 256, 1024, 1024)
    assert len(big) == 1024 * 1024 * 4
    assert time.perf_counter() - start < 2.0


def test_alpha_from_mask_replaces_only_alpha() -> None:
    out = alpha_from_mask(bytes([1, 2, 3, 255, 4, 5, 6, 255]), bytes([0, 128]))
    assert out == bytes([1, 2, 3, 0, 4, 5, 6, 128])


def test_mask_runs_are_the_selected_spans_of_each_row() -> None:
    mask = bytes([0, 1, 255, 0, 9, 0, 0, 0, 255, 255, 255, 255])
    assert mask_runs(mask, 4) == [(0, 1, 3), (1, 0, 1), (2, 0, 4)]
    assert mask_runs(bytes(8), 4) == []


def test_mask_size_must_match() -> None:
    with pytest.raises(ValueError):
        mask_runs(b"\0" * 7, 4)
    with pytest.raises(ValueError):
        alpha_from_mask(b"\0" * 8, b"\0" * 3)
