"""The procedure's arguments: one list that registration, the dialog and scripts share, and their checked values."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Union

from bridge.client import DEFAULT_URL, ClientError, normalize_url

from .errors import PluginError

#: Strength presets: how far the result may move away from the layer.
STRENGTH_PRESETS: dict[str, float] = {"low": 0.3, "medium": 0.5, "high": 0.75}
EXACT = "exact"
MAX_SEED = 2**31 - 1  # GIMP's int arguments are 32-bit signed


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
        "Low, medium or high change; 'exact' uses the Strength value",
        (
            (EXACT, "Exact value"),
            ("low", f"Low ({STRENGTH_PRESETS['low']:.2f})"),
            ("medium", f"Medium ({STRENGTH_PRESETS['medium']:.2f})"),
            ("high", f"High ({STRENGTH_PRESETS['high']:.2f})"),
        ),
        EXACT,
    ),
    DoubleArg("strength", "S_trength", "How much may change: near 0 keeps the layer, 1 ignores it", 0.01, 1.0, 0.5),
    IntArg("steps", "St_eps", "Denoising steps", 1, 100, 20),
    BoolArg("random-seed", "R_andom seed", "Pick a new seed each run (the seed used is reported back)", True),
    IntArg("seed", "See_d", "The seed when Random seed is off; holds the last seed used after a run", 0, MAX_SEED, 0),
    StringArg("model", "_Model", "The bridge's model to use; empty keeps the loaded one", ""),
    StringArg("bridge-url", "_Bridge URL", "Where the bridge listens", DEFAULT_URL),
)


@dataclass(frozen=True)
class JobSettings:
    """The checked values of one run."""

    prompt: str
    negative_prompt: str
    strength: float
    steps: int
    seed: int | None  # None: the bridge picks one and reports it
    model: str
    url: str

    @classmethod
    def from_arguments(cls, get: Callable[[str], Any]) -> JobSettings:
        """Read and check every argument; ``get`` returns an argument's value by name."""
        strength = resolve_strength(str(get("strength-preset")), _number(get, "strength"))
        steps = int(_number(get, "steps"))
        if steps < 1:
            raise PluginError(f"Steps is {steps}; it must be at least 1.")
        seed = None if bool(get("random-seed")) else int(_number(get, "seed"))
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise PluginError(f"Seed is {seed}; it must be between 0 and {MAX_SEED}.")
        url = str(get("bridge-url") or "").strip() or DEFAULT_URL
        try:
            url = normalize_url(url)
        except ClientError as exc:
            raise PluginError(f"Bridge URL: {exc.message}") from exc
        return cls(
            prompt=str(get("prompt") or "").strip(),
            negative_prompt=str(get("negative-prompt") or "").strip(),
            strength=strength,
            steps=steps,
            seed=seed,
            model=str(get("model") or "").strip(),
            url=url,
        )

    def with_seed(self, rng: random.Random) -> JobSettings:
        """A fixed seed: the one asked for, else a random one (so it can be reported and reused)."""
        return self if self.seed is not None else replace(self, seed=rng.randint(0, MAX_SEED))


def resolve_strength(preset: str, exact: float) -> float:
    """The strength to use: a preset's value, or ``exact`` for the 'exact' preset."""
    if preset in STRENGTH_PRESETS:
        return STRENGTH_PRESETS[preset]
    if preset != EXACT:
        names = ", ".join([EXACT, *STRENGTH_PRESETS])
        raise PluginError(f"Strength preset {preset!r} is unknown; use one of: {names}.")
    if not 0.0 < exact <= 1.0:
        raise PluginError(f"Strength is {exact}; it must be above 0 and at most 1.")
    return exact


def preset_for(strength: float) -> str:
    """The preset whose value is ``strength``, else 'exact'."""
    return next((name for name, value in STRENGTH_PRESETS.items() if abs(value - strength) < 1e-6), EXACT)


def linked_strength(changed: str, preset: str, strength: float) -> tuple[str, float]:
    """The dialog's preset and strength after the user changed one of them (``changed`` names which).

    Picking a preset moves the strength to its value; moving the strength shows the preset it matches, or 'exact'.
    """
    if changed == "strength-preset":
        return preset, STRENGTH_PRESETS.get(preset, strength)
    return preset_for(strength), strength


def _number(get: Callable[[str], Any], name: str) -> float:
    value = get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PluginError(f"{name} must be a number, not {value!r}.")
    return float(value)
