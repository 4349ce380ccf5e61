"""A canvas that writes down what a job did to the image, one JSON line per call.

Set ``IMG2IMG_BRIDGE_TRACE=/path/file.jsonl`` in GIMP's environment to follow a
run from outside (the end-to-end tests read it to see previews come before the
result).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .bridge_package import Rect
from .job import Canvas, ResultLayer

TRACE_ENV = "IMG2IMG_BRIDGE_TRACE"


class TracingCanvas:
    """Wraps a canvas: every call is appended to ``path`` after the wrapped canvas returned."""

    def __init__(self, inner: Canvas, path: Path) -> None:
        self.inner = inner
        self.path = path

    def freeze_history(self) -> None:
        self.inner.freeze_history()
        self._write("freeze_history")

    def thaw_history(self) -> None:
        self.inner.thaw_history()
        self._write("thaw_history")

    def show_preview(self, rect: Rect, rgba: bytes) -> None:
        self.inner.show_preview(rect, rgba)
        self._write("show_preview", rect=_box(rect))

    def remove_preview(self) -> None:
        self.inner.remove_preview()
        self._write("remove_preview")

    def add_results(self, results: Sequence[ResultLayer], group: str | None) -> None:
        self.inner.add_results(results, group)
        first = results[0]
        self._write("add_results", rect=_box(first.rect), name=first.name, names=[r.name for r in results], group=group)

    def set_progress(self, fraction: float | None, text: str) -> None:
        self.inner.set_progress(fraction, text)
        self._write("set_progress", fraction=fraction, text=text)

    def _write(self, op: str, **fields: Any) -> None:
        line = json.dumps({"op": op, "time": time.time(), **fields})
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def traced(canvas: Canvas, environ: Mapping[str, str] | None = None) -> Canvas:
    """``canvas``, wrapped in a TracingCanvas when the trace variable is set."""
    path = (os.environ if environ is None else environ).get(TRACE_ENV)
    return TracingCanvas(canvas, Path(path)) if path else canvas


def _box(rect: Rect) -> list[int]:
    return [rect.x, rect.y, rect.width, rect.height]
