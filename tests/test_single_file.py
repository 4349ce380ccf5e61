"""Single-file checkpoints of every family load with no network and an empty Hugging Face cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge import single_file
from bridge.recipes import Traits
from bridge.single_file import Architecture, CheckpointError, config_folder, read_header, traits_of
from tests.checkpoints import shrunk_configs, write_family_checkpoint

ROOT = Path(__file__).resolve().parent.parent

# (checkpoint written by the test, pipeline class, kind, scheduler prediction type, native resolution)
FAMILIES = [
    ("sd15", False, "StableDiffusionImg2ImgPipeline", "sd15", "epsilon", 512),
    ("sd15", True, "StableDiffusionImg2ImgPipeline", "sd15-inpaint", "epsilon", 512),
    ("sd2", False, "StableDiffusionImg2ImgPipeline", "sd2-v", "v_prediction", 768),
    ("sd2", True, "StableDiffusionImg2ImgPipeline", "sd2-inpaint", "epsilon", 512),
    ("sdxl", False, "StableDiffusionXLImg2ImgPipeline", "sdxl", "epsilon", 1024),
    ("sdxl", True, "StableDiffusionXLImg2ImgPipeline", "sdxl-inpaint", "epsilon", 1024),
]

_LOADER = """
import json, sys
from pathlib import Path
import bridge.single_file
bridge.single_file.CONFIGS = Path(sys.argv[1])  # the shrunk copies: same files, small widths
from bridge.models import load, resolve
for checkpoint in sys.argv[2:]:
    model = load(resolve(checkpoint), "cpu")
    pipe = model.img2img
    print(json.dumps({
        "name": Path(checkpoint).name, "pipeline": type(pipe).__name__, "kind": model.recipe.kind,
        "prediction": pipe.scheduler.config.prediction_type, "resolution": model.recipe.resolution,
        "in_channels": pipe.unet.config.in_channels, "tokens": pipe.tokenizer("a photo of a cat").input_ids,
        "pad": getattr(getattr(pipe, "tokenizer_2", None), "pad_token", None),
    }))
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("families")
    configs = shrunk_configs(single_file.CONFIGS, root / "configs")
    written = []
    for base, inpaint, *_ in FAMILIES:
        checkpoint = root / "models" / f"{base}{'-inpainting' if inpaint else ''}.safetensors"
        checkpoint.parent.mkdir(exist_ok=True)
        write_family_checkpoint(configs / base, checkpoint, root / "scratch", inpaint=inpaint)
        written.append(checkpoint)
    return configs, written


def test_every_family_loads_offline_with_an_empty_hugging_face_cache(checkpoints: tuple[Path, list[Path]], tmp_path: Path) -> None:
    configs, written = checkpoints
    hf_home = tmp_path / "empty-hf-home"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        IMG2IMG_BRIDGE_CACHE=str(tmp_path / "bridge-cache"),
    )
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(configs), *map(str, written)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(loaded) == len(FAMILIES)
    for row, (_, inpaint, pipeline, kind, prediction, resolution) in zip(loaded, FAMILIES, strict=True):
        assert (row["pipeline"], row["kind"], row["prediction"], row["resolution"]) == (pipeline, kind, prediction, resolution), row
        assert row["in_channels"] == (9 if inpaint else 4)
        assert row["tokens"] == [49406, 320, 1125, 539, 320, 2368, 49407], "CLIP's real token ids"
        assert row["pad"] == ("!" if pipeline.startswith("StableDiffusionXL") else None)
    assert not hf_home.exists() or not any(hf_home.rglob("*.*")), "nothing was written to the Hugging Face cache"


def test_a_recipe_file_beside_an_sd2_checkpoint_says_it_is_the_512_epsilon_model(
    checkpoints: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    from bridge.models import inspect_model, resolve
    from bridge.recipes import recipe_for

    _, written = checkpoints
    sd2 = written[2]
    beside = sd2.with_name(f"{sd2.stem}.img2img_bridge.json")
    beside.write_text(json.dumps({"prediction_type": "epsilon"}), encoding="utf-8")
    try:
        traits, overrides = inspect_model(resolve(str(sd2)), str(sd2))
    finally:
        beside.unlink()
    recipe, _ = recipe_for(traits, overrides)
    assert (recipe.kind, recipe.resolution) == ("sd2", 512)
    assert single_file.architecture(traits) == Architecture("sd2", inpaint=False, v_prediction=False)


@pytest.mark.parametrize(
    ("family", "unet", "vae", "text", "text_2"),
    [
        # parameter counts of the published models: runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1,
        # stabilityai/stable-diffusion-xl-base-1.0 (UNet, VAE, CLIP ViT-L, OpenCLIP ViT-H 23 layers / ViT-bigG)
        ("sd15", 859_520_964, 83_653_863, 123_060_480, None),
        ("sd2", 865_910_724, 83_653_863, 340_387_840, None),
        ("sdxl", 2_567_463_684, 83_653_863, 123_060_480, 694_659_840),
    ],
)
def test_the_shipped_configs_are_the_published_architectures(family: str, unet: int, vae: int, text: int, text_2: int | None) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = single_file.CONFIGS / family

    def config(component: str) -> dict[str, object]:
        return dict(json.loads((folder / component / "config.json").read_text(encoding="utf-8")))

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with init_empty_weights():
        assert count(UNet2DConditionModel.from_config(config("unet"))) == unet
        assert count(AutoencoderKL.from_config(config("vae"))) == vae
        assert count(CLIPTextModel(CLIPTextConfig(**config("text_encoder")))) == text  # type: ignore[arg-type]
        if text_2 is not None:
            assert count(CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2")))) == text_2  # type: ignore[arg-type]


def test_the_package_ships_every_config_file() -> None:
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["bridge"]
    shipped = {path for pattern in patterns if pattern.startswith("configs/") for path in (ROOT / "bridge").glob(pattern)}
    assert shipped == set(single_file.CONFIGS.rglob("*.json")) and len(shipped) == 20


def test_a_truncated_checkpoint_is_one_line_naming_the_file(checkpoints: tuple[Path, list[Path]], tmp_path: Path) -> None:
    whole = checkpoints[1][0].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError) as info:
        read_header(cut)
    assert info.value.message.startswith("cut.safetensors: the file is truncated") and "download it again" in info.value.message


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", "not a safetensors file"), (b"\xff" * 8 + b"{}", "its header claims"), (b"\x04\x00\x00\x00\x00\x00\x00\x00nope", "not JSON")],
)
def test_files_that_are_not_safetensors_say_so(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_header(path)
    assert info.value.message.startswith("junk.safetensors: ") and says in info.value.message


def test_a_lora_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        traits_of(tmp_path / "style.safetensors", {"lora_unet_down_blocks_0_attentions_0.alpha": []})
    assert "no Stable Diffusion UNet" in info.value.message and "not LoRAs" in info.value.message


def test_without_the_clip_vocabulary_the_error_names_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(single_file, "vocabulary_file", lambda: None)
    monkeypatch.setattr(single_file, "cache_root", lambda: tmp_path)
    with pytest.raises(CheckpointError) as info:
        config_folder(single_file.architecture(Traits("x.safetensors", "sd")))
    assert info.value.message.endswith("run 'pip install --no-deps open_clip_torch'")
