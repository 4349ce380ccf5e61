"""Krita pixel buffers to and from the bridge's RGBA 8-bit, at every RGBA depth Krita has.

Krita's ``Node.pixelData`` is row-major without padding, in the machine's byte
order: integer depths (U8, U16) are B, G, R, A; float depths (F16, F32) are
R, G, B, A. Float documents default to a linear-light profile while the model
wants gamma-encoded sRGB, so ``linear`` formats go through the sRGB curve.

Everything here is whole-buffer work (slicing, ``bytes.translate``, table
look-ups through ``map``) rather than per-pixel Python, and runs off the GUI
thread.
"""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass
from enum import Enum
from functools import cache

from .bridge_package import Rect

_LOW, _HIGH = (0, 1) if sys.byteorder == "little" else (1, 0)
_ZERO_RUNS = re.compile(rb"\x00+")


class Depth(Enum):
    U8 = "U8"
    U16 = "U16"
    F16 = "F16"
    F32 = "F32"

    @property
    def channel_bytes(self) -> int:
        return {"U8": 1, "U16": 2, "F16": 2, "F32": 4}[self.value]


class UnsupportedFormat(Exception):
    """A layer or document the plug-in cannot read without losing data; ``message`` says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PixelFormat:
    """An RGBA depth and whether its profile is linear light."""

    depth: Depth
    linear: bool = False

    @property
    def pixel_bytes(self) -> int:
        return 4 * self.depth.channel_bytes

    def describe(self) -> str:
        return f"RGBA {self.depth.value}{' linear' if self.linear else ''}"


U8 = PixelFormat(Depth.U8)


def pixel_format(model: str, depth: str, profile: str = "") -> PixelFormat:
    """The format of a Krita color space (``colorModel()``, ``colorDepth()``, ``colorProfile()``)."""
    if model != "RGBA":
        raise UnsupportedFormat(
            f"this image is {model} {depth}; image to image works on RGB/Alpha images. "
            "Convert it with Image > Convert Image Color Space (or work on an RGB/Alpha copy)."
        )
    try:
        parsed = Depth(depth)
    except ValueError:
        raise UnsupportedFormat(f"the color depth {depth!r} is not supported; use 8 or 16 bit integer or 16 or 32 bit float") from None
    name = profile.lower()
    return PixelFormat(parsed, linear="g10" in name or "linear" in name)


# --- transfer curves and tables ------------------------------------------------------------


def _encode_srgb(value: float) -> float:
    if value <= 0.0031308:
        return 12.92 * value
    return 1.055 * float(value ** (1 / 2.4)) - 0.055


def _decode_srgb(value: float) -> float:
    if value <= 0.04045:
        return value / 12.92
    return float(((value + 0.055) / 1.055) ** 2.4)


def _to_byte(value: float, curve: bool) -> int:
    if value != value or value <= 0.0:  # NaN too
        return 0
    if value >= 1.0:
        return 255
    return round((_encode_srgb(value) if curve else value) * 255)


def _from_byte(byte: int, curve: bool) -> float:
    value = byte / 255
    return _decode_srgb(value) if curve else value


@cache
def _u8_curve_tables() -> tuple[bytes, bytes]:
    """8-bit linear <-> 8-bit sRGB (only for the rare linear 8-bit profile)."""
    encode = bytes(_to_byte(i / 255, True) for i in range(256))
    decode = bytes(min(255, round(_decode_srgb(i / 255) * 255)) for i in range(256))
    return encode, decode


@cache
def _wide_to_byte(depth: Depth, curve: bool) -> bytes:
    """A 65536-entry table from a 16-bit code to an 8-bit channel value.

    For F32 the code is a float's upper half (sign, exponent, 7 mantissa bits); the
    table holds the value of the middle of that bucket, which rounds every 8-bit
    value back to itself.
    """
    if depth is Depth.U16:
        values: list[float] = [code / 65535 for code in range(65536)]
    elif depth is Depth.F16:
        values = list(struct.unpack("=65536e", struct.pack("=65536H", *range(65536))))
    else:
        # infinities and NaNs keep their own value: a middle there would be a NaN
        middles = ((code << 16) | (0 if code & 0x7F80 == 0x7F80 else 0x8000) for code in range(65536))
        values = list(struct.unpack("=65536f", struct.pack("=65536I", *middles)))
    return bytes(_to_byte(v, curve) for v in values)


@cache
def _byte_to_wide(depth: Depth, curve: bool) -> tuple[bytes, ...]:
    """For each byte of a wide channel value (in memory order), a 256-entry translate table from the 8-bit value."""
    if depth is Depth.U16:
        packed = struct.pack("=256H", *(round(_from_byte(i, curve) * 65535) for i in range(256)))
    elif depth is Depth.F16:
        packed = struct.pack("=256e", *(_from_byte(i, curve) for i in range(256)))
    else:
        packed = struct.pack("=256f", *(_from_byte(i, curve) for i in range(256)))
    size = depth.channel_bytes
    return tuple(bytes(packed[i * size + k] for i in range(256)) for k in range(size))


# --- conversions ----------------------------------------------------------------------------

# Where each RGBA channel sits among a pixel's four channels.
_INTEGER_ORDER = (2, 1, 0, 3)  # B, G, R, A in memory
_FLOAT_ORDER = (0, 1, 2, 3)


def _order(depth: Depth) -> tuple[int, int, int, int]:
    return _INTEGER_ORDER if depth in (Depth.U8, Depth.U16) else _FLOAT_ORDER


def to_rgba8(data: bytes, fmt: PixelFormat) -> bytes:
    """Krita pixels in ``fmt`` to RGBA 8-bit (non-premultiplied, sRGB-encoded)."""
    count, rest = divmod(len(data), fmt.pixel_bytes)
    if rest:
        raise ValueError(f"{len(data)} bytes is not a whole number of {fmt.describe()} pixels")
    out = bytearray(count * 4)
    order = _order(fmt.depth)
    if fmt.depth is Depth.U8:
        for channel, position in enumerate(order):
            out[channel::4] = data[position::4]
        if fmt.linear:
            encode, _ = _u8_curve_tables()
            for channel in range(3):
                out[channel::4] = bytes(out[channel::4]).translate(encode)
        return bytes(out)
    if fmt.depth is Depth.U16 and not fmt.linear:
        high = data[_HIGH::2]  # v >> 8: exact for every value that came from 8 bits
        for channel, position in enumerate(order):
            out[channel::4] = high[position::4]
        return bytes(out)
    codes = memoryview(data).cast("B").cast("H")
    # a channel's 16-bit codes: the whole value, or a float's upper half
    stride, offset = (8, _HIGH) if fmt.depth is Depth.F32 else (4, 0)
    color = _wide_to_byte(fmt.depth, fmt.linear)
    alpha = _wide_to_byte(fmt.depth, False)
    for channel, position in enumerate(order):
        table = alpha if channel == 3 else color
        start = position * (2 if fmt.depth is Depth.F32 else 1) + offset
        out[channel::4] = bytes(map(table.__getitem__, codes[start::stride]))
    return bytes(out)


def from_rgba8(rgba: bytes, fmt: PixelFormat) -> bytes:
    """RGBA 8-bit to Krita pixels in ``fmt``."""
    if len(rgba) % 4:
        raise ValueError(f"{len(rgba)} bytes is not a whole number of RGBA pixels")
    order = _order(fmt.depth)
    if fmt.depth is Depth.U8:
        out = bytearray(len(rgba))
        for channel, position in enumerate(order):
            out[position::4] = rgba[channel::4]
        if fmt.linear:
            _, decode = _u8_curve_tables()
            for position in order[:3]:
                out[position::4] = bytes(out[position::4]).translate(decode)
        return bytes(out)
    size = fmt.depth.channel_bytes
    pixel = fmt.pixel_bytes
    out = bytearray(len(rgba) * size)
    color = _byte_to_wide(fmt.depth, fmt.linear)
    alpha = _byte_to_wide(fmt.depth, False)
    for channel, position in enumerate(order):
        source = rgba[channel::4]
        tables = alpha if channel == 3 else color
        for k, table in enumerate(tables):
            out[position * size + k :: pixel] = source.translate(table)
    return bytes(out)


# --- whole-buffer helpers -------------------------------------------------------------------


def keep_where_unmasked(result: bytes, original: bytes, mask: bytes, pixel_bytes: int) -> bytes:
    """``result`` with every pixel whose mask byte is 0 taken from ``original`` (same size)."""
    out = bytearray(result)
    for run in _ZERO_RUNS.finditer(mask):
        start, end = run.start() * pixel_bytes, run.end() * pixel_bytes
        out[start:end] = original[start:end]
    return bytes(out)


def paste(base: bytes, base_width: int, patch: bytes, rect: Rect, pixel_bytes: int) -> bytes:
    """``base`` with ``patch`` (``rect``'s size) written over ``rect``."""
    out = bytearray(base)
    stride, row = base_width * pixel_bytes, rect.width * pixel_bytes
    for r in range(rect.height):
        start = (rect.y + r) * stride + rect.x * pixel_bytes
        out[start : start + row] = patch[r * row : (r + 1) * row]
    return bytes(out)
