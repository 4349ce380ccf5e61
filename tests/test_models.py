from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bridge.editor import protocol as p
from bridge.editor.regions import Rect
from bridge.engine import Engine, GeneratedImage, PreviewFrame
from bridge.models import LoadedModel, ModelError, ModelSpec, load, resolve, scan_models_dir
from bridge.tiny_model import TINY_RESOLUTION, ensure_tiny_model
from tests.checkpoints import write_single_file

COMPONENT_WEIGHTS = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
}


class RecordingHooks:
    def __init__(self) -> None:
        self.steps: list[tuple[int, int, int]] = []
        self.previews: list[PreviewFrame] = []

    def cancelled(self) -> bool:
        return False

    def progress(self, index: int, step: int, steps: int) -> None:
        self.steps.append((index, step, steps))

    def preview(self, frame: PreviewFrame) -> None:
        self.previews.append(frame)


@pytest.fixture(scope="module")
def tiny_folder(model_cache: Path) -> Path:
    return ensure_tiny_model()


@pytest.fixture(scope="module")
def tiny_model(tiny_folder: Path) -> LoadedModel:
    return load(resolve("tiny"), "cpu")


@pytest.fixture(scope="module")
def single_file(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint = tmp_path_factory.mktemp("checkpoints") / "my-finetune.safetensors"
    write_single_file(tiny_folder, checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def single_file_model(single_file: Path) -> LoadedModel:
    return load(resolve(str(single_file)), "cpu")


def generate_request() -> p.Generate:
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 64, 4), dtype=np.uint8)
    return p.Generate(
        job_id="job-1",
        image=p.Image(64, 48, pixels.tobytes()),
        prompt="a red barn",
        strength=0.75,
        steps=4,
        guidance=2.0,
        seed=7,
        preview=p.PreviewSettings(every=1, decoder=p.PreviewDecoder.APPROX),
    )


def run_engine(model: LoadedModel) -> tuple[list[GeneratedImage], RecordingHooks]:
    hooks = RecordingHooks()
    return list(Engine(model).run(generate_request(), hooks)), hooks


def assert_same_weights(model: LoadedModel, folder: Path) -> None:
    for component, weights in COMPONENT_WEIGHTS.items():
        expected = load_file(str(folder / weights))
        loaded = getattr(model.img2img, component).state_dict()
        assert set(expected) <= set(loaded), component
        for key, tensor in expected.items():
            assert not loaded[key].is_meta, key
            assert torch.equal(loaded[key], tensor), key


def test_resolve_tiny() -> None:
    spec = resolve("tiny")
    assert spec == ModelSpec("tiny", "builtin", "tiny")
    assert spec.info == p.ModelInfo("tiny", "builtin", test_model=True)


def test_resolve_a_hub_repo_id() -> None:
    spec = resolve("stabilityai/sd-turbo")
    assert spec == ModelSpec("stabilityai/sd-turbo", "hub", "stabilityai/sd-turbo")
    assert not spec.info.test_model


def test_resolve_a_diffusers_folder(tiny_folder: Path) -> None:
    assert resolve(str(tiny_folder)) == ModelSpec(str(tiny_folder), "folder", str(tiny_folder))


def test_resolve_a_folder_without_model_index_fails(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelError) as info:
        resolve(str(tmp_path))
    assert info.value.code is p.ErrorCode.UNKNOWN_MODEL
    assert "model_index.json" in info.value.message


@pytest.mark.parametrize("name", ["gone.safetensors", "gone.CKPT"])
def test_resolve_a_missing_checkpoint_fails(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelError) as info:
        resolve(str(tmp_path / name))
    assert info.value.code is p.ErrorCode.UNKNOWN_MODEL
    assert "does not exist" in info.value.message


def test_resolve_a_checkpoint_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "dream.safetensors"
    checkpoint.write_bytes(b"")
    assert resolve(str(checkpoint)) == ModelSpec("dream.safetensors", "file", str(checkpoint))


@pytest.mark.parametrize("name", ["nonsense", "a/b/c", "./relative/thing", "/abs/thing", "~/thing", "model.bin"])
def test_resolve_garbage_names_fails_with_the_accepted_forms(name: str) -> None:
    with pytest.raises(ModelError) as info:
        resolve(name)
    assert info.value.code is p.ErrorCode.UNKNOWN_MODEL
    assert "repo id" in info.value.message and "'tiny'" in info.value.message


def test_resolve_an_empty_name_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as info:
        resolve("")
    assert info.value.code is p.ErrorCode.UNKNOWN_MODEL


def test_resolve_prefers_the_catalog() -> None:
    listed = ModelSpec("checkpoints/sd15.safetensors", "file", "/models/checkpoints/sd15.safetensors")
    assert resolve("checkpoints/sd15.safetensors", [listed]) is listed
    assert resolve("tiny", [listed]).source == "builtin"


def place(single_file: Path, *targets: Path) -> None:
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(single_file, target)


def junk(folder: Path) -> None:
    """What models folders also hold: placeholders, notes, a LoRA, a truncated download, a config-only folder."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints/put_checkpoints_here").write_bytes(b"")
    (folder / "checkpoints/notes.txt").write_text("hi", encoding="utf-8")
    from safetensors.torch import save_file

    save_file({"lora_unet_down_blocks_0.alpha": torch.ones(1)}, str(folder / "checkpoints/style-lora.safetensors"))
    (folder / "checkpoints/half.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    (folder / "diffusers/configs-only/unet").mkdir(parents=True)
    (folder / "diffusers/configs-only/model_index.json").write_text("{}", encoding="utf-8")


def test_scan_models_dir_finds_checkpoints_and_diffusers_folders_and_skips_junk(
    single_file: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    place(single_file, models / "checkpoints/sd15.safetensors", models / "checkpoints/SDXL/nested.safetensors")
    (models / "checkpoints/SDXL/old.ckpt").write_bytes(b"")
    shutil.copytree(tiny_folder, models / "diffusers/my-model")
    junk(models)
    found = {(s.name, s.source, s.location) for s in scan_models_dir(models)}
    assert found == {
        ("checkpoints/sd15.safetensors", "file", str(models / "checkpoints/sd15.safetensors")),
        ("checkpoints/SDXL/nested.safetensors", "file", str(models / "checkpoints/SDXL/nested.safetensors")),
        ("diffusers/my-model", "folder", str(models / "diffusers/my-model")),
    }
    with_pickles = {s.name for s in scan_models_dir(models, allow_pickle=True)}
    assert "checkpoints/SDXL/old.ckpt" in with_pickles


def test_scanned_models_carry_their_recipe(single_file: Path, tiny_folder: Path, tmp_path: Path) -> None:
    place(single_file, tmp_path / "dreamshaper_8.safetensors", tmp_path / "sdxl_lightning_4step.safetensors")
    recipes = {s.name: s.info.recipe for s in scan_models_dir(tmp_path)}
    assert recipes["dreamshaper_8.safetensors"] is not None and recipes["dreamshaper_8.safetensors"].kind == "sd15"
    assert recipes["dreamshaper_8.safetensors"].guidance == 7.5
    # an SD 1.x architecture named like an SDXL distillation stays an SD model
    assert recipes["sdxl_lightning_4step.safetensors"] is not None and recipes["sdxl_lightning_4step.safetensors"].family == "sd"


def test_a_comfyui_install_offers_its_checkpoints_and_diffusers_folders(single_file: Path, tiny_folder: Path, tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    place(single_file, comfy / "models/checkpoints/sd15.safetensors")
    place(single_file, comfy / "models/loras/not-a-model.safetensors")
    shutil.copytree(tiny_folder, comfy / "models/diffusers/tiny")
    names = {s.name for s in scan_models_dir(comfy)}
    assert names == {"models/checkpoints/sd15.safetensors", "models/diffusers/tiny"}


def test_an_a1111_install_offers_models_stable_diffusion(single_file: Path, tmp_path: Path) -> None:
    webui = tmp_path / "stable-diffusion-webui"
    place(single_file, webui / "models/Stable-diffusion/v1-5.safetensors", webui / "models/Lora/style.safetensors")
    assert [s.name for s in scan_models_dir(webui)] == ["models/Stable-diffusion/v1-5.safetensors"]


def test_comfyuis_extra_model_paths_yaml_is_followed(single_file: Path, tmp_path: Path) -> None:
    webui = tmp_path / "webui"
    place(single_file, webui / "models/Stable-diffusion/a.safetensors", tmp_path / "more/b.safetensors")
    yaml_file = tmp_path / "ComfyUI" / "extra_model_paths.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(
        f"a111:\n    base_path: {webui}\n    checkpoints: models/Stable-diffusion\n    loras: models/Lora\n"
        f"mine:\n    base_path: {tmp_path}\n    checkpoints: |\n        more\n        missing\n",
        encoding="utf-8",
    )
    for given in (yaml_file, yaml_file.parent):
        assert sorted(s.location for s in scan_models_dir(given)) == [
            str(tmp_path / "more/b.safetensors"),
            str(webui / "models/Stable-diffusion/a.safetensors"),
        ]


def test_a_broken_extra_model_paths_yaml_names_the_file(tmp_path: Path) -> None:
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ModelError) as info:
        scan_models_dir(tmp_path)
    assert str(yaml_file) in info.value.message


def test_pickled_checkpoints_are_refused_without_the_flag(tmp_path: Path) -> None:
    checkpoint = tmp_path / "old.ckpt"
    checkpoint.write_bytes(b"")
    with pytest.raises(ModelError) as info:
        resolve(str(checkpoint))
    assert "--allow-pickle" in info.value.message and "run any code" in info.value.message
    assert resolve(str(checkpoint), allow_pickle=True).source == "file"


def test_scan_models_dir_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert scan_models_dir(tmp_path / "nowhere") == []


def test_load_the_tiny_model(tiny_model: LoadedModel) -> None:
    assert tiny_model.family == "sd"
    assert tiny_model.resolution == TINY_RESOLUTION == 128
    assert tiny_model.test_model
    assert tiny_model.tiny_vae is not None
    assert not tiny_model.inpaint_unet and not tiny_model.recipe.inpaint
    assert (tiny_model.recipe.kind, tiny_model.recipe.steps, tiny_model.recipe.guidance) == ("sd-turbo", 2, 0.0)
    assert (tiny_model.device, tiny_model.dtype) == ("cpu", torch.float32)
    assert tiny_model.state.test_model and tiny_model.state.status is p.ModelStatus.READY


def test_load_reports_progress_up_to_ready(tiny_folder: Path) -> None:
    reports: list[tuple[float, str]] = []
    load(resolve("tiny"), "cpu", on_progress=lambda fraction, text: reports.append((fraction, text)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions)
    assert reports[-1] == (1.0, "ready")


def test_loading_a_hub_model_missing_from_the_cache_offline_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load(resolve("nobody-here/not-cached-model"), "cpu")
    message = info.value.message
    assert info.value.code is p.ErrorCode.MODEL_LOAD_FAILED
    assert "nobody-here/not-cached-model" in message
    assert "Fix:" in message and "--model" in message and "online" in message


@pytest.mark.parametrize(("value", "offline"), [("0", False), ("false", False), ("", False), ("1", True), ("ON", True), ("yes", True)])
def test_hf_hub_offline_is_read_as_the_hub_reads_it(monkeypatch: pytest.MonkeyPatch, value: str, offline: bool) -> None:
    import huggingface_hub

    downloads: list[str] = []

    def snapshot_download(repo_id: str, local_files_only: bool = False, **kwargs: object) -> str:
        raise FileNotFoundError(repo_id)  # the cache has no copy

    def model_info(self: object, repo_id: str, **kwargs: object) -> object:
        # the network is off limits in tests: this stands in for the Hub, which cannot be reached either
        downloads.append(repo_id)
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.delenv("IMG2IMG_BRIDGE_OFFLINE", raising=False)
    with pytest.raises(ModelError) as info:
        load(resolve("nobody-here/not-cached-model"), "cpu")
    assert downloads == ([] if offline else ["nobody-here/not-cached-model"])
    assert ("downloads are off" in info.value.message) is offline


def test_a_saved_diffusers_folder_loads_as_a_real_model(tiny_folder: Path, tmp_path: Path) -> None:
    saved = tmp_path / "saved-model"
    shutil.copytree(tiny_folder, saved)
    (saved / "img2img_bridge.json").unlink()
    model = load(resolve(str(saved)), "cpu")
    assert model.spec.source == "folder"
    assert not model.test_model
    assert model.resolution == 128
    assert model.tiny_vae is not None
    assert_same_weights(model, tiny_folder)


def test_a_single_file_checkpoint_loads_with_its_config_folder(
    single_file: Path, single_file_model: LoadedModel, tiny_folder: Path
) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    config = single_file.with_suffix("")
    assert (config / "model_index.json").is_file()
    assert not list(config.rglob("*.safetensors")), "the weights must come from the checkpoint"
    assert single_file_model.spec == ModelSpec(single_file.name, "file", str(single_file))
    assert type(single_file_model.img2img) is StableDiffusionImg2ImgPipeline
    assert (single_file_model.family, single_file_model.resolution, single_file_model.test_model) == ("sd", 128, False)
    assert_same_weights(single_file_model, tiny_folder)


def test_a_single_file_checkpoint_generates_what_its_diffusers_folder_does(single_file_model: LoadedModel, tiny_model: LoadedModel) -> None:
    results, hooks = run_engine(single_file_model)
    assert len(results) == 1
    result = results[0]
    assert result.pixels.shape == (48, 64, 4) and result.pixels.dtype == np.uint8
    assert result.rect == Rect(0, 0, 64, 48)
    assert hooks.steps == [(0, 1, 3), (0, 2, 3), (0, 3, 3)]
    assert [frame.step for frame in hooks.previews] == [1, 2]
    reference, _ = run_engine(tiny_model)
    assert np.array_equal(result.pixels, reference[0].pixels)


def test_a_checkpoint_unlike_the_published_architectures_fails_in_one_line(tiny_folder: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "lonely.safetensors"
    write_single_file(tiny_folder, checkpoint)
    shutil.rmtree(checkpoint.with_suffix(""))  # without its own configs, the shipped SD 1.5 ones are used: the widths differ
    with pytest.raises(ModelError) as info:
        load(resolve(str(checkpoint)), "cpu")
    assert info.value.code is p.ErrorCode.MODEL_LOAD_FAILED
    assert info.value.message.startswith("could not load checkpoint lonely.safetensors: ")
    assert "\n" not in info.value.message


def test_a_corrupt_checkpoint_is_a_load_failure(tmp_path: Path) -> None:
    checkpoint = tmp_path / "broken.safetensors"
    checkpoint.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError) as info:
        load(resolve(str(checkpoint)), "cpu")
    assert info.value.code is p.ErrorCode.MODEL_LOAD_FAILED
    assert "broken.safetensors" in info.value.message
