"""What the compressed encodings cost: time to encode (server) and decode, size, and the link speed below which each pays.

A compressed encoding is worth it only where the link is slower than the
bytes it saves divided by the time it costs; on loopback raw always wins.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np

from bridge import imaging
from bridge.editor import protocol as p

MIB = 1 << 20


def synthetic_photo(side: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients with mild noise: compresses like a painting, not like the tiny model's noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rgb = np.stack([x * 255, y * 255, (1 - x) * (1 - y) * 255], axis=-1) + rng.normal(0, 4, (side, side, 3))
    rgba = np.empty((side, side, 4), dtype=np.uint8)
    rgba[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
    rgba[..., 3] = 255
    return rgba


def _decode(image: p.Image) -> Any:
    if image.encoding is p.Encoding.RAW:
        return image.data
    if image.encoding is p.Encoding.ZLIB:
        return zlib.decompress(image.data)
    return imaging.decode_rgba(image)  # PNG and JPEG need an imaging library on the client


def measure(sides: tuple[int, ...], rounds: int = 3) -> dict[str, Any]:
    """Median encode/decode milliseconds and size for each encoding and side."""
    table: dict[str, Any] = {}
    for side in sides:
        pixels = synthetic_photo(side)
        raw_bytes = pixels.nbytes
        for encoding in p.Encoding:
            encode_ms, decode_ms = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                image = imaging.encode_rgba(pixels, encoding)
                encode_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                _decode(image)
                decode_ms.append((time.perf_counter() - started) * 1000)
            encode, decode = sorted(encode_ms)[rounds // 2], sorted(decode_ms)[rounds // 2]
            saved = raw_bytes - len(image.data)
            pays_below = saved / MIB / ((encode + decode) / 1000) if encoding is not p.Encoding.RAW and encode + decode > 0 else None
            table[f"{side} {encoding.value}"] = {
                "bytes": len(image.data),
                "of_raw": round(len(image.data) / raw_bytes, 3),
                "encode_ms": round(encode, 2),
                "decode_ms": round(decode, 2),
                "pays_below_mib_s": None if pays_below is None else round(pays_below, 1),
            }
    return table
