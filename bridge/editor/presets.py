"""What both plug-ins offer the artist: one set of strength presets, and the model's recipe shown as "auto".

Editor-side: standard library and ``protocol`` only, Python 3.10+. A setting the
artist left at "auto" is sent as None, so the bridge applies the model's recipe
(its live recipe for live jobs); these helpers only say what that will be.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import protocol as p

#: Strength presets, low to high. 0.3 retouches texture and light but keeps shapes and colours;
#: 0.55 is the middle of the 0.5-0.6 that img2img guides recommend for restyling while the layout holds;
#: 0.8 keeps only the composition (a rough sketch becomes a picture). Above ~0.85 the source is barely used.
STRENGTH_PRESETS: dict[str, float] = {"low": 0.3, "medium": 0.55, "high": 0.8}
#: The preset that leaves strength to the model's recipe.
MODEL_DEFAULT = "model"
PRESET_LABELS: dict[str, str] = {MODEL_DEFAULT: "Model default", "low": "Low", "medium": "Medium", "high": "High"}
AUTO = "auto"


def recipe_for(model: str, models: Sequence[p.ModelInfo], current: p.ModelState) -> p.Recipe | None:
    """The recipe of ``model`` ("" = the loaded one): the loaded model's own once ready, else the model list's, else None."""
    name = model or current.name
    if name and name == current.name and current.recipe is not None:
        return current.recipe
    return next((m.recipe for m in models if m.name == name), None)


def preset_strength(preset: str) -> float | None:
    """A preset's strength; None for the model default. Raises KeyError for an unknown preset."""
    return None if preset == MODEL_DEFAULT else STRENGTH_PRESETS[preset]


def preset_for(strength: float | None) -> str | None:
    """The preset whose value ``strength`` is (None: the model default), else None."""
    if strength is None:
        return MODEL_DEFAULT
    return next((name for name, value in STRENGTH_PRESETS.items() if abs(value - strength) < 1e-6), None)


def auto_steps(recipe: p.Recipe | None, live: bool = False) -> str:
    """``"auto (2)"``: the steps the model's (live) recipe schedules; plain "auto" while the recipe is unknown."""
    return AUTO if recipe is None else f"{AUTO} ({recipe.settings(live)[0]})"


def auto_guidance(recipe: p.Recipe | None) -> str:
    """``"auto (off)"`` for distilled models (guidance ≤ 1 turns classifier-free guidance off), ``"auto (7.5)"`` else."""
    if recipe is None:
        return AUTO
    return f"{AUTO} ({describe_guidance(recipe.guidance)})"


def auto_strength(recipe: p.Recipe | None, live: bool = False) -> str:
    return AUTO if recipe is None else f"{AUTO} ({recipe.settings(live)[2]:.2f})"


def describe_guidance(guidance: float) -> str:
    return "off" if guidance <= 1.0 else f"{guidance:g}"


def describe_used(steps: int | None, guidance: float | None, strength: float | None) -> str:
    """What a result ran with, from its ``Result`` fields: ``"2 steps, guidance off, strength 0.50"``."""
    parts = []
    if steps is not None:
        parts.append(f"{steps} steps")
    if guidance is not None:
        parts.append(f"guidance {describe_guidance(guidance)}")
    if strength is not None:
        parts.append(f"strength {strength:.2f}")
    return ", ".join(parts)
