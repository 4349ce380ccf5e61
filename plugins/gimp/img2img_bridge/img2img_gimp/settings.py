"""The procedure's arguments: one list that registration, the dialog and scripts share, and their checked values."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Union

from .bridge_package import DEFAULT_URL, MODEL_DEFAULT, PRESET_LABELS, STRENGTH_PRESETS, ClientError, normalize_url, preset_strength
from .bridge_package import preset_for as _preset_for
from .errors import PluginError

EXACT = "exact"
MAX_SEED = 2**31 - 1  # GIMP's int arguments are 32-bit signed
MAX_STEPS = 100
MAX_COUNT = 8  # the bridge's default ``limits.max_count``
#: Scripts say "the model's recipe" with these values (GIMP arguments cannot be unset).
AUTO_STEPS = 0
AUTO_GUIDANCE = -1.0
AUTO_STRENGTH = 0.0


@dataclass(frozen=True)
class StringArg:
    name: str
    label: str
    blurb: str
    default: str


@dataclass(frozen=True)
class DoubleArg:
    name: str
    label: str
    blurb: str
    minimum: float
    maximum: float
    default: float


@dataclass(frozen=True)
class IntArg:
    name: str
    label: str
    blurb: str
    minimum: int
    maximum: int
    default: int


@dataclass(frozen=True)
class BoolArg:
    name: str
    label: str
    blurb: str
    default: bool


@dataclass(frozen=True)
class ChoiceArg:
    name: str
    label: str
    blurb: str
    choices: tuple[tuple[str, str], ...]  # (value, label)
    default: str


Argument = Union[StringArg, DoubleArg, IntArg, BoolArg, ChoiceArg]

ARGUMENTS: tuple[Argument, ...] = (
    StringArg("prompt", "_Prompt", "What the result should show", ""),
    StringArg("negative-prompt", "_Negative prompt", "What the result should not show", ""),
    ChoiceArg(
        "strength-preset",
        "Stren_gth preset",
        "The model's default, a low, medium or high change, or 'exact': the Strength value (0: the model's default)",
        (
            (EXACT, "Exact value"),
            (MODEL_DEFAULT, PRESET_LABELS[MODEL_DEFAULT]),
            *((name, f"{PRESET_LABELS[name]} ({value:.2f})") for name, value in STRENGTH_PRESETS.items()),
        ),
        EXACT,
    ),
    DoubleArg(
        "strength",
        "S_trength",
        "How much may change: near 0 keeps the layer, 1 ignores it; 0 is the model's default",
        AUTO_STRENGTH,
        1.0,
        AUTO_STRENGTH,
    ),
    IntArg("steps", "St_eps", "Denoising steps of the full schedule; 0 is the model's default", AUTO_STEPS, MAX_STEPS, AUTO_STEPS),
    DoubleArg(
        "guidance",
        "Gu_idance",
        "Classifier-free guidance (1 or less: off); -1 is the model's default",
        AUTO_GUIDANCE,
        30.0,
        AUTO_GUIDANCE,
    ),
    BoolArg("random-seed", "R_andom seed", "Pick a new seed each run (the seed used is reported back)", True),
    IntArg("seed", "See_d", "The seed when Random seed is off; holds the last seed used after a run", 0, MAX_SEED, 0),
    IntArg(
        "count", "_Variations", "How many results, with seeds seed, seed+1, ...; more than one arrive in a layer group", 1, MAX_COUNT, 1
    ),
    BoolArg("match-seams", "Match seam colo_urs", "Match the regenerated area's colours to the pixels around it (selections)", True),
    StringArg("model", "_Model", "The bridge's model to use; empty keeps the loaded one", ""),
    StringArg("bridge-url", "_Bridge URL", "Where the bridge listens", DEFAULT_URL),
)


@dataclass(frozen=True)
class JobSettings:
    """The checked values of one run."""

    prompt: str
    negative_prompt: str
    strength: float | None  # None (and steps, guidance): the model's recipe
    steps: int | None
    guidance: float | None
    seed: int | None  # None: the bridge picks one and reports it
    model: str
    url: str
    match_seams: bool = True  # with a selection: colours matched to the kept pixels around it
    count: int = 1  # variations, seeds seed, seed + 1, ...

    @classmethod
    def from_arguments(cls, get: Callable[[str], Any]) -> JobSettings:
        """Read and check every argument; ``get`` returns an argument's value by name."""
        strength = resolve_strength(str(get("strength-preset")), _number(get, "strength"))
        steps = int(_number(get, "steps"))
        if not AUTO_STEPS <= steps <= MAX_STEPS:
            raise PluginError(f"Steps is {steps}; it must be between 1 and {MAX_STEPS}, or {AUTO_STEPS} for the model's default.")
        guidance = _number(get, "guidance")
        if guidance > 30.0:
            raise PluginError(f"Guidance is {guidance}; it must be at most 30, or negative for the model's default.")
        seed = None if bool(get("random-seed")) else int(_number(get, "seed"))
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise PluginError(f"Seed is {seed}; it must be between 0 and {MAX_SEED}.")
        count = int(_number(get, "count"))
        if not 1 <= count <= MAX_COUNT:
            raise PluginError(f"Variations is {count}; it must be between 1 and {MAX_COUNT}.")
        url = str(get("bridge-url") or "").strip() or DEFAULT_URL
        try:
            url = normalize_url(url)
        except ClientError as exc:
            raise PluginError(f"Bridge URL: {exc.message}") from exc
        return cls(
            prompt=str(get("prompt") or "").strip(),
            negative_prompt=str(get("negative-prompt") or "").strip(),
            strength=strength,
            steps=None if steps == AUTO_STEPS else steps,
            guidance=None if guidance < 0 else guidance,
            seed=seed,
            model=str(get("model") or "").strip(),
            url=url,
            match_seams=bool(get("match-seams")),
            count=count,
        )

    def with_seed(self, rng: random.Random) -> JobSettings:
        """A fixed seed: the one asked for, else a random one (so it can be reported and reused)."""
        return self if self.seed is not None else replace(self, seed=rng.randint(0, MAX_SEED))


def resolve_strength(preset: str, exact: float) -> float | None:
    """The strength to send: a preset's value, or ``exact`` for the 'exact' preset; None for the model's default."""
    if preset != EXACT:
        try:
            return preset_strength(preset)
        except KeyError:
            names = ", ".join([EXACT, MODEL_DEFAULT, *STRENGTH_PRESETS])
            raise PluginError(f"Strength preset {preset!r} is unknown; use one of: {names}.") from None
    if exact == AUTO_STRENGTH:
        return None
    if not 0.0 < exact <= 1.0:
        raise PluginError(f"Strength is {exact}; it must be above 0 and at most 1, or {AUTO_STRENGTH:g} for the model's default.")
    return exact


def preset_for(strength: float) -> str:
    """The preset whose value is ``strength`` (the model default for 0), else 'exact'."""
    return _preset_for(None if strength == AUTO_STRENGTH else strength) or EXACT


def opening_strength(preset: str, strength: float) -> tuple[str, float]:
    """The preset and strength the dialog opens with, so that it shows what would be sent.

    A preset shows the strength it stands for (last values from a script can pair 'medium' with 0); 'exact' (the
    scripts' default) shows the preset its strength matches, 0 as the model's default.
    """
    if preset == EXACT:
        return preset_for(strength), strength
    return linked_strength("strength-preset", preset, strength)


def linked_strength(changed: str, preset: str, strength: float) -> tuple[str, float]:
    """The dialog's preset and strength after the user changed one of them (``changed`` names which).

    Picking a preset moves the strength to its value (0 for the model's default); moving the strength shows the
    preset it matches, or 'exact'.
    """
    if changed == "strength-preset":
        if preset != MODEL_DEFAULT and preset not in STRENGTH_PRESETS:
            return preset, strength
        value = preset_strength(preset)
        return preset, AUTO_STRENGTH if value is None else value
    return preset_for(strength), strength


def _number(get: Callable[[str], Any], name: str) -> float:
    value = get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PluginError(f"{name} must be a number, not {value!r}.")
    return float(value)
