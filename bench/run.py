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
from typing import Any

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
    from bridge.install import write_vendor
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
        vendor = Path(scratch) / "vendor"
        write_vendor(vendor)
        with ClientProcess(vendor=vendor) as pure, ClientProcess(vendor=None) as native:
            results["clients"] = {"pure": pure.info, "native": native.info}
            for index, case in enumerate(cases):
                model = case.name if case.name == "tiny" else str(architectures.ensure_model(cache_root(), case.name, device))
                _say(f"{case.name}: loading on {device}")
                with running_bridge(ServerConfig(model=model, device=device), wait=False) as running:
                    bridge = running.bridge
                    _say(f"{case.name}: raw pipeline, engine and round trip")
                    engine = suites.wait_ready(bridge)
                    worker = bridge.engine_thread
                    raw_pipe = worker.submit(load, resolve(model), device).result().img2img
                    measured = suites.compare_model(case, raw_pipe, engine, worker, running.url, pure, native, profile.job_rounds)
                    del raw_pipe
                    measured["figures"] = report.model_figures(measured)
                    results["models"][case.name] = measured
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
    first = results["models"][cases[0].name]["figures"]
    results["headline"] = {
        "model": cases[0].name,
        **{k: first[k] for k in ("roundtrip_over_raw", "engine_over_raw", "roundtrip_over_engine", "first_preview_ms", "per_preview_ms")},
        **report.transport_figures(results["transport"]),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print(report.text(results))
    print(f"\n({results['seconds']} s)")
    if args.json:
        figures = {**results["headline"], "machine": results["machine"], "results": results}
        args.json.write_text(json.dumps(_json_safe(figures), indent=1, allow_nan=False) + "\n")
    return 0


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
