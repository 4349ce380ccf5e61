"""The benchmark command runs (a smoke run: no timings are asserted); its rounds are interleaved as documented."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.suites import interleaved

ROOT = Path(__file__).resolve().parent.parent
HEADLINE_KEYS = (
    "roundtrip_over_raw",
    "engine_over_raw",
    "roundtrip_over_engine",
    "first_preview_ms",
    "transport_4096_ms",
    "client_cpu_ms_512",
)


def test_quick_cpu_profile_runs_and_reports_the_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--profile", "cpu", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for label in ("(c)/(a)", "(b)/(a)", "(c)/(b)", "first preview", "4096x4096", "headline:"):
        assert label in done.stdout
    figures = json.loads(out.read_text())
    for key in HEADLINE_KEYS:
        assert isinstance(figures[key], (int, float)) and math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["machine"]["cores"] >= 1
    assert figures["results"]["clients"]["pure"]["msgpack_unpacker"] == "msgpack.fallback"
    assert figures["results"]["clients"]["pure"]["websockets_apply_mask"] == "websockets.utils"


def test_interleaved_runs_every_case_each_round_and_drops_the_warmup() -> None:
    calls: list[str] = []

    def case(name: str) -> Any:
        def run() -> dict[str, Any]:
            calls.append(name)
            return {"wall_ms": float(len(calls)), "ok": True, "note": "ignored"}

        return run

    samples = interleaved({"a": case("a"), "b": case("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert samples["a"]["wall_ms"].values == [3.0, 5.0, 7.0]
    assert samples["b"]["wall_ms"].median == 6.0
    assert set(samples["a"]) == {"wall_ms"}  # booleans and text are not samples
