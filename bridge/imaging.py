"""Pixel work on the host side of the engine: decoding, encoding, regions, blending (numpy + Pillow)."""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from .editor import protocol as p
from .editor.regions import Rect


def _raw_view(data: p.wire.Piece, expected: int, name: str) -> np.ndarray:
    """Raw pixels read in place (a shared-memory segment stays uncopied and read-only)."""
    view = memoryview(data).cast("B")
    if len(view) != expected:
        p.decode_plain(view, p.Encoding.RAW, expected, name)  # raises its size_mismatch
    return np.frombuffer(view, dtype=np.uint8)


def decode_rgba(image: p.Image) -> np.ndarray:
    """An ``Image`` as an H×W×4 uint8 array; raises ProtocolError for bad data."""
    if image.encoding is p.Encoding.RAW:
        return _raw_view(image.data, image.width * image.height * 4, "image").reshape(image.height, image.width, 4)
    if image.encoding in p.BASIC_ENCODINGS:
        data = image.raw_rgba()
        return np.frombuffer(data, dtype=np.uint8).reshape(image.height, image.width, 4)
    try:
        with PILImage.open(io.BytesIO(image.data)) as pil:
            size = pil.size
            # compare sizes before decoding, so a small message cannot unpack into a huge image
            rgba = np.asarray(pil.convert("RGBA")) if size == (image.width, image.height) else None
    except Exception as exc:
        raise p.ProtocolError(
            p.ErrorCode.INVALID_FIELD, f"image.data is not a readable {image.encoding.value}: {exc}", field="image.data"
        ) from exc
    if rgba is None:
        raise p.ProtocolError(
            p.ErrorCode.SIZE_MISMATCH,
            f"image.data decodes to {size[0]}x{size[1]} but the message says {image.width}x{image.height}",
            field="image.data",
        )
    return rgba


def decode_mask(mask: p.Mask) -> np.ndarray:
    if mask.encoding not in p.BASIC_ENCODINGS:
        raise p.ProtocolError(p.ErrorCode.UNSUPPORTED_ENCODING, "mask must be raw or zlib", field="mask.encoding")
    if mask.encoding is p.Encoding.RAW:
        return _raw_view(mask.data, mask.width * mask.height, "mask").reshape(mask.height, mask.width)
    return np.frombuffer(mask.raw_gray(), dtype=np.uint8).reshape(mask.height, mask.width)


def encode_rgba(pixels: np.ndarray, encoding: p.Encoding, *, quality: int = 90) -> p.Image:
    """Encode an H×W×4 uint8 array; JPEG drops alpha (previews only)."""
    height, width = pixels.shape[:2]
    data: p.wire.Piece
    if encoding is p.Encoding.RAW:
        data = np.ascontiguousarray(pixels).data.cast("B")  # framed straight from the array, no copy
    elif encoding is p.Encoding.ZLIB:
        data = zlib.compress(np.ascontiguousarray(pixels).tobytes(), 1)
    else:
        buffer = io.BytesIO()
        pil = PILImage.fromarray(np.ascontiguousarray(pixels), "RGBA")
        if encoding is p.Encoding.JPEG:
            pil.convert("RGB").save(buffer, "JPEG", quality=quality)
        else:
            pil.save(buffer, "PNG", compress_level=1)
        data = buffer.getvalue()
    return p.Image(width=width, height=height, data=data, encoding=encoding)


def mask_box(mask: np.ndarray) -> Rect | None:
    """The bounding box of the mask's non-zero pixels, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Rect(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def context_box(box: Rect, width: int, height: int, resolution: int) -> Rect:
    """Grow a mask's box by context padding (a sixth of its size, at least 1/16 of the model's resolution)."""
    margin = max(resolution // 16, round(max(box.width, box.height) / 6))
    return box.grow(margin).intersect(Rect(0, 0, width, height))


@dataclass(frozen=True)
class WorkingSize:
    """How a region is sized for the model: scaled to ``width``×``height``, then padded to ``padded_*``."""

    width: int
    height: int
    padded_width: int
    padded_height: int


def working_size(width: int, height: int, resolution: int, multiple: int, max_upscale: float = 2.0) -> WorkingSize:
    """Scale to about ``resolution``² pixels (never more than ``max_upscale``), keeping the aspect ratio exactly.

    The remainder up to a multiple of ``multiple`` is padded, not stretched.
    """
    scale = min(math.sqrt(resolution * resolution / (width * height)), max_upscale)
    w = max(1, round(width * scale))
    h = max(1, round(height * scale))
    return WorkingSize(w, h, -(-w // multiple) * multiple, -(-h // multiple) * multiple)


def resize_rgb(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(pixels)).resize((width, height), PILImage.Resampling.LANCZOS))


def resize_rgba(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(pixels), "RGBA").resize((width, height), PILImage.Resampling.BILINEAR))


def resize_gray(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    if mask.shape[1] == width and mask.shape[0] == height:
        return mask
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(mask), "L").resize((width, height), PILImage.Resampling.BILINEAR))


def pad_edges(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Extend to width×height by repeating the last row and column."""
    pad_h, pad_w = height - pixels.shape[0], width - pixels.shape[1]
    if pad_h == 0 and pad_w == 0:
        return pixels
    spec = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (pixels.ndim - 2)
    return np.pad(pixels, spec, mode="edge")


def blend(source: np.ndarray, generated_rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Paste generated colour over ``source`` (RGBA) through ``mask``; alpha always stays the source's.

    Where the mask is 0 the result is byte-identical to the source.
    """
    out = source.copy()
    if mask is None:
        out[..., :3] = generated_rgb
        return out
    weight = mask.astype(np.float32)[..., None] / 255.0
    mixed = source[..., :3].astype(np.float32) * (1.0 - weight) + generated_rgb.astype(np.float32) * weight
    out[..., :3] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    keep = mask == 0
    out[keep] = source[keep]
    return out


def flatten_for_model(rgba: np.ndarray) -> np.ndarray:
    """RGB for the model: fully transparent pixels become mid grey rather than whatever colour they hide."""
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 127
    return rgb
