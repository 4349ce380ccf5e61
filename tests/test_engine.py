"""The engine in-process, with the tiny models (ordinary and 9-channel inpainting), on the test device (see conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bridge import models, seams
from bridge.editor import protocol as p
from bridge.engine import Engine, EngineError, JobCancelled, PreviewFrame, render_preview
from bridge.models import LoadedModel, ModelSpec
from bridge.tiny_model import ensure_tiny_model
from tests.memory import exhausted_memory


class Hooks:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.steps: list[tuple[int, int, int]] = []
        self.frames: list[PreviewFrame] = []
        self.cancel_after = cancel_after

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.steps) >= self.cancel_after

    def progress(self, index: int, step: int, steps: int) -> None:
        self.steps.append((index, step, steps))

    def preview(self, frame: PreviewFrame) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def tiny(model_cache: Path, device: str) -> LoadedModel:
    return models.load(models.resolve("tiny"), device)


@pytest.fixture(scope="module")
def engine(tiny: LoadedModel) -> Engine:
    return Engine(tiny)


@pytest.fixture(scope="module")
def inpaint_engine(model_cache: Path, device: str) -> Iterator[Engine]:
    folder = ensure_tiny_model(inpaint=True)
    loaded = models.load(ModelSpec("tiny-inpaint", "folder", str(folder)), device)
    assert loaded.inpaint_unet and loaded.recipe.inpaint
    yield Engine(loaded)


def noise_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return pixels


def generate(pixels: np.ndarray, mask: np.ndarray | None = None, **fields: Any) -> p.Generate:
    height, width = pixels.shape[:2]
    settings: dict[str, Any] = {"prompt": "a castle", "steps": 4, "strength": 0.75, "seed": 1}
    settings.update(fields)
    mask_msg = None if mask is None else p.Mask(width, height, np.ascontiguousarray(mask).tobytes())
    return p.Generate(job_id="j", image=p.Image(width, height, pixels.tobytes()), mask=mask_msg, **settings)


def test_large_image_is_processed_at_working_size_and_scaled_back(engine: Engine) -> None:
    pixels = noise_image(640, 320)
    prepared = engine.prepare(generate(pixels))
    ws = prepared.working
    assert ws.width * ws.height <= 128 * 128 * 1.05
    assert abs(ws.width / ws.height - 2.0) < 0.02
    assert ws.padded_width % engine.multiple == 0 and ws.padded_height % engine.multiple == 0
    (image,) = engine.run(generate(pixels), Hooks())
    assert image.pixels.shape == (320, 640, 4)


def test_mask_region_gets_context_and_result_covers_the_mask_box(engine: Engine) -> None:
    pixels = noise_image(300, 200)
    mask = np.zeros((200, 300), np.uint8)
    mask[50:80, 100:160] = 255
    prepared = engine.prepare(generate(pixels, mask))
    assert (prepared.box.x, prepared.box.y, prepared.box.width, prepared.box.height) == (100, 50, 60, 30)
    region = prepared.region
    assert region.x < 100 and region.y < 50 and region.right > 160 and region.bottom > 80


def test_empty_mask_is_refused_before_any_work(engine: Engine) -> None:
    pixels = noise_image(32, 32)
    with pytest.raises(p.ProtocolError) as caught:
        engine.prepare(generate(pixels, np.zeros((32, 32), np.uint8)))
    assert caught.value.field == "mask" and caught.value.job_id == "j"


def test_cancel_stops_within_one_step(engine: Engine) -> None:
    hooks = Hooks(cancel_after=2)
    with pytest.raises(JobCancelled):
        list(engine.run(generate(noise_image(64, 64), steps=20, strength=1.0), hooks))
    assert len(hooks.steps) == 2


def test_strength_decides_how_many_steps_run(engine: Engine) -> None:
    hooks = Hooks()
    list(engine.run(generate(noise_image(64, 64), steps=10, strength=0.3), hooks))
    assert [s for _, s, _ in hooks.steps] == [1, 2, 3]
    tiny_strength = Hooks()
    list(engine.run(generate(noise_image(64, 64), steps=10, strength=0.01), tiny_strength))
    assert len(tiny_strength.steps) == 1


def test_prompt_is_encoded_once_per_text(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = engine.pipe.encode_prompt

    def counting(prompt: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(prompt)
        return original(prompt, *args, **kwargs)

    monkeypatch.setattr(engine.pipe, "encode_prompt", counting)
    pixels = noise_image(64, 64)
    for _ in range(3):
        list(engine.run(generate(pixels, prompt="a cached prompt", steps=1), Hooks()))
    list(engine.run(generate(pixels, prompt="another prompt", steps=1), Hooks()))
    assert calls == ["a cached prompt", "another prompt"]


def test_previews_show_the_predicted_image_and_are_blended_through_the_mask(engine: Engine) -> None:
    pixels = noise_image(96, 96)
    mask = np.zeros((96, 96), np.uint8)
    mask[20:60, 20:60] = 255
    hooks = Hooks()
    list(engine.run(generate(pixels, mask, steps=6, strength=1.0, preview=p.PreviewSettings(every=2)), hooks))
    assert [f.step for f in hooks.frames] == [2, 4]
    frame = hooks.frames[0]
    settings = p.PreviewSettings(max_size=48)
    image = render_preview(frame, settings)
    assert max(image.width, image.height) <= 48
    assert len(image.raw_rgba()) == image.width * image.height * 4


@pytest.mark.parametrize("decoder", list(p.PreviewDecoder))
def test_every_preview_decoder_works(engine: Engine, decoder: p.PreviewDecoder) -> None:
    hooks = Hooks()
    list(engine.run(generate(noise_image(64, 48), steps=3, strength=1.0, preview=p.PreviewSettings(decoder=decoder)), hooks))
    assert hooks.frames and hooks.frames[0].rgb.ndim == 3


def test_live_jobs_use_the_tiny_autoencoder(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    tiny_vae = engine.model.tiny_vae
    assert tiny_vae is not None
    original = tiny_vae.decode

    def decode(latents: Any) -> Any:
        used.append("tiny")
        return original(latents)

    monkeypatch.setattr(tiny_vae, "decode", decode)
    list(engine.run(generate(noise_image(64, 64), live=True, steps=2, strength=0.5, preview=p.PreviewSettings(every=0)), Hooks()))
    assert used == ["tiny"]


def test_out_of_memory_becomes_an_engine_error_and_the_next_job_runs(engine: Engine) -> None:
    # on CUDA the allocator really runs out; elsewhere the UNet raises what CUDA would (tests/memory.py)
    with exhausted_memory(engine), pytest.raises(EngineError) as caught:
        list(engine.run(generate(noise_image(32, 32)), Hooks()))
    assert caught.value.code is p.ErrorCode.OUT_OF_MEMORY
    assert "smaller" in caught.value.message
    (image,) = engine.run(generate(noise_image(32, 32)), Hooks())
    assert image.pixels.shape == (32, 32, 4)


def test_inpainting_unet_keeps_outside_pixels(inpaint_engine: Engine) -> None:
    pixels = noise_image(120, 90)
    mask = np.zeros((90, 120), np.uint8)
    mask[30:60, 40:80] = 255
    mask[28:30, 40:80] = 100
    (image,) = inpaint_engine.run(generate(pixels, mask, strength=1.0), Hooks())
    box = image.rect
    source = pixels[box.y : box.bottom, box.x : box.right]
    inner_mask = mask[box.y : box.bottom, box.x : box.right]
    assert np.array_equal(image.pixels[inner_mask == 0], source[inner_mask == 0])
    assert not np.array_equal(image.pixels[inner_mask == 255], source[inner_mask == 255])


def test_inpainting_unet_without_mask_transforms_everything(inpaint_engine: Engine) -> None:
    pixels = noise_image(64, 64)
    (image,) = inpaint_engine.run(generate(pixels), Hooks())
    assert image.pixels.shape == pixels.shape
    assert np.array_equal(image.pixels[..., 3], pixels[..., 3])


def test_warm_up_runs_a_live_frame_and_fills_the_prompt_cache(engine: Engine) -> None:
    engine.warm_up(64)
    assert ("", "", False) in engine._prompts


def test_cuda_graphs_are_only_used_on_cuda(tiny: LoadedModel, device: str) -> None:
    assert (Engine(tiny, cuda_graphs=True)._graphed is not None) == device.startswith("cuda")


@pytest.mark.parametrize("guidance", [0.0, 5.0])
def test_sdxl_family_with_and_without_guidance(tmp_path_factory: pytest.TempPathFactory, device: str, guidance: float) -> None:
    from tests.tiny_sdxl import save_tiny_sdxl

    folder = save_tiny_sdxl(tmp_path_factory.mktemp("sdxl"))
    loaded = models.load(ModelSpec("tiny-sdxl", "folder", str(folder)), device)
    assert loaded.family == "sdxl"
    pixels = noise_image(130, 100)
    mask = np.zeros((100, 130), np.uint8)
    mask[10:30, 20:50] = 255
    mask[30:50, 60:90] = 255  # two blocks: their bounding box holds kept pixels too
    (image,) = Engine(loaded).run(generate(pixels, mask, guidance=guidance, negative_prompt="blurry"), Hooks())
    box = image.rect
    inner = mask[box.y : box.bottom, box.x : box.right]
    assert (inner == 0).any()
    assert np.array_equal(image.pixels[inner == 0], pixels[box.y : box.bottom, box.x : box.right][inner == 0])


@pytest.mark.parametrize(
    "scheduler_name", ["PNDMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler"]
)
def test_other_schedulers_models_ship_with(tiny: LoadedModel, scheduler_name: str) -> None:
    import diffusers

    original = tiny.img2img.scheduler
    tiny.img2img.scheduler = getattr(diffusers, scheduler_name).from_config(original.config)
    try:
        hooks = Hooks()
        (image,) = Engine(tiny).run(generate(noise_image(64, 64), steps=10, strength=0.5, preview=p.PreviewSettings(every=1)), hooks)
    finally:
        tiny.img2img.scheduler = original
    assert image.pixels.shape == (64, 64, 4)
    assert hooks.steps and hooks.frames


# --- what only happens on CUDA ------------------------------------------------------------


def test_cuda_runs_the_model_in_float16(cuda_device: str, engine: Engine) -> None:
    assert engine.dtype == torch.float16
    assert engine.pipe.unet.dtype == torch.float16 and engine.pipe.unet.device.type == "cuda"
    assert engine.model.tiny_vae is not None and engine.model.tiny_vae.dtype == torch.float16
    (image,) = engine.run(generate(noise_image(64, 64)), Hooks())
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (64, 64, 4)


def test_pinned_staging_is_reused_and_never_mixes_two_jobs_pixels(cuda_device: str, engine: Engine) -> None:
    first, second = noise_image(96, 64, seed=1), noise_image(96, 64, seed=2)
    mask = np.zeros((64, 96), np.uint8)
    mask[10:20, 20:40] = 255
    mask[30:40, 50:70] = 255  # two blocks: their bounding box holds kept pixels too
    results = [next(iter(engine.run(generate(pixels, mask), Hooks()))).pixels for pixels in (first, second, first)]
    staging = list(engine._pinned.values())
    assert staging and all(buffer.is_pinned() for buffer in staging)
    # the copies to and from the GPU are non-blocking: a missing wait would leak the previous job's pixels
    assert np.array_equal(results[0], results[2])
    assert not np.array_equal(results[0], results[1])
    kept = mask[10:40, 20:70] == 0
    assert results[1].shape[:2] == kept.shape and kept.any()
    assert np.array_equal(results[1][kept], second[10:40, 20:70][kept])


@pytest.mark.parametrize("decoder", [p.PreviewDecoder.AUTO, p.PreviewDecoder.TINY])
def test_taesd_previews_on_cuda(cuda_device: str, engine: Engine, decoder: p.PreviewDecoder) -> None:
    tiny_vae = engine.model.tiny_vae
    assert tiny_vae is not None and tiny_vae.device.type == "cuda"
    hooks = Hooks()
    request = generate(noise_image(64, 48), steps=4, strength=1.0, live=True, preview=p.PreviewSettings(every=1, decoder=decoder))
    list(engine.run(request, hooks))
    assert [f.step for f in hooks.frames] == [1, 2, 3]
    assert all(f.rgb.dtype == np.uint8 and f.rgb.shape[2] == 3 and f.rgb.shape[0] >= 48 for f in hooks.frames)
    rendered = render_preview(hooks.frames[0], p.PreviewSettings(max_size=32))
    assert max(rendered.width, rendered.height) == 32


def test_cuda_graphs_are_captured_at_warm_up_and_replayed_for_live_jobs(cuda_device: str, tiny: LoadedModel) -> None:
    graphed = Engine(tiny, cuda_graphs=True)
    assert graphed._graphed is not None
    graphed.warm_up(128)
    assert len(graphed._graphed._graphs) == 1  # captured before the first real frame
    live = generate(noise_image(128, 128), steps=2, strength=0.5, guidance=0.0, live=True, preview=p.PreviewSettings(every=0))
    frames = [next(iter(graphed.run(live, Hooks()))).pixels for _ in range(3)]
    assert len(graphed._graphed._graphs) == 1  # the same shapes replay the same graph
    assert all(np.array_equal(frames[0], frame) for frame in frames[1:])
    (eager,) = Engine(tiny).run(live, Hooks())
    # the same kernels, replayed: the frame matches the eager one up to float16 rounding
    difference = np.abs(eager.pixels.astype(np.int16) - frames[0].astype(np.int16))
    assert difference.mean() < 1.0, difference.mean()
    other_size = generate(noise_image(160, 80), steps=2, strength=0.5, guidance=0.0, live=True)
    list(graphed.run(other_size, Hooks()))
    assert len(graphed._graphed._graphs) == 2


# --- recipes: what a real model of each kind gets when the request leaves its settings unset ---------------


class UNetCalls:
    """Records the batch size and guidance embedding of every UNet evaluation."""

    def __init__(self, model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        self.timestep_cond: list[bool] = []
        unet = model.img2img.unet
        real = unet.forward

        def forward(sample: Any, *args: Any, **kwargs: Any) -> Any:
            self.batches.append(int(sample.shape[0]))
            self.timestep_cond.append(kwargs.get("timestep_cond") is not None)
            return real(sample, *args, **kwargs)

        monkeypatch.setattr(unet, "forward", forward)


@pytest.fixture(scope="module")
def heun(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return tiny_named(tmp_path_factory.mktemp("heun"), "sd-heun", {"scheduler": "HeunDiscreteScheduler", "guidance": 0.0})


def tiny_named(root: Path, name: str, recipe: dict[str, Any] | None = None) -> LoadedModel:
    """The tiny model's weights under a real model's name, with no test-model recipe file: classified like a download."""
    import json
    import shutil

    folder = root / name
    shutil.copytree(ensure_tiny_model(), folder)
    (folder / "img2img_bridge.json").unlink()
    if recipe is not None:
        (folder / "img2img_bridge.json").write_text(json.dumps(recipe), encoding="utf-8")
    return models.load(ModelSpec(name, "folder", str(folder)), "cpu")


def unset(pixels: np.ndarray, **fields: Any) -> p.Generate:
    height, width = pixels.shape[:2]
    return p.Generate(job_id="j", image=p.Image(width, height, pixels.tobytes()), prompt="a castle", seed=1, **fields)


def test_a_turbo_model_left_to_its_recipe_runs_one_step_with_guidance_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_named(tmp_path, "sd-turbo")
    engine = Engine(model)
    calls = UNetCalls(model, monkeypatch)
    hooks = Hooks()
    list(engine.run(unset(noise_image(64, 64)), hooks))
    assert (model.recipe.kind, engine.settings(unset(noise_image(8, 8)))) == ("sd-turbo", (2, 0.0, 0.5))
    assert calls.batches == [1], "two steps at strength 0.5 run one UNet evaluation, without a guidance batch"
    assert hooks.steps == [(0, 1, 1)]
    assert type(model.img2img.scheduler).__name__ == "EulerDiscreteScheduler"
    assert model.img2img.scheduler.config.timestep_spacing == "trailing"
    calls.batches.clear()
    list(engine.run(unset(noise_image(64, 64), live=True), Hooks()))
    assert calls.batches == [1]


def test_an_sd15_model_left_to_its_recipe_gets_classifier_free_guidance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_named(tmp_path, "stable-diffusion-v1-5")
    engine = Engine(model)
    calls = UNetCalls(model, monkeypatch)
    hooks = Hooks()
    list(engine.run(unset(noise_image(64, 64)), hooks))
    assert model.recipe.kind == "sd15" and engine.settings(unset(noise_image(8, 8))) == (30, 7.5, 0.6)
    assert calls.batches == [2] * 18, "30 steps at strength 0.6, each with the unconditional batch"
    assert [step for _, step, _ in hooks.steps] == list(range(1, 19)) and {total for _, _, total in hooks.steps} == {18}
    calls.batches.clear()
    list(engine.run(unset(noise_image(64, 64), live=True), Hooks()))
    assert calls.batches == [2] * 4, "the live recipe: 10 steps at strength 0.4"
    calls.batches.clear()
    list(engine.run(unset(noise_image(64, 64), steps=4, guidance=1.0, strength=1.0), Hooks()))
    assert calls.batches == [1] * 4, "settings the request sends win over the recipe"


@pytest.mark.parametrize(("steps", "strength", "runs"), [(10, 0.3, 3), (10, 0.01, 1), (4, 1.0, 4), (3, 0.5, 1)])
def test_second_order_schedulers_run_steps_times_strength_and_report_every_evaluation(
    heun: LoadedModel, monkeypatch: pytest.MonkeyPatch, steps: int, strength: float, runs: int
) -> None:
    model = heun
    assert model.img2img.scheduler.order == 2
    calls = UNetCalls(model, monkeypatch)
    hooks = Hooks()
    list(Engine(model).run(unset(noise_image(64, 64), steps=steps, strength=strength), hooks))
    assert len(calls.batches) == 2 * runs - 1, "Heun evaluates twice per step but once on the last"
    assert [step for _, step, _ in hooks.steps] == list(range(1, len(calls.batches) + 1))
    assert {total for _, _, total in hooks.steps} == {len(calls.batches)}


@pytest.mark.parametrize(("steps", "strength", "runs"), [(2, 0.5, 1), (4, 0.5, 2), (4, 0.25, 1), (1, 0.1, 1)])
def test_trailing_spacing_runs_steps_times_strength(engine: Engine, steps: int, strength: float, runs: int) -> None:
    hooks = Hooks()
    list(engine.run(unset(noise_image(64, 64), steps=steps, strength=strength, guidance=0.0), hooks))
    assert len(hooks.steps) == runs


def test_a_distilled_lcm_unet_takes_guidance_as_an_embedding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import shutil

    from diffusers import UNet2DConditionModel

    folder = tmp_path / "lcm-distilled"
    shutil.copytree(ensure_tiny_model(), folder)
    (folder / "img2img_bridge.json").unlink()
    config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    config["time_cond_proj_dim"] = 32
    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet")
    model = models.load(ModelSpec("my-model", "folder", str(folder)), "cpu")
    assert (model.recipe.kind, model.recipe.scheduler, model.recipe.guidance) == ("sd-lcm", "LCMScheduler", 8.0)
    assert type(model.img2img.scheduler).__name__ == "LCMScheduler"
    calls = UNetCalls(model, monkeypatch)
    list(Engine(model).run(unset(noise_image(64, 64)), Hooks()))
    assert calls.batches == [1, 1] and all(calls.timestep_cond), "4 steps at strength 0.5, guidance embedded, no second batch"


def test_seam_matching_brings_the_region_to_its_surroundings_and_keeps_the_rest(engine: Engine) -> None:
    rng = np.random.default_rng(5)
    pixels = np.zeros((96, 128, 4), np.uint8)
    pixels[..., :3] = np.array([70, 130, 200], np.uint8) + rng.integers(0, 20, (96, 128, 3), dtype=np.uint8)  # a sky
    pixels[..., 3] = 255
    mask = np.zeros((96, 128), np.uint8)
    mask[32:64, 40:88] = 255
    differences = {}
    for option in (False, None):
        (image,) = engine.run(generate(pixels, mask, match_seams=option), Hooks())
        merged = pixels.copy()
        box = image.rect
        merged[box.y : box.bottom, box.x : box.right] = image.pixels
        assert np.array_equal(merged[mask == 0], pixels[mask == 0])
        differences[option] = seams.seam_difference(merged, mask)
    assert differences[None] < differences[False] / 4, differences


# --- variations in batches -----------------------------------------------------------------

# how far a batched variation may stray from its seed run alone: float32 CPU kernels sum a batch in another
# order, so a few values round the other way. Measured (x86-64 CPU, float32, 3-4 variations): the tiny model at
# most 1 level in 0.02% of the values; under the recipes' models (sd15 CFG 7.5, LCM, ancestral Euler, SDXL CFG)
# at most 2 levels in at most 0.55% of the mask box's values. The bounds leave room for other CPUs' kernels.
BATCH_TOLERANCE = 3  # 8-bit levels
BATCH_DIFFERING = 0.01  # share of channel values that may differ at all


class BatchSizes:
    """Wraps the pipeline's UNet: records each call's batch, and raises what CUDA would for batches over ``most``."""

    def __init__(self, unet: Any, most: int | None = None) -> None:
        self.unet = unet
        self.config = unet.config
        self.most = most
        self.batches: list[int] = []

    def __call__(self, sample: Any, *args: Any, **kwargs: Any) -> Any:
        self.batches.append(int(sample.shape[0]))
        if self.most is not None and sample.shape[0] > self.most:
            raise torch.OutOfMemoryError(f"CUDA out of memory: a batch of {sample.shape[0]} (raised on purpose)")
        return self.unet(sample, *args, **kwargs)


def variations_and_singles(engine: Engine, request: p.Generate, hooks: Hooks | None = None) -> tuple[list[Any], list[Any]]:
    """The job's variations run together, and each of its seeds run alone as a one-variation job."""
    assert request.seed is not None
    together = list(engine.run(request, hooks or Hooks()))
    alone = [next(iter(engine.run(replace(request, count=1, seed=request.seed + i), Hooks()))) for i in range(request.count)]
    return together, alone


def assert_same_images(together: list[Any], alone: list[Any]) -> None:
    assert [image.index for image in together] == list(range(len(alone)))
    assert [image.seed for image in together] == [image.seed for image in alone]
    for batched, single in zip(together, alone, strict=True):
        assert batched.rect == single.rect
        difference = np.abs(batched.pixels.astype(np.int16) - single.pixels.astype(np.int16))
        worst, differing = int(difference.max()), float((difference > 0).mean())
        assert worst <= BATCH_TOLERANCE, f"variation {batched.index} strays {worst} levels from its seed alone"
        assert differing <= BATCH_DIFFERING, f"variation {batched.index}: {differing:.3%} of its values differ"
    assert not np.array_equal(together[0].pixels, together[1].pixels), "two seeds gave the same picture"


@pytest.fixture(scope="module")
def recipe_models(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    """The tiny weights driven as real families are: CFG with Euler (sd15), LCM's noisy steps, ancestral Euler, SDXL with CFG."""
    from tests.tiny_sdxl import save_tiny_sdxl

    root = tmp_path_factory.mktemp("recipes")
    sdxl = models.load(ModelSpec("tiny-sdxl", "folder", str(save_tiny_sdxl(tmp_path_factory.mktemp("sdxl")))), "cpu")
    return {
        "sd15": tiny_named(root, "stable-diffusion-v1-5"),
        "sd-lcm-lora": tiny_named(root, "dreamshaper-lcm"),
        "ancestral": tiny_named(root, "sd-ancestral", {"scheduler": "EulerAncestralDiscreteScheduler", "guidance": 0.0}),
        "sdxl": sdxl,
    }


def test_batched_variations_match_each_seed_run_alone(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = BatchSizes(engine.pipe.unet)
    monkeypatch.setattr(engine.pipe, "unet", calls)
    hooks = Hooks()
    together, alone = variations_and_singles(engine, generate(noise_image(64, 48), count=4, seed=7), hooks)
    assert_same_images(together, alone)
    assert calls.batches[:3] == [4, 4, 4], "one UNet call per step for all four variations"
    assert [index for index, _, _ in hooks.steps] == [0, 1, 2, 3] * 3


@pytest.mark.parametrize("kind", ["sd15", "sd-lcm-lora", "ancestral", "sdxl"])
def test_batched_variations_match_their_seeds_under_each_recipe(
    recipe_models: dict[str, LoadedModel], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    model = recipe_models[kind]
    engine = Engine(model)
    steps, guidance, _ = engine.settings(unset(noise_image(8, 8)))
    calls = BatchSizes(model.img2img.unet)
    monkeypatch.setattr(model.img2img, "unet", calls)
    pixels = noise_image(64, 64, seed=3)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 16:56] = 255
    request = unset(pixels, mask=p.Mask(64, 64, mask.tobytes()), count=3, steps=min(steps, 6), negative_prompt="blurry")
    together, alone = variations_and_singles(engine, request)
    assert_same_images(together, alone)
    per_variation = 2 if guidance > 1.0 and model.recipe.kind != "sd-lcm" else 1
    assert calls.batches[0] == 3 * per_variation


def test_inpainting_unet_batches_its_masked_image_per_variation(inpaint_engine: Engine) -> None:
    pixels = noise_image(64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    together, alone = variations_and_singles(inpaint_engine, generate(pixels, mask, count=3, seed=11))
    assert_same_images(together, alone)


def test_a_batch_out_of_memory_runs_again_in_halves(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = BatchSizes(engine.pipe.unet, most=2)
    monkeypatch.setattr(engine.pipe, "unet", calls)
    hooks = Hooks()
    request = generate(noise_image(48, 48), count=5, seed=20, steps=2, strength=1.0)
    together = list(engine.run(request, hooks))
    assert calls.batches == [5, 2, 2, 2, 2, 1, 1], "5 fails on its first step; then 2, 2 and 1, two steps each"
    monkeypatch.setattr(engine.pipe, "unet", calls.unet)
    _, alone = variations_and_singles(engine, replace(request, count=5))
    assert_same_images(together, alone)
    assert [(index, step) for index, step, _ in hooks.steps if index == 4] == [(4, 1), (4, 2)], "the batch that failed never reported"


def test_out_of_memory_at_a_single_variation_is_still_an_error(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.pipe, "unet", BatchSizes(engine.pipe.unet, most=0))
    with pytest.raises(EngineError) as caught:
        list(engine.run(generate(noise_image(32, 32), count=3), Hooks()))
    assert caught.value.code is p.ErrorCode.OUT_OF_MEMORY


def test_every_variation_of_a_batch_streams_previews(engine: Engine) -> None:
    hooks = Hooks()
    list(engine.run(generate(noise_image(64, 64), count=3, steps=8, strength=1.0, preview=p.PreviewSettings(every=2)), hooks))
    by_index = sorted({(frame.index, frame.step) for frame in hooks.frames})
    assert by_index == [(index, step) for index in range(3) for step in (2, 4, 6)]
    first = {frame.step: frame.rgb for frame in hooks.frames if frame.index == 0}
    second = {frame.step: frame.rgb for frame in hooks.frames if frame.index == 1}
    assert not np.array_equal(first[6], second[6]), "each variation previews its own latents"
