"""How each model wants to be driven: known kinds with their published numbers, and classification of unknown ones.

A model's :class:`Traits` are read from its configuration files (or a single
file's tensor shapes) without loading weights; :func:`classify` maps them to a
:class:`Kind` from ``KINDS``, whose numbers come from the model cards and
diffusers documentation cited in docs/models.md. A recipe file beside the
model, or ``serve --recipe KEY=VALUE``, overrides single fields.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .editor import protocol as p

RECIPE_FILE = "img2img_bridge.json"  # inside a diffusers folder; beside a checkpoint: <stem>.img2img_bridge.json

# schedulers a recipe may name; the engine runs the named one, built from the model's own scheduler config
SCHEDULERS = (
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "LCMScheduler",
    "TCDScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "UniPCMultistepScheduler",
)
SPACINGS = ("leading", "trailing", "linspace")


class RecipeError(Exception):
    """A recipe file or flag that cannot be used; ``message`` names the file and the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Kind:
    """A family of checkpoints that share a recipe; ``source`` is where its numbers come from."""

    name: str
    family: str  # "sd" or "sdxl"
    steps: int
    guidance: float
    strength: float
    live_steps: int
    live_strength: float
    resolution: int
    scheduler: str
    timestep_spacing: str | None  # None: keep the model's own
    source: str


# where each kind's numbers come from (docs/models.md links them)
_SOURCES = {
    "sd-turbo": "stabilityai/sd-turbo card: img2img with 2 steps, strength 0.5, guidance 0.0 at 512×512 (1 step runs)",
    "sdxl-turbo": "stabilityai/sdxl-turbo card and diffusers' SDXL Turbo guide: img2img 2 steps, strength 0.5, guidance 0; 512 px",
    "sd15": "runwayml/stable-diffusion-v1-5 card (512); diffusers StableDiffusionImg2ImgPipeline guidance_scale=7.5",
    "sd15-inpaint": "runwayml/stable-diffusion-inpainting card (512); guidance_scale=7.5",
    "sd2": "stabilityai/stable-diffusion-2-base card (512, epsilon); guidance_scale=7.5",
    "sd2-v": "stabilityai/stable-diffusion-2-1 card (768, v-prediction); guidance_scale=7.5",
    "sd2-inpaint": "stabilityai/stable-diffusion-2-inpainting card (512); guidance_scale=7.5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0 card (1024); diffusers SDXL pipelines guidance_scale=5.0, 7.5 in the img2img guide",
    "sdxl-inpaint": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1 card (1024; its example: guidance 8.0, strength 0.99)",
    "sd-lcm": "SimianLuo/LCM_Dreamshaper_v7 card: LCMScheduler, 4 steps, guidance_scale 8.0 given as an embedding",
    "sdxl-lcm": "latent-consistency/lcm-sdxl card: LCMScheduler, 4 steps, guidance_scale 8.0 given as an embedding",
    "sd-lcm-lora": "latent-consistency/lcm-lora-sdv1-5 card: LCMScheduler, 2-8 steps, guidance off or 1-2",
    "sdxl-lcm-lora": "latent-consistency/lcm-lora-sdxl card: LCMScheduler, 2-8 steps, guidance off or 1-2",
    "sdxl-lightning": "ByteDance/SDXL-Lightning card: Euler with trailing timesteps, guidance 0, the steps its name says",
    "sdxl-hyper": "ByteDance/Hyper-SD card: N-step checkpoints with trailing timesteps and guidance 0",
    "sd-hyper": "ByteDance/Hyper-SD card: N-step checkpoints with trailing timesteps and guidance 0",
}
_EULER, _EULER_A, _LCM = "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LCMScheduler"

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        # name           family  steps guid. str.  live  live-str. res.  scheduler  spacing
        Kind("sd-turbo", "sd", 2, 0.0, 0.5, 2, 0.5, 512, _EULER, "trailing", _SOURCES["sd-turbo"]),
        Kind("sdxl-turbo", "sdxl", 2, 0.0, 0.5, 2, 0.5, 512, _EULER_A, "trailing", _SOURCES["sdxl-turbo"]),
        Kind("sd15", "sd", 30, 7.5, 0.6, 10, 0.4, 512, _EULER, None, _SOURCES["sd15"]),
        Kind("sd15-inpaint", "sd", 30, 7.5, 0.75, 10, 0.4, 512, _EULER, None, _SOURCES["sd15-inpaint"]),
        Kind("sd2", "sd", 30, 7.5, 0.6, 10, 0.4, 512, _EULER, None, _SOURCES["sd2"]),
        Kind("sd2-v", "sd", 30, 7.5, 0.6, 10, 0.4, 768, _EULER, None, _SOURCES["sd2-v"]),
        Kind("sd2-inpaint", "sd", 30, 7.5, 0.75, 10, 0.4, 512, _EULER, None, _SOURCES["sd2-inpaint"]),
        Kind("sdxl", "sdxl", 30, 6.0, 0.5, 10, 0.4, 1024, _EULER, None, _SOURCES["sdxl"]),
        Kind("sdxl-inpaint", "sdxl", 30, 6.0, 0.75, 10, 0.4, 1024, _EULER, None, _SOURCES["sdxl-inpaint"]),
        Kind("sd-lcm", "sd", 4, 8.0, 0.5, 4, 0.5, 512, _LCM, None, _SOURCES["sd-lcm"]),
        Kind("sdxl-lcm", "sdxl", 4, 8.0, 0.5, 4, 0.5, 1024, _LCM, None, _SOURCES["sdxl-lcm"]),
        Kind("sd-lcm-lora", "sd", 4, 1.0, 0.5, 4, 0.5, 512, _LCM, None, _SOURCES["sd-lcm-lora"]),
        Kind("sdxl-lcm-lora", "sdxl", 4, 1.0, 0.5, 4, 0.5, 1024, _LCM, None, _SOURCES["sdxl-lcm-lora"]),
        Kind("sdxl-lightning", "sdxl", 4, 0.0, 0.5, 4, 0.5, 1024, _EULER, "trailing", _SOURCES["sdxl-lightning"]),
        Kind("sdxl-hyper", "sdxl", 4, 0.0, 0.5, 4, 0.5, 1024, _EULER, "trailing", _SOURCES["sdxl-hyper"]),
        Kind("sd-hyper", "sd", 4, 0.0, 0.5, 4, 0.5, 512, _EULER, "trailing", _SOURCES["sd-hyper"]),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Traits:
    """What a model's configuration says about it, read without loading its weights."""

    name: str  # repo id, folder or file name: distilled variants are told apart by name
    family: str  # "sd" or "sdxl"
    in_channels: int = 4  # 9: an inpainting UNet
    sample_size: int = 64  # latent side; × 8 = native resolution
    cross_attention_dim: int = 768
    prediction_type: str = "epsilon"
    time_cond_proj_dim: int | None = None  # set on distilled LCM UNets: guidance goes in as an embedding
    scheduler: str = ""
    timestep_spacing: str = ""
    resolution: int | None = None  # native side from the configs; None for single files (the kind's is used)

    @property
    def inpaint(self) -> bool:
        return self.in_channels == 9


def _name_says(name: str, pattern: str) -> bool:
    # substrings, as checkpoint names run words together ("juggernautXL_v9Rdphoto2Lightning")
    return re.search(pattern, name.lower()) is not None


def _step_count(name: str) -> int | None:
    found = re.search(r"(\d+)[ _-]?steps?", name.lower())
    return int(found.group(1)) if found and 1 <= int(found.group(1)) <= 16 else None


def classify(traits: Traits) -> Kind:
    """The kind a model is taken for: its name first (distillations keep their base's architecture), then its configs."""
    xl = traits.family == "sdxl"
    prefix = "sdxl" if xl else "sd"
    name = traits.name
    if traits.time_cond_proj_dim is not None:
        return KINDS[f"{prefix}-lcm"]
    if _name_says(name, r"lcm"):
        return KINDS[f"{prefix}-lcm-lora"]
    if _name_says(name, r"lightning") and xl:
        return _with_steps(KINDS["sdxl-lightning"], name)
    if _name_says(name, r"hyper[\W_]*(sd|xl)"):  # not "HyperRealism"
        return _with_steps(KINDS[f"{prefix}-hyper"], name)
    if _name_says(name, r"turbo"):
        return KINDS["sdxl-turbo" if xl else "sd-turbo"]
    if xl:
        return KINDS["sdxl-inpaint" if traits.inpaint else "sdxl"]
    if traits.cross_attention_dim == 1024:  # OpenCLIP ViT-H: SD 2.x
        if traits.inpaint:
            return KINDS["sd2-inpaint"]
        return KINDS["sd2-v" if traits.prediction_type == "v_prediction" else "sd2"]
    return KINDS["sd15-inpaint" if traits.inpaint else "sd15"]


def _with_steps(kind: Kind, name: str) -> Kind:
    steps = _step_count(name)
    if steps is None:
        return kind
    return replace(kind, steps=steps, live_steps=min(steps, kind.live_steps))


@dataclass(frozen=True)
class Overrides:
    """Recipe fields set by a recipe file or ``serve --recipe``; None keeps what classification gave."""

    kind: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    live_steps: int | None = None
    live_strength: float | None = None
    resolution: int | None = None
    scheduler: str | None = None
    timestep_spacing: str | None = None
    prediction_type: str | None = None
    test_model: bool | None = None
    origin: dict[str, str] = field(default_factory=dict, compare=False)  # field -> where it was set

    def over(self, base: Overrides) -> Overrides:
        """These overrides, falling back to ``base`` field by field."""
        merged = {f.name: _pick(getattr(self, f.name), getattr(base, f.name)) for f in fields(self) if f.name != "origin"}
        return Overrides(**merged, origin={**base.origin, **self.origin})


def parse_overrides(raw: dict[str, Any], where: str) -> Overrides:
    """Check one recipe file's (or the flags') fields; unknown keys and bad values raise RecipeError naming ``where``."""
    known = {f.name: f for f in fields(Overrides) if f.name != "origin"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise RecipeError(f"{where}: unknown field {key!r} (known: {', '.join(known)})")
        values[key] = _check(key, value, where)
    return Overrides(**values, origin=dict.fromkeys(values, where))


def _check(key: str, value: Any, where: str) -> Any:
    def bad(what: str) -> RecipeError:
        return RecipeError(f"{where}: field {key!r} must be {what}, not {value!r}")

    if key in ("steps", "live_steps"):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 200:
            raise bad("a whole number from 1 to 200")
        return value
    if key == "resolution":
        if isinstance(value, bool) or not isinstance(value, int) or not 64 <= value <= 4096 or value % 8:
            raise bad("a multiple of 8 from 64 to 4096")
        return value
    if key in ("strength", "live_strength", "guidance"):
        top = 30.0 if key == "guidance" else 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a number")
        if not (0.0 <= value <= top) or (key != "guidance" and value == 0):
            raise bad(f"a number in {'[0, 30]' if key == 'guidance' else '(0, 1]'}")
        return float(value)
    if key == "kind":
        if value not in KINDS:
            raise bad("one of " + ", ".join(KINDS))
        return value
    if key == "scheduler":
        if value not in SCHEDULERS:
            raise bad("one of " + ", ".join(SCHEDULERS))
        return value
    if key == "timestep_spacing":
        if value not in SPACINGS:
            raise bad("one of " + ", ".join(SPACINGS))
        return value
    if key == "prediction_type":
        if value not in ("epsilon", "v_prediction"):
            raise bad("'epsilon' or 'v_prediction'")
        return value
    if not isinstance(value, bool):  # test_model
        raise bad("true or false")
    return value


def read_overrides(path: Path) -> Overrides:
    """The recipe file at ``path``, or no overrides when there is none."""
    if not path.is_file():
        return Overrides()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecipeError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: must hold a JSON object of recipe fields")
    return parse_overrides(raw, str(path))


def parse_flags(pairs: list[str]) -> Overrides:
    """``serve --recipe KEY=VALUE`` pairs, values read as JSON where they parse (``steps=4``, ``scheduler=LCMScheduler``)."""
    raw: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise RecipeError(f"--recipe {pair}: expected KEY=VALUE")
        try:
            raw[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            raw[key.strip()] = text
    return parse_overrides(raw, "--recipe")


def recipe_for(traits: Traits, overrides: Overrides) -> tuple[p.Recipe, Kind]:
    """The recipe ``traits`` get, with ``overrides`` applied; the kind says which scheduler spacing to run."""
    if overrides.prediction_type is not None:
        traits = replace(traits, prediction_type=overrides.prediction_type)
    kind = KINDS[overrides.kind] if overrides.kind is not None else classify(traits)
    if kind.family != traits.family:
        where = overrides.origin.get("kind", "recipe")
        raise RecipeError(f"{where}: field 'kind' is {kind.name!r}, a {kind.family} recipe, but {traits.name} is an {traits.family} model")
    kind = replace(
        kind,
        steps=_pick(overrides.steps, kind.steps),
        guidance=_pick(overrides.guidance, kind.guidance),
        strength=_pick(overrides.strength, kind.strength),
        live_steps=_pick(overrides.live_steps, kind.live_steps),
        live_strength=_pick(overrides.live_strength, kind.live_strength),
        resolution=_pick(overrides.resolution, traits.resolution or kind.resolution),
        scheduler=_pick(overrides.scheduler, kind.scheduler),
        timestep_spacing=_pick(overrides.timestep_spacing, kind.timestep_spacing),
    )
    recipe = p.Recipe(
        steps=kind.steps,
        guidance=kind.guidance,
        strength=kind.strength,
        live_steps=kind.live_steps,
        live_strength=kind.live_strength,
        resolution=kind.resolution,
        scheduler=kind.scheduler,
        inpaint=traits.inpaint,
        family=traits.family,
        kind=kind.name,
    )
    return recipe, kind


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value
