from __future__ import annotations

import struct

import pytest
from img2img_bridge import pixels as px

from bridge.editor.regions import Rect

ALL_FORMATS = [px.PixelFormat(depth, linear) for depth in px.Depth for linear in (False, True)]


def every_byte_value() -> bytes:
    """256 RGBA pixels: channel c of pixel i is (i + 64 c) mod 256, so every channel sees every value."""
    return bytes((i + 64 * c) % 256 for i in range(256) for c in range(4))


def test_u8_is_bgra_in_krita() -> None:
    assert px.to_rgba8(bytes([10, 20, 30, 40]), px.U8) == bytes([30, 20, 10, 40])
    assert px.from_rgba8(bytes([30, 20, 10, 40]), px.U8) == bytes([10, 20, 30, 40])


def test_u16_is_little_endian_bgra() -> None:
    krita = struct.pack("=4H", 0x1011, 0x2022, 0x3033, 0xFFFF)  # B, G, R, A
    assert px.to_rgba8(krita, px.PixelFormat(px.Depth.U16)) == bytes([0x30, 0x20, 0x10, 0xFF])
    assert px.from_rgba8(bytes([0x30, 0x20, 0x10, 0xFF]), px.PixelFormat(px.Depth.U16)) == struct.pack(
        "=4H", 0x1010, 0x2020, 0x3030, 0xFFFF
    )


def test_float_depths_are_rgba() -> None:
    f32 = struct.pack("=4f", 1.0, 0.5, 0.0, 1.0)
    assert px.to_rgba8(f32, px.PixelFormat(px.Depth.F32)) == bytes([255, 128, 0, 255])
    f16 = struct.pack("=4e", 0.0, 0.25, 1.0, 0.5)
    assert px.to_rgba8(f16, px.PixelFormat(px.Depth.F16)) == bytes([0, 64, 255, 128])
    assert struct.unpack("=4f", px.from_rgba8(bytes([255, 0, 51, 255]), px.PixelFormat(px.Depth.F32))) == pytest.approx(
        (1.0, 0.0, 0.2, 1.0)
    )


def test_floats_out_of_range_and_nan_are_clamped() -> None:
    f32 = struct.pack("=4f", -3.0, 7.5, float("nan"), float("inf"))
    assert px.to_rgba8(f32, px.PixelFormat(px.Depth.F32)) == bytes([0, 255, 0, 255])


def test_linear_profiles_go_through_the_srgb_curve() -> None:
    linear = px.PixelFormat(px.Depth.F32, linear=True)
    mid_grey = struct.pack("=4f", 0.2140, 0.2140, 0.2140, 0.5)  # sRGB 128 in linear light; alpha stays linear
    assert px.to_rgba8(mid_grey, linear) == bytes([128, 128, 128, 128])
    back = struct.unpack("=4f", px.from_rgba8(bytes([128, 128, 128, 128]), linear))
    assert back == pytest.approx((0.2158, 0.2158, 0.2158, 0.502), abs=1e-3)


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.describe())
def test_every_8bit_value_survives_a_round_trip(fmt: px.PixelFormat) -> None:
    rgba = every_byte_value()
    back = px.to_rgba8(px.from_rgba8(rgba, fmt), fmt)
    if fmt == px.PixelFormat(px.Depth.U8, linear=True):
        # 8-bit linear light cannot hold every sRGB shade: dark ones merge, nothing moves far
        assert max(abs(a - b) for a, b in zip(back, rgba, strict=True)) <= 13
    else:
        assert back == rgba


def test_u16_to_8bit_takes_the_high_byte() -> None:
    values = struct.pack("=4H", 0x00FF, 0x0100, 0xFFFE, 0x8000)
    assert px.to_rgba8(values, px.PixelFormat(px.Depth.U16)) == bytes([0xFF, 0x01, 0x00, 0x80])  # R, G, B, A


def test_wrong_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="whole number"):
        px.to_rgba8(bytes(7), px.PixelFormat(px.Depth.U16))
    with pytest.raises(ValueError, match="whole number"):
        px.from_rgba8(bytes(6), px.U8)


def test_pixel_format_reads_krita_names() -> None:
    assert px.pixel_format("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc") == px.U8
    assert px.pixel_format("RGBA", "F32", "sRGB-elle-V2-g10.icc") == px.PixelFormat(px.Depth.F32, linear=True)
    assert px.pixel_format("RGBA", "U16", "Rec2020-elle-V4-linear.icc").linear


@pytest.mark.parametrize(("model", "depth", "words"), [("CMYKA", "U8", "CMYKA U8"), ("GRAYA", "U16", "RGB/Alpha")])
def test_other_color_models_are_refused_with_advice(model: str, depth: str, words: str) -> None:
    with pytest.raises(px.UnsupportedFormat) as info:
        px.pixel_format(model, depth)
    assert words in info.value.message
    assert "Convert Image Color Space" in info.value.message


def test_unknown_depth_is_refused() -> None:
    with pytest.raises(px.UnsupportedFormat, match="'F64'"):
        px.pixel_format("RGBA", "F64")


def test_keep_where_unmasked_restores_only_zero_mask_pixels() -> None:
    result = bytes([9, 9]) * 4
    original = bytes([1, 1, 2, 2, 3, 3, 4, 4])
    mask = bytes([0, 255, 128, 0])
    assert px.keep_where_unmasked(result, original, mask, 2) == bytes([1, 1, 9, 9, 9, 9, 4, 4])


def test_paste_writes_a_patch_into_its_rectangle() -> None:
    base = bytes(4 * 3)  # 4x3, one byte per pixel
    out = px.paste(base, 4, bytes([1, 2, 3, 4]), Rect(1, 1, 2, 2), 1)
    assert out == bytes([0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0])


def test_a_megapixel_round_trips_exactly_in_every_depth() -> None:
    # how fast it converts is measured by the live benchmark (bench/, docs/benchmarks.md), not asserted here
    rgba = every_byte_value() * 4096  # 1024 x 1024
    for fmt in (px.U8, px.PixelFormat(px.Depth.U16), px.PixelFormat(px.Depth.F32, linear=True)):
        assert px.to_rgba8(px.from_rgba8(rgba, fmt), fmt) == rgba, fmt
