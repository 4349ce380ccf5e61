from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from bridge import imaging
from bridge.editor import protocol as p
from bridge.editor.regions import Rect, mask_bounds


def random_rgba(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 4), dtype=np.uint8)


@pytest.mark.parametrize("encoding", [p.Encoding.RAW, p.Encoding.ZLIB, p.Encoding.PNG])
def test_lossless_encodings_round_trip(encoding: p.Encoding) -> None:
    pixels = random_rgba(5, 7)
    image = imaging.encode_rgba(pixels, encoding)
    assert (image.width, image.height, image.encoding) == (7, 5, encoding)
    decoded = imaging.decode_rgba(image)
    assert decoded.dtype == np.uint8
    assert np.array_equal(decoded, pixels)


def test_raw_and_zlib_carry_the_bytes_row_major() -> None:
    pixels = random_rgba(3, 2)
    assert imaging.encode_rgba(pixels, p.Encoding.RAW).data == pixels.tobytes()
    assert zlib.decompress(imaging.encode_rgba(pixels, p.Encoding.ZLIB).data) == pixels.tobytes()


def test_encoding_a_non_contiguous_view_encodes_what_it_shows() -> None:
    pixels = random_rgba(6, 6)
    view = pixels[1:4, 2:5]
    assert np.array_equal(imaging.decode_rgba(imaging.encode_rgba(view, p.Encoding.RAW)), view)


def test_jpeg_keeps_size_and_approximate_colour_and_drops_alpha() -> None:
    pixels = np.empty((16, 24, 4), dtype=np.uint8)
    pixels[...] = (200, 40, 90, 128)
    image = imaging.encode_rgba(pixels, p.Encoding.JPEG)
    assert image.data[:2] == b"\xff\xd8"
    decoded = imaging.decode_rgba(image)
    assert decoded.shape == (16, 24, 4)
    assert np.abs(decoded[..., :3].astype(int) - (200, 40, 90)).max() <= 6
    assert (decoded[..., 3] == 255).all()


def test_a_png_whose_real_size_differs_from_the_stated_one_is_a_size_mismatch() -> None:
    png = imaging.encode_rgba(random_rgba(8, 8), p.Encoding.PNG)
    with pytest.raises(p.ProtocolError) as info:
        imaging.decode_rgba(p.Image(16, 8, png.data, p.Encoding.PNG))
    assert (info.value.code, info.value.field) == (p.ErrorCode.SIZE_MISMATCH, "image.data")
    assert "8x8" in info.value.message and "16x8" in info.value.message


def test_an_unreadable_png_is_invalid() -> None:
    with pytest.raises(p.ProtocolError) as info:
        imaging.decode_rgba(p.Image(2, 2, b"\x89PNG\r\n\x1a\n garbage", p.Encoding.PNG))
    assert (info.value.code, info.value.field) == (p.ErrorCode.INVALID_FIELD, "image.data")


def test_a_grey_png_decodes_to_rgba() -> None:
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((3, 4), 77, dtype=np.uint8), "L").save(buffer, "PNG")
    decoded = imaging.decode_rgba(p.Image(4, 3, buffer.getvalue(), p.Encoding.PNG))
    assert decoded.shape == (3, 4, 4)
    assert (decoded[..., :3] == 77).all() and (decoded[..., 3] == 255).all()


def test_raw_data_of_the_wrong_length_is_a_size_mismatch() -> None:
    with pytest.raises(p.ProtocolError) as info:
        imaging.decode_rgba(p.Image(2, 2, bytes(15)))
    assert info.value.code is p.ErrorCode.SIZE_MISMATCH


def test_decode_mask_raw_and_zlib() -> None:
    gray = bytes([0, 10, 255, 128, 1, 2])
    expected = np.array([[0, 10, 255], [128, 1, 2]], dtype=np.uint8)
    assert np.array_equal(imaging.decode_mask(p.Mask(3, 2, gray)), expected)
    assert np.array_equal(imaging.decode_mask(p.Mask(3, 2, zlib.compress(gray), p.Encoding.ZLIB)), expected)


def test_decode_mask_refuses_image_encodings() -> None:
    with pytest.raises(p.ProtocolError) as info:
        imaging.decode_mask(p.Mask(2, 2, b"\x89PNG", p.Encoding.PNG))
    assert (info.value.code, info.value.field) == (p.ErrorCode.UNSUPPORTED_ENCODING, "mask.encoding")


def test_mask_box_of_an_empty_mask_is_none() -> None:
    assert imaging.mask_box(np.zeros((4, 5), dtype=np.uint8)) is None


def test_mask_box() -> None:
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:5, 3:9] = 255
    mask[7, 4] = 1
    assert imaging.mask_box(mask) == Rect(3, 2, 6, 6)


@pytest.mark.parametrize("seed", range(5))
def test_mask_box_agrees_with_the_plug_ins_mask_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((9, 11), dtype=np.uint8)
    ys, xs = rng.integers(0, 9, size=3), rng.integers(0, 11, size=3)
    mask[ys, xs] = rng.integers(1, 256, size=3, dtype=np.uint8)
    assert imaging.mask_box(mask) == mask_bounds(mask.tobytes(), 11, 9)


def test_context_box_pads_and_clips() -> None:
    # a sixth of 60 is 10, more than 128 // 16
    assert imaging.context_box(Rect(50, 50, 60, 30), 200, 200, 128) == Rect(40, 40, 80, 50)
    assert imaging.context_box(Rect(0, 0, 6, 6), 20, 20, 128) == Rect(0, 0, 14, 14)


@pytest.mark.parametrize(
    ("width", "height", "resolution", "multiple"),
    [(1000, 500, 512, 64), (300, 200, 128, 16), (37, 1000, 512, 8), (4000, 3000, 1024, 64), (640, 480, 512, 64), (1, 1, 128, 16)],
)
def test_working_size_keeps_the_aspect_ratio_and_pads_to_multiples(width: int, height: int, resolution: int, multiple: int) -> None:
    ws = imaging.working_size(width, height, resolution, multiple)
    # each side is the same scale factor, rounded: the ratio differs only by that rounding
    scale = min((resolution * resolution / (width * height)) ** 0.5, 2.0)
    assert abs(ws.width - width * scale) <= 0.5 and abs(ws.height - height * scale) <= 0.5
    assert abs(ws.width * height - ws.height * width) <= (width + height) / 2
    for side, padded in ((ws.width, ws.padded_width), (ws.height, ws.padded_height)):
        assert padded % multiple == 0
        assert side <= padded < side + multiple


def test_working_size_exact_example() -> None:
    assert imaging.working_size(1000, 500, 512, 64) == imaging.WorkingSize(724, 362, 768, 384)


def test_working_size_never_upscales_more_than_asked() -> None:
    assert imaging.working_size(32, 16, 512, 8) == imaging.WorkingSize(64, 32, 64, 32)
    assert imaging.working_size(32, 16, 512, 8, max_upscale=1.0) == imaging.WorkingSize(32, 16, 32, 16)


def test_working_size_of_a_square_at_the_resolution_is_unchanged() -> None:
    assert imaging.working_size(128, 128, 128, 16) == imaging.WorkingSize(128, 128, 128, 128)


def test_blend_where_the_mask_is_zero_keeps_the_source_bytes() -> None:
    source = random_rgba(6, 8, seed=1)
    generated = random_rgba(6, 8, seed=2)[..., :3]
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[:, 4:] = 255
    mask[0, :4] = 0
    mask[5, 6] = 128
    out = imaging.blend(source, generated, mask)
    assert np.array_equal(out[:, :4], source[:, :4])
    assert np.array_equal(out[..., 3], source[..., 3])
    full = mask == 255
    assert np.array_equal(out[..., :3][full], generated[full])
    half = out[5, 6, :3].astype(int)
    expected = np.rint(source[5, 6, :3] * (1 - 128 / 255) + generated[5, 6] * (128 / 255)).astype(int)
    assert np.abs(half - expected).max() <= 1


def test_blend_with_a_faint_mask_still_changes_only_masked_pixels() -> None:
    source = random_rgba(4, 4, seed=3)
    generated = np.zeros((4, 4, 3), dtype=np.uint8)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[1, 1] = 1
    out = imaging.blend(source, generated, mask)
    unchanged = mask == 0
    assert np.array_equal(out[unchanged], source[unchanged])
    assert np.array_equal(out[..., 3], source[..., 3])


def test_blend_without_a_mask_takes_the_generated_colour_and_the_source_alpha() -> None:
    source = random_rgba(3, 5, seed=4)
    generated = random_rgba(3, 5, seed=5)[..., :3]
    out = imaging.blend(source, generated, None)
    assert np.array_equal(out[..., :3], generated)
    assert np.array_equal(out[..., 3], source[..., 3])


def test_blend_does_not_change_its_inputs() -> None:
    source = random_rgba(3, 3, seed=6)
    before = source.copy()
    imaging.blend(source, np.zeros((3, 3, 3), dtype=np.uint8), np.full((3, 3), 255, dtype=np.uint8))
    assert np.array_equal(source, before)


def test_flatten_for_model_greys_out_only_fully_transparent_pixels() -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[...] = (250, 10, 30, 255)
    rgba[0, 0, 3] = 0
    rgba[1, 2] = (1, 2, 3, 1)
    before = rgba.copy()
    rgb = imaging.flatten_for_model(rgba)
    assert rgb.shape == (2, 3, 3)
    assert (rgb[0, 0] == 127).all()
    assert tuple(rgb[1, 2]) == (1, 2, 3)
    assert tuple(rgb[0, 1]) == (250, 10, 30)
    assert np.array_equal(rgba, before)


def test_pad_edges_repeats_the_last_row_and_column() -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = imaging.pad_edges(pixels, 5, 4)
    assert padded.shape == (4, 5, 3)
    assert np.array_equal(padded[:2, :3], pixels)
    assert np.array_equal(padded[3, :3], pixels[1])
    assert np.array_equal(padded[:2, 4], pixels[:, 2])
    assert np.array_equal(padded[3, 4], pixels[1, 2])


def test_pad_edges_works_on_masks_and_leaves_exact_sizes_alone() -> None:
    mask = np.array([[0, 255]], dtype=np.uint8)
    assert np.array_equal(imaging.pad_edges(mask, 3, 2), [[0, 255, 255], [0, 255, 255]])
    assert imaging.pad_edges(mask, 2, 1) is mask


def test_resizes_reach_the_requested_size() -> None:
    assert imaging.resize_rgb(random_rgba(8, 6)[..., :3], 3, 4).shape == (4, 3, 3)
    assert imaging.resize_rgba(random_rgba(8, 6), 12, 16).shape == (16, 12, 4)
    assert imaging.resize_gray(np.zeros((8, 6), dtype=np.uint8), 3, 4).shape == (4, 3)
