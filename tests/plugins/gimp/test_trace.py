from __future__ import annotations

import json
from pathlib import Path

import pytest
from img2img_gimp.job import ResultLayer
from img2img_gimp.trace import TRACE_ENV, TracingCanvas, traced

from bridge.editor.regions import Rect

from .fakes import FakeCanvas


def test_traced_wraps_only_when_the_variable_is_set(tmp_path: Path) -> None:
    canvas = FakeCanvas()
    assert traced(canvas, {}) is canvas
    wrapped = traced(canvas, {TRACE_ENV: str(tmp_path / "t.jsonl")})
    assert isinstance(wrapped, TracingCanvas) and wrapped.inner is canvas


def test_every_call_is_passed_on_and_written_in_order(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    inner = FakeCanvas()
    canvas = TracingCanvas(inner, path)
    canvas.freeze_history()
    canvas.show_preview(Rect(1, 2, 1, 1), bytes(4))
    canvas.set_progress(0.5, "half")
    canvas.remove_preview()
    canvas.thaw_history()
    canvas.add_results([ResultLayer(Rect(1, 2, 1, 1), bytes(4), None, "name", "{}")], None)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["op"] for line in lines] == [
        "freeze_history",
        "show_preview",
        "set_progress",
        "remove_preview",
        "thaw_history",
        "add_results",
    ]
    assert lines[1]["rect"] == [1, 2, 1, 1] and lines[-1]["names"] == ["name"] and lines[2]["fraction"] == 0.5
    assert inner.ops == ["freeze", "preview", "remove", "thaw", "result"]


def test_a_call_the_canvas_refuses_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    canvas = TracingCanvas(FakeCanvas(fail_on="freeze"), path)
    with pytest.raises(RuntimeError):
        canvas.freeze_history()
    assert not path.exists()
