"""Seam matching: bring the regenerated region's colour statistics to those of the kept pixels around it.

A model repaints a masked region with its own idea of brightness and colour
balance, so the region drifts from its surroundings and even a feathered edge
shows. Before the result is blended in, the generated pixels get one gain and
offset per channel that make their mean and spread in the band just inside
the boundary equal those of the kept pixels in the band just outside it. Only
generated pixels change: the blend that follows keeps every pixel whose mask
is 0 byte-identical.
"""

from __future__ import annotations

import numpy as np

BAND = 8  # pixels on each side of the boundary whose statistics are compared
_MIN_GAIN, _MAX_GAIN = 0.5, 2.0  # a flat band on either side must not blow the region's contrast up or away


def match(source: np.ndarray, generated_rgb: np.ndarray, mask: np.ndarray, band: int = BAND) -> np.ndarray:
    """``generated_rgb`` (HxWx3 u8) with each channel's mean and spread in the inner band matched to ``source``'s
    (HxWx4 u8) kept pixels in the outer band; unchanged when either band is empty."""
    inner, outer = bands(mask, source[..., 3] > 0, band)
    if not inner.any() or not outer.any():
        return generated_rgb
    generated = generated_rgb.astype(np.float32)
    kept = source[..., :3].astype(np.float32)
    out = np.empty_like(generated)
    for channel in range(3):
        inside, outside = generated[..., channel][inner], kept[..., channel][outer]
        spread_in, spread_out = float(inside.std()), float(outside.std())
        gain = 1.0 if spread_in < 1.0 else min(_MAX_GAIN, max(_MIN_GAIN, spread_out / spread_in))
        out[..., channel] = (generated[..., channel] - float(inside.mean())) * gain + float(outside.mean())
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def bands(mask: np.ndarray, visible: np.ndarray, band: int = BAND) -> tuple[np.ndarray, np.ndarray]:
    """The regenerated pixels within ``band`` of a kept one, and the visible kept pixels within ``band`` of a
    regenerated one (chessboard distance)."""
    regenerated = mask > 0
    kept = ~regenerated
    inner = regenerated & _grow(kept, band)
    outer = kept & visible & _grow(regenerated, band)
    return inner, outer


def seam_difference(merged: np.ndarray, mask: np.ndarray, band: int = BAND) -> float:
    """The mean colour difference across the seam: the largest, over R, G and B, of the gap between the mean of
    the regenerated pixels in the inner band and that of the kept pixels in the outer band (0-255)."""
    inner, outer = bands(mask, merged[..., 3] > 0, band)
    if not inner.any() or not outer.any():
        return 0.0
    rgb = merged[..., :3].astype(np.float64)
    return max(abs(float(rgb[..., c][inner].mean()) - float(rgb[..., c][outer].mean())) for c in range(3))


def _grow(region: np.ndarray, steps: int) -> np.ndarray:
    """``region`` dilated by ``steps`` pixels in every direction (a square structuring element)."""
    grown = region.copy()
    for _ in range(steps):
        step = grown.copy()
        step[1:, :] |= grown[:-1, :]
        step[:-1, :] |= grown[1:, :]
        step[:, 1:] |= step[:, :-1].copy()
        step[:, :-1] |= step[:, 1:].copy()
        grown = step
    return grown
