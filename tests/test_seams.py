from __future__ import annotations

import numpy as np

from bridge import imaging, seams
from bridge.editor import protocol as p


def scene(shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured source, a square mask with a feathered rim, and a generated image ``shift`` brighter."""
    rng = np.random.default_rng(3)
    source = np.zeros((64, 80, 4), np.uint8)
    source[..., 0] = 90 + rng.integers(0, 30, (64, 80))
    source[..., 1] = 140 + rng.integers(0, 30, (64, 80))
    source[..., 2] = 60 + rng.integers(0, 30, (64, 80))
    source[..., 3] = 255
    mask = np.zeros((64, 80), np.uint8)
    mask[16:48, 20:60] = 255
    mask[14:16, 18:62] = 120
    generated = np.clip(source[..., :3].astype(np.int16) + shift + rng.integers(-20, 20, (64, 80, 3)), 0, 255).astype(np.uint8)
    return source, mask, generated


def test_matching_closes_the_seam_and_never_touches_kept_pixels() -> None:
    source, mask, generated = scene(shift=60)
    plain = imaging.blend(source, generated, mask)
    matched = imaging.blend(source, seams.match(source, generated, mask), mask)
    before, after = seams.seam_difference(plain, mask), seams.seam_difference(matched, mask)
    assert before > 40 and after < 3
    assert np.array_equal(matched[mask == 0], source[mask == 0])


def test_a_region_without_kept_pixels_around_it_is_left_alone() -> None:
    source, _, generated = scene(shift=60)
    everything = np.full(source.shape[:2], 255, np.uint8)
    assert seams.match(source, generated, everything) is generated
    transparent = source.copy()
    transparent[..., 3] = 0  # nothing visible around the region: nothing to match
    _, mask, _ = scene(0)
    assert seams.match(transparent, generated, mask) is generated


def test_the_gain_is_bounded_when_the_surroundings_are_flat() -> None:
    source, mask, generated = scene(shift=0)
    source[..., :3] = 100
    matched = seams.match(source, generated, mask)
    inner, _ = seams.bands(mask, source[..., 3] > 0)
    for channel in range(3):
        assert matched[inner][:, channel].std() >= 0.5 * generated[inner][:, channel].std() - 1


def test_bands_lie_on_either_side_of_the_boundary() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255
    inner, outer = seams.bands(mask, np.ones((20, 20), bool), band=2)
    assert inner.sum() == 100 - 36 and outer.sum() == 14 * 14 - 100
    assert not (inner & outer).any()


def test_the_option_is_on_by_default_for_masked_jobs_only_and_travels_on_the_wire() -> None:
    image, mask = p.Image(2, 2, bytes(16)), p.Mask(2, 2, bytes([0, 255, 255, 255]))
    assert p.Generate("j", image, "x", mask=mask).matches_seams is True
    assert p.Generate("j", image, "x").matches_seams is False
    assert p.Generate("j", image, "x", mask=mask, match_seams=False).matches_seams is False
    off = p.Generate("j", image, "x", mask=mask, match_seams=False)
    assert p.Generate.from_wire(off.to_wire()) == off
    assert p.Generate.from_wire({k: v for k, v in off.to_wire().items() if k != "match_seams"}).match_seams is None
