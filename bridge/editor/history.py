"""What made each result, kept with it: settings as layer metadata, variation names, and a bounded history.

Editor-side: standard library and ``protocol`` only, Python 3.10+. Both plug-ins
attach a result's settings to its layer (a GIMP parasite, Krita's layer name and
document annotation) as :meth:`ResultSettings.to_text`, name a job's variations
with :func:`variation_group_name`, and the Krita docker keeps its strip of
thumbnails in a :class:`History`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any

from . import protocol as p
from .regions import Rect

#: The name results' settings are attached under (GIMP parasite, Krita annotation).
SETTINGS_KEY = "img2img-bridge-settings"
_SETTINGS_VERSION = 1
_NAME_CHARS = 40
#: A history keeps at most this many results and bytes of pixels, over all documents (oldest jobs go first).
MAX_ENTRIES = 64
MAX_BYTES = 256 << 20


class SettingsTextError(ValueError):
    """Text that is not a result's settings (another tool's metadata, or a damaged one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ResultSettings:
    """What produced one result: enough to regenerate it, or vary it, later."""

    prompt: str
    negative_prompt: str
    strength: float | None  # None: the model's recipe (the bridge did not say what it used)
    steps: int | None
    guidance: float | None
    seed: int
    model: str

    def to_text(self) -> str:
        """Compact JSON with a version, for a parasite or an annotation."""
        return json.dumps({"version": _SETTINGS_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str | bytes) -> ResultSettings:
        """Read :meth:`to_text`'s output back; raises SettingsTextError naming what is wrong."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SettingsTextError(f"the result's settings are not readable JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("version") != _SETTINGS_VERSION:
            raise SettingsTextError(f"the result's settings are not version {_SETTINGS_VERSION} img2img-bridge settings")
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = raw.get(f.name)
            if f.name in ("prompt", "negative_prompt", "model"):
                ok = isinstance(value, str)
            elif f.name in ("seed", "steps"):
                ok = (value is None and f.name == "steps") or (isinstance(value, int) and not isinstance(value, bool))
            else:
                ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
            if not ok:
                raise SettingsTextError(f"the result's settings have a bad {f.name!r}: {value!r}")
            values[f.name] = float(value) if f.name in ("strength", "guidance") and value is not None else value
        return cls(**values)

    def describe(self) -> str:
        """``"seed 42, 4 steps, strength 0.50, guidance off, tiny"``: one line for a tooltip."""
        parts = [f"seed {self.seed}"]
        if self.steps is not None:
            parts.append(f"{self.steps} steps")
        if self.strength is not None:
            parts.append(f"strength {self.strength:.2f}")
        if self.guidance is not None:
            parts.append("guidance off" if self.guidance <= 1.0 else f"guidance {self.guidance:g}")
        if self.model:
            parts.append(self.model)
        return ", ".join(parts)


Numbers = tuple[float | None, int | None, float | None]  # strength, steps, guidance


def result_settings(prompt: str, negative_prompt: str, seed: int, model: str, *, asked: Numbers, used: Numbers) -> ResultSettings:
    """A result's settings: the strength, steps and guidance the bridge says it ``used``, else those ``asked`` for."""
    strength, steps, guidance = (u if u is not None else a for u, a in zip(used, asked, strict=True))
    return ResultSettings(prompt, negative_prompt, strength, steps, guidance, seed, model)  # type: ignore[arg-type]


def used_by(result: p.Result) -> Numbers:
    """The strength, steps and guidance a ``result`` reports (None from older bridges)."""
    return result.strength, result.steps, result.guidance


def variation_group_name(prompt: str, count: int) -> str:
    """``"a red fox in snow (3 variations)"``: the layer group that holds one job's variations."""
    text = " ".join(prompt.split())
    if len(text) > _NAME_CHARS:
        text = text[: _NAME_CHARS - 1].rstrip() + "\u2026"
    return f"{text or 'img2img'} ({count} variations)"


@dataclass(frozen=True)
class HistoryEntry:
    """One result kept in the history: its exact pixels (the document's format) and a small RGBA thumbnail."""

    document: object  # the document it belongs to (compared with ==)
    job_id: str
    index: int  # the variation
    count: int  # of the job's variations
    settings: ResultSettings
    rect: Rect  # document coordinates
    pixels: bytes
    thumbnail: bytes  # RGBA 8-bit
    thumbnail_size: tuple[int, int]
    target: object = None  # where it is applied (the host's handle on the source layer)

    @property
    def key(self) -> tuple[str, int]:
        return self.job_id, self.index

    @property
    def size(self) -> int:
        return len(self.pixels) + len(self.thumbnail)


class History:
    """Results of every open document, grouped by job, bounded in entries and bytes: the oldest jobs' go first.

    A job's entry replaces the one with the same job and index; entries of one job stay together in index order.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a history holds at least one entry and one byte")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], HistoryEntry] = OrderedDict()  # oldest job first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def add(self, entry: HistoryEntry) -> bool:
        """Keep ``entry``, dropping the oldest entries to stay within bounds; False when it alone is too large."""
        if entry.size > self.max_bytes:
            return False
        old = self._entries.pop(entry.key, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[entry.key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.size
        return entry.key in self._entries

    def get(self, job_id: str, index: int) -> HistoryEntry | None:
        return self._entries.get((job_id, index))

    def jobs(self, document: object) -> list[list[HistoryEntry]]:
        """``document``'s entries, newest job first, each job's in index order."""
        grouped: dict[str, list[HistoryEntry]] = {}
        for entry in self._entries.values():
            if entry.document == document:
                grouped.setdefault(entry.job_id, []).append(entry)
        return [sorted(entries, key=lambda e: e.index) for entries in reversed(grouped.values())]

    def forget(self, keep: Any) -> None:
        """Drop the entries whose document ``keep(document)`` says is gone (closed)."""
        for key, entry in list(self._entries.items()):
            if not keep(entry.document):
                del self._entries[key]
                self._bytes -= entry.size


def annotation_with(annotation: bytes, layer_id: str, settings: ResultSettings) -> bytes:
    """A document annotation (JSON: layer id -> settings) with ``settings`` set for ``layer_id``.

    Krita keeps no free-form metadata on layers, but saves a document's annotations with it.
    """
    try:
        table = json.loads(annotation) if annotation else {}
    except ValueError:
        table = {}
    if not isinstance(table, dict):
        table = {}
    table[layer_id] = json.loads(settings.to_text())
    return json.dumps(table, separators=(",", ":")).encode()


def settings_in_annotation(annotation: bytes, layer_id: str) -> ResultSettings | None:
    """The settings :func:`annotation_with` stored for ``layer_id``; None when there are none."""
    try:
        table = json.loads(annotation) if annotation else {}
    except ValueError:
        return None
    found = table.get(layer_id) if isinstance(table, dict) else None
    if not isinstance(found, dict):
        return None
    try:
        return ResultSettings.from_text(json.dumps(found))
    except SettingsTextError:
        return None
