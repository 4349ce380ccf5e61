"""What the docker remembers between sessions, and how it is stored as strings."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Mapping

from bridge.client import DEFAULT_URL


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

#: Strength presets: how far the result may stray from the source.
STRENGTH_PRESETS = {"low": 0.3, "medium": 0.55, "high": 0.8}

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Settings:
    url: str = DEFAULT_URL
    token: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = STRENGTH_PRESETS["medium"]
    steps: int = 20
    fixed_seed: bool = False
    seed: int = 0
    model: str = ""
    source: Source = Source.LAYER
    from_canvas: bool = False  # read the visible canvas (all layers) instead of the active layer
    live_steps: int = 8
    live_on_canvas: bool = False  # live results also go to the [Preview] layer, not only the docker

    @property
    def request_seed(self) -> int | None:
        """The seed to ask for: None lets the bridge pick one (and report it)."""
        return self.seed if self.fixed_seed else None

    def with_preset(self, name: str) -> Settings:
        return replace(self, strength=STRENGTH_PRESETS[name])

    def to_strings(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                out[f.name] = str(value.value)
            elif isinstance(value, bool):
                out[f.name] = "true" if value else "false"
            else:
                out[f.name] = str(value)
        return out

    @classmethod
    def from_strings(cls, stored: Mapping[str, str]) -> Settings:
        """Read what ``to_strings`` wrote; a missing or unreadable value keeps its default."""
        default = cls()
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = stored.get(f.name)
            if raw is None or raw == "":
                continue
            current = getattr(default, f.name)
            try:
                values[f.name] = _parse(raw, current)
            except ValueError:
                continue
        return _clamped(replace(default, **values))  # type: ignore[arg-type]


def _parse(raw: str, like: object) -> object:
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
    return replace(
        settings,
        strength=min(1.0, max(0.01, settings.strength)),
        steps=min(100, max(1, settings.steps)),
        live_steps=min(100, max(1, settings.live_steps)),
        seed=min(MAX_SEED, max(0, settings.seed)),
    )
