"""Finding and loading models: the built-in tiny model, Hub repo ids, diffusers folders, single files."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from . import download
from .editor import protocol as p
from .families import FAMILIES
from .recipes import RECIPE_FILE, Kind, Overrides, RecipeError, Traits, read_overrides, recipe_for
from .single_file import CheckpointError, architecture, config_folder, read_header, traits_of
from .tiny_model import TINY_MODEL_NAME, ensure_tiny_model

log = logging.getLogger("img2img_bridge.models")

DEFAULT_MODEL = "stabilityai/sd-turbo"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
PICKLE_SUFFIXES = (".ckpt",)
_MAX_SCANNED = 5000  # files looked at below one models folder
_WEIGHTS = ("*.safetensors", "*.bin")


class ModelError(Exception):
    """A model that cannot be found or loaded; ``message`` says how to fix it."""

    def __init__(self, code: p.ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: ``source`` is builtin, hub, folder or file; ``recipe`` when known without loading."""

    name: str
    source: str
    location: str
    recipe: p.Recipe | None = field(default=None, compare=False)

    @property
    def info(self) -> p.ModelInfo:
        return p.ModelInfo(name=self.name, source=self.source, test_model=self.source == "builtin", recipe=self.recipe)


def resolve(name: str, catalog: list[ModelSpec] | None = None, *, allow_pickle: bool = False) -> ModelSpec:
    """Turn what the user typed (``tiny``, a repo id, a folder, a checkpoint file) into a spec."""
    if not name.strip():
        raise ModelError(p.ErrorCode.UNKNOWN_MODEL, "no model name was given")
    for spec in catalog or []:
        if spec.name == name:
            return spec
    if name == TINY_MODEL_NAME:
        return ModelSpec(TINY_MODEL_NAME, "builtin", TINY_MODEL_NAME)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelError(p.ErrorCode.UNKNOWN_MODEL, f"{path} is a folder but not a diffusers model (no model_index.json)")
        return ModelSpec(str(path), "folder", str(path))
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise ModelError(p.ErrorCode.UNKNOWN_MODEL, f"checkpoint {path} does not exist")
        if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
            raise ModelError(
                p.ErrorCode.UNKNOWN_MODEL,
                f"{path.name} is a pickled checkpoint, and loading one can run any code it carries: use a .safetensors copy, "
                "or start the server with --allow-pickle if you trust its source",
            )
        return ModelSpec(path.name, "file", str(path))
    if name.count("/") == 1 and not name.startswith(("/", ".", "~")):
        return ModelSpec(name, "hub", name)
    raise ModelError(
        p.ErrorCode.UNKNOWN_MODEL,
        f"unknown model {name!r}: give a Hugging Face repo id (org/name), a diffusers folder, a .safetensors/.ckpt file, or 'tiny'",
    )


def with_recipe(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its recipe filled in where configs or a checkpoint header tell it without loading weights."""
    if spec.source == "builtin":
        return spec
    location = download.cached(spec.location) if spec.source == "hub" else spec.location
    if location is None:
        return spec
    try:
        traits, overrides = inspect_model(spec, location)
        recipe, _ = recipe_for(traits, overrides)
    except (ModelError, RecipeError) as exc:
        log.warning("%s: %s", spec.name, getattr(exc, "message", exc))
        return spec
    return replace(spec, recipe=recipe)


def scan_models_dir(folder: Path, *, allow_pickle: bool = False) -> list[ModelSpec]:
    """The models in ``folder``: a ComfyUI or A1111 install, a ComfyUI extra_model_paths.yaml, or any folder of models.

    Checkpoints that are not Stable Diffusion models (LoRAs, VAEs, truncated files) and diffusers folders
    without weights are left out; pickled ``.ckpt`` files only with ``allow_pickle``.
    """
    specs: list[ModelSpec] = []
    for root, top in _model_roots(folder):
        for spec in _scan(root, top, allow_pickle):
            specs.append(with_recipe(spec))
    return specs


def _model_roots(folder: Path) -> list[tuple[Path, Path]]:
    """(where to look, what names are relative to) for ``folder``'s layout."""
    if folder.is_file() and folder.suffix.lower() in (".yaml", ".yml"):
        return _yaml_roots(folder)
    if not folder.is_dir():
        return []
    if (folder / "extra_model_paths.yaml").is_file():
        return _yaml_roots(folder / "extra_model_paths.yaml")
    # a ComfyUI install (models/checkpoints, models/diffusers) or an A1111 one (models/Stable-diffusion)
    known = [(folder.joinpath(*layout), folder) for layout in _KNOWN_LAYOUTS if folder.joinpath(*layout).is_dir()]
    return known or [(folder, folder)]


_KNOWN_LAYOUTS = (("models", "checkpoints"), ("models", "diffusers"), ("models", "Stable-diffusion"))


def _yaml_roots(path: Path) -> list[tuple[Path, Path]]:
    """The checkpoints and diffusers folders ComfyUI's extra_model_paths.yaml lists."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelError(p.ErrorCode.UNKNOWN_MODEL, f"{path}: not a readable YAML file ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(p.ErrorCode.UNKNOWN_MODEL, f"{path}: expected sections such as 'comfyui:' or 'a111:'")
    roots: list[tuple[Path, Path]] = []
    for section, entries in data.items():
        if not isinstance(entries, dict):
            raise ModelError(p.ErrorCode.UNKNOWN_MODEL, f"{path}: section {section!r} must map names to folders")
        base = Path(str(entries.get("base_path", ""))).expanduser()
        if not base.is_absolute():
            base = path.parent / base
        for key in ("checkpoints", "diffusers"):
            for line in str(entries.get(key) or "").splitlines():
                if line.strip():
                    sub = Path(line.strip()).expanduser()
                    roots.append((sub if sub.is_absolute() else base / sub, base))
    return roots


def _scan(root: Path, top: Path, allow_pickle: bool) -> list[ModelSpec]:
    specs: list[ModelSpec] = []
    if not root.is_dir():
        return specs
    for count, path in enumerate(sorted(root.rglob("*"))):
        if count >= _MAX_SCANNED:
            log.warning("%s: stopped looking after %d files", root, _MAX_SCANNED)
            break
        name = str(path.relative_to(top))
        if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES and not _inside_diffusers_folder(path):
            if path.suffix.lower() in PICKLE_SUFFIXES:
                if allow_pickle:
                    specs.append(ModelSpec(name, "file", str(path)))
                continue
            try:
                traits_of(path, read_header(path))
            except CheckpointError as exc:
                log.info("not offered: %s", exc.message)
                continue
            specs.append(ModelSpec(name, "file", str(path)))
        elif path.is_dir() and (path / "model_index.json").exists() and _has_weights(path):
            specs.append(ModelSpec(name, "folder", str(path)))
    return specs


def _inside_diffusers_folder(path: Path) -> bool:
    # weights inside a diffusers folder (unet/diffusion_pytorch_model.safetensors …) are not models of their own
    return any((parent / "model_index.json").exists() for parent in path.parents)


def _has_weights(folder: Path) -> bool:
    return any(any((folder / "unet").glob(pattern)) for pattern in _WEIGHTS)


@dataclass
class LoadedModel:
    """A loaded pipeline and what the engine needs to know about it."""

    spec: ModelSpec
    img2img: Any
    family: str  # "sd" or "sdxl"
    resolution: int
    test_model: bool
    tiny_vae: Any | None
    inpaint_unet: bool
    device: str
    dtype: Any
    recipe: p.Recipe
    notes: tuple[str, ...] = ()  # what the artist should know, e.g. that live mode runs on the full VAE

    @property
    def state(self) -> p.ModelState:
        notes = ("built-in test model: random weights, its output is noise",) if self.test_model else self.notes
        return p.ModelState(
            name=self.spec.name,
            status=p.ModelStatus.READY,
            message="; ".join(notes),
            test_model=self.test_model,
            inpaint=self.inpaint_unet,
            recipe=self.recipe,
        )


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, "--device cuda was asked for but PyTorch sees no CUDA GPU")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, "--device mps was asked for but this PyTorch has no MPS support")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


OnProgress = Callable[[float, str], None]
OnBytes = Callable[[int, int], None]


def recipe_file(spec: ModelSpec, location: str) -> Path | None:
    """Where ``spec``'s recipe file lives: inside a folder, or ``<stem>.img2img_bridge.json`` beside a checkpoint."""
    path = Path(location)
    if spec.source == "file":
        return path.with_name(f"{path.stem}.{RECIPE_FILE}")
    if spec.source in ("folder", "builtin"):
        return path / RECIPE_FILE
    return None


def inspect_model(spec: ModelSpec, location: str) -> tuple[Traits, Overrides]:
    """What ``spec`` is and what its recipe file says, from configs or a checkpoint header alone (no weights)."""
    where = recipe_file(spec, location)
    try:
        overrides = read_overrides(where) if where is not None else Overrides()
    except RecipeError as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, exc.message) from exc
    if spec.source == "file":
        path = Path(location)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            return _pickled_traits(path), overrides
        try:
            traits = traits_of(path, read_header(path))
        except CheckpointError as exc:
            raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, exc.message) from exc
        beside = path.with_suffix("")
        if (beside / "model_index.json").exists():  # a config folder beside the checkpoint knows its native size
            traits = replace(traits, resolution=folder_traits(spec.name, beside).resolution)
    else:
        traits = folder_traits(spec.name, Path(location))
    if overrides.prediction_type is not None:
        traits = replace(traits, prediction_type=overrides.prediction_type)
    return traits, overrides


def folder_traits(name: str, folder: Path) -> Traits:
    """A diffusers folder's traits, from its model_index.json and its UNet, VAE and scheduler configs."""

    def config(relative: str) -> dict[str, Any]:
        path = folder / relative
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, f"{path}: cannot be read as JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, f"{path}: expected a JSON object")
        return data

    index = config("model_index.json")
    pipeline = str(index.get("_class_name", ""))
    if "StableDiffusion" not in pipeline:
        raise ModelError(
            p.ErrorCode.MODEL_LOAD_FAILED,
            f"{folder / 'model_index.json'}: field '_class_name' is {pipeline!r}; the bridge runs Stable Diffusion 1.x, 2.x and XL",
        )
    unet = config("unet/config.json")
    scheduler = config("scheduler/scheduler_config.json")
    vae = config("vae/config.json") if (folder / "vae" / "config.json").exists() else {}
    cross = unet.get("cross_attention_dim", 768)
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    sample = int(unet.get("sample_size", 64))
    return Traits(
        name=name,
        family="sdxl" if "XL" in pipeline else "sd",
        in_channels=int(unet.get("in_channels", 4)),
        sample_size=sample,
        cross_attention_dim=int(cross[0] if isinstance(cross, list) else cross),
        prediction_type=str(scheduler.get("prediction_type", "epsilon")),
        time_cond_proj_dim=unet.get("time_cond_proj_dim"),
        scheduler=str(scheduler.get("_class_name", "")),
        timestep_spacing=str(scheduler.get("timestep_spacing", "")),
        resolution=sample * scale,
    )


def _pickled_traits(path: Path) -> Traits:
    import torch

    try:
        # memory-mapped and weights-only: only the keys and shapes are read, and no code runs
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, f"{path.name}: not a readable checkpoint ({exc})") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    shapes = {k: list(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    try:
        return traits_of(path, shapes)
    except CheckpointError as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, exc.message) from exc


@dataclass(frozen=True)
class LoadPlan:
    """Everything decided before any weights are read: where the files are, what the model is, its recipe."""

    spec: ModelSpec
    location: str
    traits: Traits
    kind: Kind
    recipe: p.Recipe
    test_model: bool


def plan(spec: ModelSpec, *, overrides: Overrides | None = None, on_download: OnBytes | None = None) -> LoadPlan:
    """Find (or download) ``spec`` and decide its recipe: its traits, its recipe file, then ``overrides`` (serve flags).

    Bad recipe files, unknown architectures and truncated checkpoints fail here, before anything is unloaded.
    """
    location = _local_location(spec, on_download)
    traits, from_file = inspect_model(spec, location)
    try:
        recipe, kind = recipe_for(traits, (overrides or Overrides()).over(from_file))
    except RecipeError as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, exc.message) from exc
    return LoadPlan(spec=spec, location=location, traits=traits, kind=kind, recipe=recipe, test_model=bool(from_file.test_model))


def load(
    spec: ModelSpec,
    device: str,
    on_progress: OnProgress | None = None,
    *,
    overrides: Overrides | None = None,
    on_download: OnBytes | None = None,
) -> LoadedModel:
    """Load ``spec`` onto ``device`` with its recipe (see ``plan``)."""
    report = on_progress or (lambda fraction, text: None)
    report(0.05, f"locating {spec.name}")
    return load_planned(plan(spec, overrides=overrides, on_download=on_download), device, report)


def load_planned(planned: LoadPlan, device: str, on_progress: OnProgress | None = None) -> LoadedModel:
    """Read ``planned``'s weights onto ``device`` and set the recipe's scheduler."""
    import torch

    report = on_progress or (lambda fraction, text: None)
    spec, traits, location = planned.spec, planned.traits, planned.location
    dtype = torch.float16 if device in ("cuda", "mps") else torch.float32
    report(0.2, f"loading {spec.name}")
    try:
        if spec.source == "file":
            pipe = _load_single_file(Path(location), traits, dtype)
        else:
            from diffusers import AutoPipelineForImage2Image

            pipe = AutoPipelineForImage2Image.from_pretrained(
                location, dtype=dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False
            )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, f"could not load {spec.name}: {_first_line(exc)}") from exc
    pipe.scheduler = scheduler_for(pipe.scheduler.config, planned.kind)
    report(0.7, "moving weights to " + device)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    tiny_vae = _load_tiny_vae(location, traits.family, device, dtype)
    notes: tuple[str, ...] = ()
    if tiny_vae is None:
        notes = (f"no tiny autoencoder ({FAMILIES[traits.family].taesd_repo}) on this machine: live mode runs on the full VAE, slower",)
    report(1.0, "ready")
    return LoadedModel(
        spec=spec,
        img2img=pipe,
        family=traits.family,
        resolution=planned.recipe.resolution,
        test_model=planned.test_model,
        tiny_vae=tiny_vae,
        inpaint_unet=traits.inpaint,
        device=device,
        dtype=dtype,
        recipe=planned.recipe,
        notes=notes,
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def scheduler_for(config: Any, kind: Kind) -> Any:
    """The recipe's scheduler, built from the model's own scheduler config (its betas and prediction type)."""
    import diffusers

    extra = {} if kind.timestep_spacing is None else {"timestep_spacing": kind.timestep_spacing}
    return getattr(diffusers, kind.scheduler).from_config(config, **extra)


def _local_location(spec: ModelSpec, on_download: OnBytes | None) -> str:
    if spec.source == "builtin":
        return str(ensure_tiny_model())
    if spec.source != "hub":
        return spec.location
    found = download.cached(spec.location)
    if found is not None:
        return found
    if download.offline():
        raise ModelError(
            p.ErrorCode.MODEL_LOAD_FAILED,
            f"downloads are off (HF_HUB_OFFLINE), and model {spec.location} is not in the Hugging Face cache. Fix: run "
            "'img2img-bridge serve' once while online to download it, or pass --model with a local diffusers folder "
            "or .safetensors file (--model tiny starts the built-in test model)",
        )
    try:
        folder = download.download(spec.location, on_download)
        _fetch_tiny_vae(folder)
    except download.DownloadError as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, exc.message) from exc
    return folder


def _fetch_tiny_vae(folder: str) -> None:
    """TAESD / TAESDXL, which live mode and previews use, fetched with the model (a failure only costs speed)."""
    try:
        family = (
            "sdxl" if "XL" in json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8")).get("_class_name", "") else "sd"
        )
        repo = FAMILIES[family].taesd_repo
        if download.cached(repo) is None:
            download.download(repo)
    except (download.DownloadError, OSError, ValueError) as exc:
        log.warning("the tiny autoencoder was not downloaded: %s", getattr(exc, "message", exc))


def _load_single_file(path: Path, traits: Traits, dtype: Any) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    cls = StableDiffusionXLImg2ImgPipeline if traits.family == "sdxl" else StableDiffusionImg2ImgPipeline
    beside = path.with_suffix("")  # a diffusers config folder beside the file, named like it, wins over the shipped configs
    try:
        config = beside if (beside / "model_index.json").exists() else config_folder(architecture(traits))
    except CheckpointError as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, exc.message) from exc
    try:
        return cls.from_single_file(str(path), config=str(config), local_files_only=True, dtype=dtype)
    except Exception as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, f"could not load checkpoint {path.name}: {_first_line(exc)}") from exc


def _load_tiny_vae(location: str, family: str, device: str, dtype: Any) -> Any | None:
    """A tiny autoencoder (TAESD) when its weights are already on disk: beside the model, or in the Hub cache."""
    from diffusers import AutoencoderTiny

    candidates: list[str] = []
    local = Path(location).parent / "taesd" if Path(location).is_file() else Path(location) / "taesd"
    if (local / "config.json").exists():
        candidates.append(str(local))
    cached = download.cached(FAMILIES[family].taesd_repo)
    if cached is not None:
        candidates.append(cached)
    for candidate in candidates:
        try:
            vae = AutoencoderTiny.from_pretrained(candidate, dtype=dtype, local_files_only=True)
        except Exception:
            continue
        return vae.to(device).eval()
    return None
