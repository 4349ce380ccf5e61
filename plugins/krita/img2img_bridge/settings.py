"""What the docker remembers between sessions, and how it is stored as strings."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Mapping

from .bridge_package import AUTO, DEFAULT_URL, preset_strength


class Source(Enum):
    """What is sent to the bridge."""

    LAYER = "layer"  # the whole active layer (or the visible canvas)
    SELECTION = "selection"  # the selection's box plus context, regenerated inside the selection
    BACKGROUND = "background"  # everything but the selection, which is kept pixel-exact


SOURCE_LABELS = {
    Source.LAYER: "Layer",
    Source.SELECTION: "Selection",
    Source.BACKGROUND: "Replace background",
}

MAX_SEED = 2**32 - 1
MAX_STEPS = 100
MAX_GUIDANCE = 30.0
MAX_COUNT = 8  # the bridge's default ``limits.max_count``
#: Settings written before recipes (no ``format`` key) stored every number even when the artist never chose it.
FORMAT = "2"
_RECIPE_FIELDS: dict[str, type] = {"strength": float, "steps": int, "guidance": float, "live_steps": int}


@dataclass(frozen=True)
class Settings:
    """None for strength, steps, guidance or live steps: "auto", the model's recipe (its live recipe in live mode)."""

    url: str = DEFAULT_URL
    token: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    strength: float | None = None  # also live mode's when set
    steps: int | None = None
    guidance: float | None = None
    fixed_seed: bool = False
    seed: int = 0
    model: str = ""
    source: Source = Source.LAYER
    from_canvas: bool = False  # read the visible canvas (all layers) instead of the active layer
    live_steps: int | None = None
    live_on_canvas: bool = False  # live results also go to the [Preview] layer, not only the docker
    match_seams: bool = True  # selection and background jobs: colours matched to the kept pixels around them
    count: int = 1  # variations of a one-shot job, seeds seed, seed + 1, ...

    @property
    def request_seed(self) -> int | None:
        """The seed to ask for: None lets the bridge pick one (and report it)."""
        return self.seed if self.fixed_seed else None

    def with_preset(self, name: str) -> Settings:
        """A preset of ``bridge.editor.presets`` (``MODEL_DEFAULT``: auto)."""
        return replace(self, strength=preset_strength(name))

    def to_strings(self) -> dict[str, str]:
        out: dict[str, str] = {"format": FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = AUTO
            elif isinstance(value, Enum):
                out[f.name] = str(value.value)
            elif isinstance(value, bool):
                out[f.name] = "true" if value else "false"
            else:
                out[f.name] = str(value)
        return out

    @classmethod
    def from_strings(cls, stored: Mapping[str, str]) -> Settings:
        """Read what ``to_strings`` wrote; a missing or unreadable value keeps its default.

        Numbers that older versions stored without the artist choosing them go back to auto.
        """
        default = cls()
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = stored.get(f.name)
            if raw is None or raw == "" or (f.name in _RECIPE_FIELDS and stored.get("format") != FORMAT):
                continue
            try:
                values[f.name] = _parse(raw, f.name)
            except ValueError:
                continue
        return _clamped(replace(default, **values))  # type: ignore[arg-type]


def _parse(raw: str, name: str) -> object:
    if name in _RECIPE_FIELDS:
        return None if raw == AUTO else _RECIPE_FIELDS[name](raw)
    like = getattr(Settings(), name)
    if isinstance(like, Enum):
        return type(like)(raw)
    if isinstance(like, bool):
        if raw not in ("true", "false"):
            raise ValueError(raw)
        return raw == "true"
    if isinstance(like, int):
        return int(raw)
    if isinstance(like, float):
        return float(raw)
    return raw


def _clamped(settings: Settings) -> Settings:
    def clamp(value: float | None, low: float, high: float) -> float | None:
        return None if value is None else min(high, max(low, value))

    steps, live_steps = clamp(settings.steps, 1, MAX_STEPS), clamp(settings.live_steps, 1, MAX_STEPS)
    return replace(
        settings,
        strength=clamp(settings.strength, 0.01, 1.0),
        steps=None if steps is None else int(steps),
        guidance=clamp(settings.guidance, 0.0, MAX_GUIDANCE),
        live_steps=None if live_steps is None else int(live_steps),
        seed=min(MAX_SEED, max(0, settings.seed)),
        count=min(MAX_COUNT, max(1, settings.count)),
    )
