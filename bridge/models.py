"""Finding and loading models: the built-in tiny model, Hub repo ids, diffusers folders, single files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import protocol as p
from .tiny_model import TINY_MODEL_NAME, ensure_tiny_model

DEFAULT_MODEL = "stabilityai/sd-turbo"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
_TAESD_REPOS = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}
_SDXL_KEY = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"


class ModelError(Exception):
    """A model that cannot be found or loaded; ``message`` says how to fix it."""

    def __init__(self, code: p.ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: ``source`` is builtin, hub, folder or file."""

    name: str
    source: str
    location: str

    @property
    def info(self) -> p.ModelInfo:
        return p.ModelInfo(name=self.name, source=self.source, test_model=self.source == "builtin")


def resolve(name: str, catalog: list[ModelSpec] | None = None) -> ModelSpec:
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
        return ModelSpec(path.name, "file", str(path))
    if name.count("/") == 1 and not name.startswith(("/", ".", "~")):
        return ModelSpec(name, "hub", name)
    raise ModelError(
        p.ErrorCode.UNKNOWN_MODEL,
        f"unknown model {name!r}: give a Hugging Face repo id (org/name), a diffusers folder, a .safetensors/.ckpt file, or 'tiny'",
    )


def scan_models_dir(folder: Path) -> list[ModelSpec]:
    """Every checkpoint file and diffusers folder below ``folder`` (ComfyUI's and A1111's layouts included)."""
    specs: list[ModelSpec] = []
    if not folder.is_dir():
        return specs
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
            name = str(path.relative_to(folder))
            if _looks_like_component(path):
                continue
            specs.append(ModelSpec(name, "file", str(path)))
        elif path.is_dir() and (path / "model_index.json").exists():
            specs.append(ModelSpec(str(path.relative_to(folder)), "folder", str(path)))
    return specs


def _looks_like_component(path: Path) -> bool:
    # weights inside a diffusers folder (unet/diffusion_pytorch_model.safetensors …) are not models of their own
    return any((parent / "model_index.json").exists() for parent in path.parents)


@dataclass
class LoadedModel:
    """Pipelines sharing one set of weights, and what the engine needs to know about them."""

    spec: ModelSpec
    img2img: Any
    inpaint: Any | None
    family: str  # "sd" or "sdxl"
    resolution: int
    test_model: bool
    tiny_vae: Any | None
    inpaint_unet: bool
    device: str
    dtype: Any
    recipe: p.Recipe

    @property
    def state(self) -> p.ModelState:
        return p.ModelState(
            name=self.spec.name,
            status=p.ModelStatus.READY,
            message="built-in test model: random weights, its output is noise" if self.test_model else "",
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


def load(spec: ModelSpec, device: str, on_progress: Callable[[float, str], None] | None = None) -> LoadedModel:
    """Load ``spec`` onto ``device``: image-to-image and inpainting pipelines sharing one set of weights."""
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    report = on_progress or (lambda fraction, text: None)
    dtype = torch.float16 if device in ("cuda", "mps") else torch.float32
    report(0.05, f"locating {spec.name}")
    location = _local_location(spec)
    report(0.2, f"loading {spec.name}")
    try:
        if spec.source == "file":
            img2img = _load_single_file(Path(location), dtype)
        else:
            img2img = AutoPipelineForImage2Image.from_pretrained(
                location, dtype=dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False
            )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(p.ErrorCode.MODEL_LOAD_FAILED, f"could not load {spec.name}: {exc}") from exc
    report(0.7, "moving weights to " + device)
    img2img.to(device)
    img2img.set_progress_bar_config(disable=True)
    family = "sdxl" if "XL" in type(img2img).__name__ else "sd"
    inpaint_unet = img2img.unet.config.in_channels == 9
    inpaint = AutoPipelineForInpainting.from_pipe(img2img) if inpaint_unet else None
    resolution = int(img2img.unet.config.sample_size) * int(img2img.vae_scale_factor)
    meta = _bridge_meta(location)
    tiny_vae = _load_tiny_vae(location, family, device, dtype)
    resolution = int(meta.get("resolution", resolution))
    recipe = p.Recipe(
        steps=20,
        guidance=7.0,
        strength=0.5,
        live_steps=4,
        live_strength=0.5,
        resolution=resolution,
        scheduler=type(img2img.scheduler).__name__,
        inpaint=inpaint_unet,
        family=family,
        kind=family,
    )
    report(1.0, "ready")
    return LoadedModel(
        spec=spec,
        img2img=img2img,
        inpaint=inpaint,
        family=family,
        resolution=resolution,
        test_model=bool(meta.get("test_model", False)),
        tiny_vae=tiny_vae,
        inpaint_unet=inpaint_unet,
        device=device,
        dtype=dtype,
        recipe=recipe,
    )


def _local_location(spec: ModelSpec) -> str:
    if spec.source == "builtin":
        return str(ensure_tiny_model())
    if spec.source != "hub":
        return spec.location
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(spec.location, local_files_only=True)
    except Exception:
        pass
    if any(os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE") for var in ("HF_HUB_OFFLINE", "IMG2IMG_BRIDGE_OFFLINE")):
        raise ModelError(
            p.ErrorCode.MODEL_LOAD_FAILED, _missing_hint(spec.location, "the Hugging Face cache has no copy and downloads are off")
        )
    try:
        # tqdm progress bars show on the server's console while the weights download
        return snapshot_download(
            spec.location,
            allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors"],
            ignore_patterns=["*.fp16.*", "*ema*", "*.ckpt", "*.bin"],
        )
    except Exception as exc:
        raise ModelError(
            p.ErrorCode.MODEL_LOAD_FAILED, _missing_hint(spec.location, f"downloading failed ({exc.__class__.__name__})")
        ) from exc


def _missing_hint(repo: str, why: str) -> str:
    return (
        f"model {repo} is not available: {why}. Fix: run 'img2img-bridge serve' once while online to download it, "
        f"or pass --model with a local diffusers folder or .safetensors file (--model tiny starts the built-in test model)"
    )


def _load_single_file(path: Path, dtype: Any) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    cls = StableDiffusionXLImg2ImgPipeline if _is_sdxl_checkpoint(path) else StableDiffusionImg2ImgPipeline
    config = path.with_suffix("")  # a diffusers folder beside the file, named like it, supplies configs offline
    kwargs: dict[str, Any] = {"dtype": dtype}
    if (config / "model_index.json").exists():
        kwargs["config"] = str(config)
        kwargs["local_files_only"] = True
    try:
        return cls.from_single_file(str(path), **kwargs)
    except Exception as exc:
        raise ModelError(
            p.ErrorCode.MODEL_LOAD_FAILED,
            f"could not load checkpoint {path.name}: {exc}. Single-file checkpoints need their base model's configuration: "
            f"it is read from the Hugging Face cache, or from a diffusers folder named {config.name} beside the file",
        ) from exc


def _is_sdxl_checkpoint(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return _SDXL_KEY in set(fh.keys())
    import torch

    # memory-mapped: only the keys are read, not gigabytes of weights
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    return _SDXL_KEY in state


def _bridge_meta(location: str) -> dict[str, Any]:
    meta = Path(location) / "img2img_bridge.json"
    if meta.is_file():
        return dict(json.loads(meta.read_text(encoding="utf-8")))
    return {}


def _load_tiny_vae(location: str, family: str, device: str, dtype: Any) -> Any | None:
    """A tiny autoencoder (TAESD) when its weights are already on disk: beside the model, or in the Hub cache."""
    from diffusers import AutoencoderTiny

    candidates: list[str] = []
    local = Path(location).parent / "taesd" if Path(location).is_file() else Path(location) / "taesd"
    if (local / "config.json").exists():
        candidates.append(str(local))
    candidates.append(_TAESD_REPOS[family])
    for candidate in candidates:
        try:
            vae = AutoencoderTiny.from_pretrained(candidate, dtype=dtype, local_files_only=True)
        except Exception:
            continue
        return vae.to(device).eval()
    return None
