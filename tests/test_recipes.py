from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.editor import protocol as p
from bridge.models import folder_traits, scheduler_for
from bridge.recipes import KINDS, Overrides, RecipeError, Traits, classify, parse_flags, read_overrides, recipe_for

_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1}
_SD_INDEX = "StableDiffusionPipeline"
_XL_INDEX = "StableDiffusionXLPipeline"


def published(
    folder: Path,
    pipeline: str,
    *,
    cross: int | list[int],
    sample: int,
    scheduler: str,
    in_channels: int = 4,
    prediction: str | None = None,
    spacing: str | None = None,
    time_cond_proj_dim: int | None = None,
) -> Path:
    """A diffusers folder holding only the configuration fields that matter, as the model's Hub repo publishes them."""
    unet: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "cross_attention_dim": cross,
        "sample_size": sample,
        "in_channels": in_channels,
    }
    if time_cond_proj_dim is not None:
        unet["time_cond_proj_dim"] = time_cond_proj_dim
    sched: dict[str, Any] = {"_class_name": scheduler, **_BETAS}
    if prediction is not None:
        sched["prediction_type"] = prediction
    if spacing is not None:
        sched["timestep_spacing"] = spacing
    for relative, data in (
        ("model_index.json", {"_class_name": pipeline}),
        ("unet/config.json", unet),
        ("scheduler/scheduler_config.json", sched),
        ("vae/config.json", {"block_out_channels": [128, 256, 512, 512]}),
    ):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(json.dumps(data), encoding="utf-8")
    return folder


# (repo id, its published config values, the kind, steps, guidance, resolution)
PUBLISHED: list[tuple[str, dict[str, Any], str, int, float, int]] = [
    ("stabilityai/sd-turbo",
     {"pipeline": _SD_INDEX, "cross": 1024, "sample": 64, "scheduler": "EulerDiscreteScheduler", "spacing": "trailing"},
     "sd-turbo", 2, 0.0, 512),
    ("stabilityai/sdxl-turbo",
     {"pipeline": _XL_INDEX, "cross": 2048, "sample": 64, "scheduler": "EulerAncestralDiscreteScheduler", "spacing": "trailing"},
     "sdxl-turbo", 2, 0.0, 512),
    ("runwayml/stable-diffusion-v1-5",
     {"pipeline": _SD_INDEX, "cross": 768, "sample": 64, "scheduler": "PNDMScheduler"},
     "sd15", 30, 7.5, 512),
    ("stabilityai/stable-diffusion-2-base",
     {"pipeline": _SD_INDEX, "cross": 1024, "sample": 64, "scheduler": "PNDMScheduler", "prediction": "epsilon"},
     "sd2", 30, 7.5, 512),
    ("stabilityai/stable-diffusion-2-1",
     {"pipeline": _SD_INDEX, "cross": 1024, "sample": 96, "scheduler": "DDIMScheduler", "prediction": "v_prediction"},
     "sd2-v", 30, 7.5, 768),
    ("stabilityai/stable-diffusion-xl-base-1.0",
     {"pipeline": _XL_INDEX, "cross": 2048, "sample": 128, "scheduler": "EulerDiscreteScheduler"},
     "sdxl", 30, 6.0, 1024),
    ("runwayml/stable-diffusion-inpainting",
     {"pipeline": _SD_INDEX, "cross": 768, "sample": 64, "scheduler": "PNDMScheduler", "in_channels": 9},
     "sd15-inpaint", 30, 7.5, 512),
    ("stabilityai/stable-diffusion-2-inpainting",
     {"pipeline": _SD_INDEX, "cross": 1024, "sample": 64, "scheduler": "PNDMScheduler", "in_channels": 9},
     "sd2-inpaint", 30, 7.5, 512),
    ("diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
     {"pipeline": _XL_INDEX, "cross": 2048, "sample": 128, "scheduler": "EulerDiscreteScheduler", "in_channels": 9},
     "sdxl-inpaint", 30, 6.0, 1024),
    ("SimianLuo/LCM_Dreamshaper_v7",
     {"pipeline": "LCM_" + _SD_INDEX, "cross": 768, "sample": 96, "scheduler": "LCMScheduler", "time_cond_proj_dim": 256},
     "sd-lcm", 4, 8.0, 768),
    ("latent-consistency/lcm-sdxl",
     {"pipeline": _XL_INDEX, "cross": 2048, "sample": 128, "scheduler": "LCMScheduler", "time_cond_proj_dim": 256},
     "sdxl-lcm", 4, 8.0, 1024),
    ("someone/dreamshaper-8-lcm-lora-fused",
     {"pipeline": _SD_INDEX, "cross": 768, "sample": 64, "scheduler": "PNDMScheduler"},
     "sd-lcm-lora", 4, 1.0, 512),
    ("ByteDance/sdxl_lightning_4step",
     {"pipeline": _XL_INDEX, "cross": 2048, "sample": 128, "scheduler": "EulerDiscreteScheduler"},
     "sdxl-lightning", 4, 0.0, 1024),
    ("someone/juggernautXL_v9Rdphoto2Lightning",
     {"pipeline": _XL_INDEX, "cross": 2048, "sample": 128, "scheduler": "EulerDiscreteScheduler"},
     "sdxl-lightning", 4, 0.0, 1024),
    ("ByteDance/Hyper-SDXL-8steps",
     {"pipeline": _XL_INDEX, "cross": 2048, "sample": 128, "scheduler": "EulerDiscreteScheduler"},
     "sdxl-hyper", 8, 0.0, 1024),
    ("someone/HyperRealism-v3",
     {"pipeline": _SD_INDEX, "cross": 768, "sample": 64, "scheduler": "PNDMScheduler"},
     "sd15", 30, 7.5, 512),
]  # fmt: skip


@pytest.mark.parametrize(("repo", "config", "kind", "steps", "guidance", "resolution"), PUBLISHED, ids=[row[0] for row in PUBLISHED])
def test_published_configs_get_their_model_cards_recipe(
    tmp_path: Path, repo: str, config: dict[str, Any], kind: str, steps: int, guidance: float, resolution: int
) -> None:
    settings = dict(config)
    pipeline = str(settings.pop("pipeline")).replace("LCM_", "")
    folder = published(tmp_path / "model", pipeline, **settings)
    recipe, chosen = recipe_for(folder_traits(repo, folder), Overrides())
    assert (recipe.kind, recipe.steps, recipe.guidance, recipe.resolution) == (kind, steps, guidance, resolution)
    assert recipe.family == ("sdxl" if pipeline == _XL_INDEX else "sd")
    assert recipe.inpaint == (settings.get("in_channels") == 9)
    assert recipe.scheduler == chosen.scheduler


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_distilled_kinds_turn_guidance_off_or_embed_it(kind: str) -> None:
    k = KINDS[kind]
    if "lcm" in kind:
        assert k.scheduler == "LCMScheduler" and k.steps <= 8
    elif any(word in kind for word in ("turbo", "lightning", "hyper")):
        assert k.guidance == 0.0 and k.steps <= 8 and k.timestep_spacing == "trailing"
    else:
        assert k.guidance >= 5.0 and k.steps >= 20
    assert 1 <= round(k.live_steps * k.live_strength) <= 4, "a live frame costs at most four UNet steps"
    assert k.source


def test_sd_turbo_runs_one_step_of_two_at_half_strength_as_its_card_shows() -> None:
    recipe, kind = recipe_for(Traits("stabilityai/sd-turbo", "sd", cross_attention_dim=1024), Overrides())
    assert (recipe.steps, recipe.strength, recipe.guidance) == (2, 0.5, 0.0)
    assert (recipe.live_steps, recipe.live_strength) == (2, 0.5)
    assert (kind.scheduler, kind.timestep_spacing) == ("EulerDiscreteScheduler", "trailing")


def test_the_scheduler_is_the_recipes_with_the_models_betas_and_prediction_type() -> None:
    from diffusers import DDIMScheduler, LCMScheduler

    config = DDIMScheduler(**_BETAS, prediction_type="v_prediction").config  # type: ignore[attr-defined]
    scheduler: Any = scheduler_for(config, KINDS["sdxl-lightning"])
    assert type(scheduler).__name__ == "EulerDiscreteScheduler"
    assert scheduler.config.timestep_spacing == "trailing" and scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_end == 0.012
    assert type(scheduler_for(config, KINDS["sd-lcm"])) is LCMScheduler


def test_a_recipe_file_overrides_single_fields(tmp_path: Path) -> None:
    path = tmp_path / "img2img_bridge.json"
    path.write_text(json.dumps({"steps": 6, "guidance": 1.5, "scheduler": "DPMSolverMultistepScheduler"}), encoding="utf-8")
    recipe, _ = recipe_for(Traits("a/model", "sd"), read_overrides(path))
    assert (recipe.kind, recipe.steps, recipe.guidance, recipe.scheduler, recipe.strength) == (
        "sd15",
        6,
        1.5,
        "DPMSolverMultistepScheduler",
        0.6,
    )


def test_flags_win_over_the_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "img2img_bridge.json"
    path.write_text(json.dumps({"steps": 6, "kind": "sd-turbo"}), encoding="utf-8")
    merged = parse_flags(["steps=3", "live_strength=0.3"]).over(read_overrides(path))
    recipe, _ = recipe_for(Traits("a/model", "sd"), merged)
    assert (recipe.kind, recipe.steps, recipe.live_strength, recipe.guidance) == ("sd-turbo", 3, 0.3, 0.0)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"stepz": 4}, "unknown field 'stepz'"),
        ({"steps": 0}, "field 'steps' must be a whole number from 1 to 200"),
        ({"steps": "4"}, "field 'steps' must be a whole number"),
        ({"strength": 0}, "field 'strength' must be a number in (0, 1]"),
        ({"guidance": 31}, "field 'guidance' must be a number in [0, 30]"),
        ({"resolution": 500}, "field 'resolution' must be a multiple of 8"),
        ({"scheduler": "Euler"}, "field 'scheduler' must be one of EulerDiscreteScheduler"),
        ({"kind": "sd3"}, "field 'kind' must be one of sd-turbo"),
        ({"prediction_type": "sample"}, "field 'prediction_type' must be 'epsilon' or 'v_prediction'"),
        ([1, 2], "must hold a JSON object"),
    ],
)
def test_a_bad_recipe_file_is_one_line_naming_the_file_and_field(tmp_path: Path, content: Any, expected: str) -> None:
    path = tmp_path / "img2img_bridge.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        read_overrides(path)
    assert info.value.message.startswith(f"{path}: ")
    assert expected in info.value.message
    assert "\n" not in info.value.message


def test_a_recipe_file_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "img2img_bridge.json"
    path.write_text("{steps: 4", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        read_overrides(path)
    assert info.value.message.startswith(f"{path}: not a readable JSON file")


def test_a_kind_of_the_other_family_is_refused() -> None:
    with pytest.raises(RecipeError) as info:
        recipe_for(Traits("a/model", "sd"), parse_flags(["kind=sdxl-turbo"]))
    assert info.value.message.startswith("--recipe: field 'kind' is 'sdxl-turbo'")


@pytest.mark.parametrize("pair", ["steps", "steps=many", "colour=red"])
def test_bad_flags_name_the_flag(pair: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_flags([pair])
    assert info.value.message.startswith("--recipe")


def test_recipes_travel_in_the_protocol() -> None:
    recipe, _ = recipe_for(Traits("x/sdxl-turbo", "sdxl"), Overrides())
    info = p.ModelInfo("x/sdxl-turbo", "hub", recipe=recipe)
    assert p.ModelInfo.from_wire(info.to_wire(), "models") == info


def test_classify_reads_step_counts_from_names() -> None:
    assert classify(Traits("sdxl_lightning_2step_unet", "sdxl")).steps == 2
    assert classify(Traits("Hyper-SD15-1step-lora-fused", "sd")).steps == 1
