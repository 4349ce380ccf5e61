"""The one-step live frame as fixed tensor arithmetic (bridge/graphs.py): the engine's live frame, eager or in one CUDA graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge import models
from bridge.editor import protocol as p
from bridge.engine import Engine
from bridge.graphs import OneStepFrame
from bridge.models import LoadedModel
from tests.test_engine import Hooks


@pytest.fixture(scope="module")
def tiny(model_cache: Path, device: str) -> LoadedModel:
    return models.load(models.resolve("tiny"), device)


def live_frame(pixels: np.ndarray, seed: int) -> p.Generate:
    side = pixels.shape[0]
    return p.Generate(
        job_id="live", image=p.Image(side, side, pixels.tobytes()), prompt="a castle", steps=2, strength=0.5, guidance=0.0,
        seed=seed, live=True, preview=p.PreviewSettings(every=0),
    )  # fmt: skip


def test_one_step_frame_matches_the_engines_live_frame(tiny: LoadedModel, device: str) -> None:
    # eager on the CPU; on CUDA captured in one graph and replayed
    assert OneStepFrame.supports(tiny.img2img, tiny.tiny_vae, steps=2, strength=0.5)
    embeds = tiny.img2img.encode_prompt("a castle", tiny.img2img.unet.device, 1, False)[0]
    frame = OneStepFrame(tiny.img2img, tiny.tiny_vae, 2, 0.5, 128, 128, capture=True)
    rng = np.random.default_rng(0)
    for seed in (3, 3, 4):
        pixels = rng.integers(0, 256, (128, 128, 4), dtype=np.uint8)
        pixels[..., 3] = 255
        (expected,) = Engine(tiny).run(live_frame(pixels, seed), Hooks())
        got = frame(pixels[..., :3], embeds, seed)
        assert got.shape == (128, 128, 3) and got.dtype == np.uint8
        difference = np.abs(got.astype(np.int16) - expected.pixels[..., :3].astype(np.int16))
        assert difference.mean() < (0.5 if device.startswith("cuda") else 0.01), (seed, difference.mean(), difference.max())


def test_one_step_frame_applies_only_where_it_matches_the_engine(tiny: LoadedModel) -> None:
    assert not OneStepFrame.supports(tiny.img2img, tiny.tiny_vae, steps=4, strength=0.5)  # two denoising steps
    assert not OneStepFrame.supports(tiny.img2img, None, steps=2, strength=0.5)  # no TAESD
