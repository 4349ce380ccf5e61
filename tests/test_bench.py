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


def _run_bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), *args, "--json", str(out)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout, json.loads(out.read_text())


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_cpu_profile_runs_and_reports_the_ratios(tmp_path: Path) -> None:
    stdout, figures = _run_bench(tmp_path, "--profile", "cpu", "--quick")
    for label in ("(c)/(a)", "(b)/(a)", "(c)/(b)", "first preview", "4096x4096", "headline:"):
        assert label in stdout
    for key in HEADLINE_KEYS:
        assert _positive(figures[key]), key
    assert figures["machine"]["cores"] >= 1
    assert "4 variations: one job, batched" in stdout
    tiny = figures["results"]["models"]["tiny"]["figures"]
    assert _positive(tiny["variations_batched_over_singles"]) and _positive(tiny["variations_batched_over_sequential"])
    assert figures["results"]["clients"]["pure"]["msgpack_unpacker"] == "msgpack.fallback"
    # the editors' client: pure-Python websockets with the client's own faster mask and frame reader
    pure = figures["results"]["clients"]["pure"]
    assert pure["websockets_apply_mask"] == pure["websockets_stream_reader"] == "bridge.editor.client"


def test_gpu_profile_measures_the_goals_and_runs_on_the_cpu_with_the_tiny_model(tmp_path: Path) -> None:
    from bench.profiles import GPU

    stdout, figures = _run_bench(tmp_path, "--profile", "gpu", "--quick", "--device", "cpu", "--tiny")
    models = figures["results"]["models"]
    quality, live = models["sd15"], models["sd-turbo"]
    assert (quality["job"]["side"], quality["job"]["steps"], quality["job"]["strength"], quality["job"]["guidance"]) == (512, 30, 0.6, 7.5)
    assert "live_samples" not in quality
    assert "job_samples" not in live
    assert (live["live"]["side"], live["live"]["guidance"], live["live"]["live"]) == (512, 0.0, True)
    assert GPU.models[1].live is not None and GPU.models[1].live.denoising_steps == 1
    assert GPU.vram_frames == 1000
    for key in ("first_preview_ms", "previews_cost_x", "live_roundtrip_ms", "live_roundtrip_graphs_ms", "live_raw_ms", "live_raw_taesd_ms"):
        assert _positive(figures[key]), key
    assert live["figures"]["live_raw_taesd_compiled_ms"] is None  # torch.compile only with --compile
    assert figures["oom_served_after"] is True
    assert live["frame_graph"]["applies"] is True and "error" not in live["frame_graph"]
    assert _positive(figures["live_frame_graph_ms"])
    assert live["out_of_memory"]["error_code"] == "OUT_OF_MEMORY"
    assert [found["frames"] for found in live["vram"].values()] == [3, 3]
    assert live["vram"]["engine"]["growth_bytes"] is None  # no CUDA allocator here: null, not a made-up figure
    assert "live frames through the websocket" in stdout and "out of memory" in stdout


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
