"""Benchmark the bridge against the raw diffusers call: ``python bench/run.py --profile cpu|gpu [--json FILE] [--quick]``.

One run, one machine, one model and one set of settings: (a) the diffusers
img2img pipeline called directly, (b) the bridge's engine in-process, (c) the
full round trip client library -> websocket -> engine -> result back; then
layers of 512² to 4096² through the protocol and back, with prototypes
measured beside the shipped code. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.profiles import ModelCase, Profile

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script: make the checkout's packages importable
    sys.path.insert(0, str(_ROOT))

# no benchmark may reach the network: models are built here or read from the local cache
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["IMG2IMG_BRIDGE_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("cpu", "gpu"), required=True, help="cpu: the tiny model; gpu: random SD 1.5 and sd-turbo")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--quick", action="store_true", help="the CI smoke run: fewer rounds and sizes (under a minute on 2 cores)")
    parser.add_argument("--device", help="override the profile's device (cpu, cuda, cuda:1 ...)")
    parser.add_argument("--models", help="comma-separated subset of the profile's models")
    parser.add_argument(
        "--tiny", action="store_true", help="run every model case on the built-in tiny model: a smoke run of a profile's code (CI, CPU)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure diffusers with TAESD and torch.compile(mode='reduce-overhead') (minutes to compile)",
    )
    parser.add_argument("--cprofile", type=Path, help="write cProfile tables of the pure-Python client (512², 2048², 4096²) to this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("img2img_bridge").setLevel(logging.WARNING)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

    from bench import architectures, encodings, machine, report, suites
    from bench.clients import ClientProcess
    from bench.profiles import PROFILES, SHIPPED
    from bench.transport import echo_engine, running_echo
    from bridge.install import write_editor_package
    from bridge.models import load, resolve
    from bridge.server import ServerConfig
    from bridge.tiny_model import cache_root
    from tests.bridge_server import running_bridge

    profile = PROFILES[args.profile].quick() if args.quick else PROFILES[args.profile]
    device = args.device or profile.device
    cases = profile.models
    if args.models:
        wanted = args.models.split(",")
        cases = tuple(c for c in cases if c.name in wanted)
        if not cases:
            raise SystemExit(f"--models {args.models}: the {profile.name} profile has {', '.join(c.name for c in profile.models)}")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "profile": profile.name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine.describe(device),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="img2img-bench-") as scratch:
        vendor = Path(scratch) / "vendor"  # bridge.editor as the plug-ins carry it, with its own pure-Python copies
        (vendor / "bridge").mkdir(parents=True)
        (vendor / "bridge" / "__init__.py").write_text("", encoding="utf-8")
        write_editor_package(vendor / "bridge" / "editor")
        with ClientProcess(vendor=vendor) as pure, ClientProcess(vendor=None) as native:
            results["clients"] = {"pure": pure.info, "native": native.info}
            for index, case in enumerate(cases):
                model = "tiny" if args.tiny or case.name == "tiny" else str(architectures.ensure_model(cache_root(), case.name, device))
                _say(f"{case.name}: loading {model} on {device}")
                with running_bridge(ServerConfig(model=model, device=device), wait=False) as running:
                    bridge = running.bridge
                    engine = suites.wait_ready(bridge)
                    worker = bridge.engine_thread
                    raw_loaded = worker.submit(load, resolve(model), device).result()
                    measured = _measure_model(case, raw_loaded, engine, bridge, running.url, pure, native, profile, args.compile)
                    del raw_loaded
                    measured["figures"] = report.model_figures(measured)
                    results["models"][case.name] = measured
                    if args.json:  # what is measured so far survives a later failure or time-out
                        _write_json(args.json, results)
                    if index < len(cases) - 1:
                        continue
                    _say("transport")
                    with echo_engine(bridge), running_echo() as echo_url:
                        bare_url = echo_url if profile.bare_stack else None
                        results["transport"] = suites.transport(running.url, bare_url, pure, native, profile)
                        results["timelines"] = suites.timelines(running.url, pure, max(profile.transport_sides), (SHIPPED,))
                        if args.cprofile:
                            _say("cProfile of the pure-Python client")
                            tables = suites.client_profiles(running.url, pure, (512, 2048, 4096), (SHIPPED,))
                            _write_tables(args.cprofile, tables)
    _say("encodings")
    results["encodings"] = encodings.measure(profile.encoding_sides)
    results["headline"] = {**_headline(results["models"]), **report.transport_figures(results["transport"])}
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print(report.text(results))
    print(f"\n({results['seconds']} s)")
    if args.json:
        _write_json(args.json, results)
    return 0


def _write_json(path: Path, results: dict[str, Any]) -> None:
    figures = {**results.get("headline", {}), "machine": results["machine"], "results": results}
    path.write_text(json.dumps(_json_safe(figures), indent=1, allow_nan=False) + "\n")


def _measure_model(
    case: ModelCase, raw_loaded: Any, engine: Any, bridge: Any, url: str, pure: Any, native: Any, profile: Profile, compiled: bool
) -> dict[str, Any]:
    """The profile's measurements of one model: its whole job, then its live frame with the memory checks."""
    from bench import suites
    from bench.inprocess import RawPipeline, diffusers_setups

    worker = bridge.engine_thread
    measured: dict[str, Any] = {}
    if case.job is not None:
        _say(f"{case.name}: whole job, raw pipeline against engine and round trip")
        raw = RawPipeline(raw_loaded.img2img, engine)
        measured.update(suites.compare_job(case.job, raw, engine, worker, url, pure, native, profile.job_rounds))
        _say(f"{case.name}: 4 variations in one job against 4 single jobs")
        measured["variations"] = suites.variations(case.job, engine, worker, profile.variation_rounds)
    if case.live is not None:
        _say(f"{case.name}: live frame (CUDA graphs captured at 'load'; diffusers set-ups{', compiling' if compiled else ''})")
        graphed, measured["fast_path"] = suites.fast_path(engine, worker, case.live)
        raws = diffusers_setups(raw_loaded, engine, compiled=compiled)
        measured.update(suites.compare_live(case.live, raws, engine, graphed, bridge, worker, url, pure, native, profile.live_rounds))
        del raws
        _say(f"{case.name}: {profile.vram_frames} live frames per engine, memory")
        measured["vram"] = suites.vram(case.live, {"engine": engine, "engine_graphs": graphed}, bridge, url, pure, profile.vram_frames)
        _say(f"{case.name}: a job that runs out of memory, then one that does not")
        measured["out_of_memory"] = suites.out_of_memory(case.live, engine, bridge, url, pure)
    return measured


_HEADLINE_JOB = ("roundtrip_over_raw", "engine_over_raw", "roundtrip_over_engine", "first_preview_ms", "per_preview_ms", "previews_cost_x")
_HEADLINE_LIVE = (
    "live_roundtrip_ms",
    "live_roundtrip_graphs_ms",
    "live_frame_graph_ms",
    "live_raw_ms",
    "live_raw_taesd_ms",
    "live_raw_over_roundtrip",
    "live_raw_over_roundtrip_graphs",
    "graphs_ready_s",
    "vram_growth_mib_engine",
    "vram_growth_mib_engine_graphs",
    "oom_served_after",
)


def _headline(models: dict[str, Any]) -> dict[str, Any]:
    """The goals' figures: whole-job keys from the first model with a job, live keys from the first with a live frame."""
    found: dict[str, Any] = {}
    for keys, label in ((_HEADLINE_JOB, "model"), (_HEADLINE_LIVE, "live_model")):
        for name, model in models.items():
            if keys[0] in model["figures"]:
                found[label] = name
                found.update({key: model["figures"][key] for key in keys})
                break
    return found


def _json_safe(value: Any) -> Any:
    """NaN (a figure that could not be measured) as null: strict JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _write_tables(folder: Path, tables: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        side, variant = name.split(" ", 1)
        slug = variant.replace("|", "-").replace("+", "-")
        (folder / f"client-{side}-{slug}.txt").write_text(f"{variant}\n{table}\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
