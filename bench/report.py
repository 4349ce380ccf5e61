"""Headline figures from the raw samples, and the text report."""

from __future__ import annotations

from typing import Any

from .inprocess import RAW_COMPILED
from .profiles import SHIPPED, SOCKET, SOCKET_MSGPACK, SOCKET_STOCK_READER, ZERO_MASK
from .timing import ratio

MIB = 1 << 20


def _median(samples: dict[str, Any], case: str, key: str = "wall_ms", stat: str = "median") -> float:
    found = samples.get(case, {}).get(key)
    return float(found[stat]) if found else float("nan")


def model_figures(model: dict[str, Any]) -> dict[str, Any]:
    """Ratios, preview costs and memory figures for one model (medians over rounds; round trips use the pure-Python client)."""
    figures: dict[str, Any] = {}
    if "job_samples" in model:
        figures.update(_job_figures(model))
    if "live_samples" in model:
        figures.update(_live_figures(model))
    if "variations" in model:
        figures.update(_variation_figures(model["variations"]))
    return figures


def _variation_figures(variations: dict[str, Any]) -> dict[str, float]:
    samples = variations["variation_samples"]
    batched, sequential, singles = (_median(samples, case) for case in ("batched", "sequential", "singles"))
    return {
        "variations": variations["count"],
        "variations_batched_ms": round(batched, 2),
        "variations_sequential_ms": round(sequential, 2),
        "variations_singles_ms": round(singles, 2),
        "variations_batched_over_singles": ratio(batched, singles),
        "variations_batched_over_sequential": ratio(batched, sequential),
    }


def _denoising_steps(settings: dict[str, Any]) -> int:
    return max(1, min(int(settings["steps"] * settings["strength"]), settings["steps"]))


def _job_figures(model: dict[str, Any]) -> dict[str, float]:
    jobs, alone = model["job_samples"], model["alone_samples"]
    raw, engine, trip = _median(jobs, "raw"), _median(jobs, "engine"), _median(jobs, "roundtrip")
    engine_previews, trip_previews = _median(jobs, "engine_previews"), _median(jobs, "roundtrip_previews")
    n_engine = _median(jobs, "engine_previews", "previews")
    n_trip = _median(jobs, "roundtrip_previews", "previews")
    step = engine / _denoising_steps(model["job"])
    return {
        "raw_ms": round(raw, 2),
        "engine_ms": round(engine, 2),
        "roundtrip_ms": round(trip, 2),
        "roundtrip_native_ms": round(_median(jobs, "roundtrip_native"), 2),
        "roundtrip_over_raw": ratio(trip, raw),
        "engine_over_raw": ratio(engine, raw),
        "roundtrip_over_engine": ratio(trip, engine),
        "roundtrip_native_over_engine": ratio(_median(jobs, "roundtrip_native"), engine),
        "roundtrip_socket_ms": round(_median(jobs, "roundtrip_socket"), 2),
        "roundtrip_socket_over_engine": ratio(_median(jobs, "roundtrip_socket"), engine),
        "roundtrip_every_progress_ms": round(_median(jobs, "roundtrip_every_progress"), 2),
        "roundtrip_every_progress_over_engine": ratio(_median(jobs, "roundtrip_every_progress"), engine),
        "raw_alone_ms": round(_median(alone, "raw"), 2),
        "engine_alone_ms": round(_median(alone, "engine"), 2),
        "engine_over_raw_alone": ratio(_median(alone, "engine"), _median(alone, "raw")),
        # the fastest round of each: less exposed to other work on a shared machine
        "roundtrip_over_raw_min": ratio(_median(jobs, "roundtrip", stat="min"), _median(jobs, "raw", stat="min")),
        "engine_over_raw_min": ratio(_median(jobs, "engine", stat="min"), _median(jobs, "raw", stat="min")),
        "roundtrip_over_engine_min": ratio(_median(jobs, "roundtrip", stat="min"), _median(jobs, "engine", stat="min")),
        "engine_previews_ms": round(engine_previews, 2),
        "roundtrip_previews_ms": round(trip_previews, 2),
        "roundtrip_over_engine_with_previews": ratio(trip_previews, engine_previews),
        "previews_cost_x": ratio(trip_previews, trip),
        "previews_engine": n_engine,
        "previews_roundtrip": n_trip,
        "engine_per_preview_ms": round((engine_previews - engine) / n_engine, 2) if n_engine else float("nan"),
        "per_preview_ms": round((trip_previews - trip) / n_trip, 2) if n_trip else float("nan"),
        # the whole job's engine time over its denoising steps: encode, decode and prompt spread over the steps
        "step_ms": round(step, 2),
        "first_preview_ms": round(_median(jobs, "roundtrip_previews", "first_preview_ms"), 2),
        "engine_first_preview_ms": round(_median(jobs, "engine_previews", "first_preview_ms"), 2),
    }


def _live_figures(model: dict[str, Any]) -> dict[str, Any]:
    lives = model["live_samples"]
    trip, graphs = _median(lives, "roundtrip"), _median(lives, "roundtrip_graphs")
    raw = _median(lives, "raw")
    figures: dict[str, Any] = {
        "live_raw_ms": round(raw, 2),
        "live_raw_taesd_ms": round(_median(lives, "raw_taesd"), 2),
        "live_raw_taesd_compiled_ms": round(_median(lives, "raw_taesd_compiled"), 2),
        "live_engine_ms": round(_median(lives, "engine"), 2),
        "live_engine_graphs_ms": round(_median(lives, "engine_graphs"), 2),
        "live_frame_graph_ms": round(_median(lives, "frame_graph"), 2),
        "live_roundtrip_ms": round(trip, 2),
        "live_roundtrip_graphs_ms": round(graphs, 2),
        "live_roundtrip_native_ms": round(_median(lives, "roundtrip_native"), 2),
        "live_roundtrip_socket_ms": round(_median(lives, "roundtrip_socket"), 2),
        "live_roundtrip_every_progress_ms": round(_median(lives, "roundtrip_every_progress"), 2),
        "live_roundtrip_socket_over_engine": ratio(_median(lives, "roundtrip_socket"), _median(lives, "engine")),
        "live_raw_over_roundtrip": ratio(raw, trip),
        "live_raw_over_roundtrip_graphs": ratio(raw, graphs),
        "live_roundtrip_over_engine": ratio(trip, _median(lives, "engine")),
        "live_roundtrip_graphs_over_engine_graphs": ratio(graphs, _median(lives, "engine_graphs")),
        "live_client_cpu_ms": round(_median(lives, "roundtrip", "cpu_ms"), 2),
        "live_client_cpu_ms_socket": round(_median(lives, "roundtrip_socket", "cpu_ms"), 2),
        "live_first_preview_ms": round(_median(lives, "roundtrip", "first_preview_ms"), 2),
        "live_engine_first_preview_ms": round(_median(lives, "engine", "first_preview_ms"), 2),
    }
    fast = model.get("fast_path", {})
    figures["graphs_ready_s"] = fast.get("ready_s", float("nan"))
    figures["graphs_first_frame_ms"] = fast.get("first_frame_ms", float("nan"))
    for name, found in model.get("vram", {}).items():
        growth = found["growth_bytes"]
        figures[f"vram_growth_mib_{name}"] = round(growth / MIB, 2) if growth is not None else float("nan")
        peak = found["max_allocated_bytes"]
        figures[f"vram_peak_mib_{name}"] = round(peak / MIB, 1) if peak is not None else float("nan")
    oom = model.get("out_of_memory")
    if oom is not None:
        figures["oom_error_code"] = oom["error_code"]
        figures["oom_served_after"] = oom["served_after"]
    return figures


def _transport(transport: dict[str, Any], side: int, case: str, key: str = "wall_ms") -> float:
    entry = transport["sides"].get(str(side))
    return _median(entry["samples"], case, key) if entry else float("nan")


def transport_figures(transport: dict[str, Any]) -> dict[str, float]:
    """Headline transport figures: the shipped client (shared memory on this machine) and, suffixed ``_socket``, the websocket."""
    figures: dict[str, float] = {}
    for suffix, variant in (("", SHIPPED), ("_socket", SOCKET)):
        pure = f"pure {variant}"
        figures[f"transport_4096{suffix}_ms"] = round(_transport(transport, 4096, pure), 1)
        figures[f"transport_4096_native{suffix}_ms"] = round(_transport(transport, 4096, f"native {variant}"), 1)
        figures[f"transport_512{suffix}_ms"] = round(_transport(transport, 512, pure), 2)
        figures[f"client_cpu_ms_512{suffix}"] = round(_transport(transport, 512, pure, "cpu_ms"), 2)
    figures["transport_4096_ms_zero_mask"] = round(_transport(transport, 4096, f"pure {ZERO_MASK}"), 1)
    figures["transport_4096_socket_msgpack_ms"] = round(_transport(transport, 4096, f"pure {SOCKET_MSGPACK}"), 1)
    figures["transport_4096_socket_stock_reader_ms"] = round(_transport(transport, 4096, f"pure {SOCKET_STOCK_READER}"), 1)
    memory = transport["memory"]
    for suffix, variant in (("", SHIPPED), ("_socket", SOCKET)):
        found = memory["variants"].get(variant, {})
        for end in ("client", "server"):
            extra = found.get(f"{end}_peak_extra_bytes")
            figures[f"peak_{end}_4096_x{suffix}"] = round(extra / memory["bytes"], 2) if extra is not None else float("nan")
    return figures


def _fmt(value: float, unit: str = "") -> str:
    return "n/a" if value != value else f"{value:.1f}{unit}"


def text(results: dict[str, Any]) -> str:
    lines = [
        f"img2img-bridge benchmark, profile {results['profile']}, {results['date']}",
        f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, {results['machine'].get('gpu', 'no GPU')}, "
        f"python {results['machine']['python']}; load average at start {results['machine']['load_average_at_start']}",
        f"memory: a fresh 64 MiB buffer costs {results['machine']['fresh_copy_64mib_ms']} ms to fill, "
        f"a warm one {results['machine']['warm_copy_64mib_ms']} ms",
    ]
    for name, model in results["models"].items():
        fig = model["figures"]
        if "job_samples" in model:
            lines += ["", *_job_text(name, model["job"], model["job_samples"], fig)]
        if "live_samples" in model:
            lines += ["", *_live_text(name, model, fig)]
    transport = results["transport"]
    lines += ["", "transport: RGBA layer through the bridge and back (echo engine); wall ms median (min), MiB/s both ways, client CPU ms"]
    for side, entry in transport["sides"].items():
        lines.append(f"  {side}x{side}:")
        for case, by_key in entry["samples"].items():
            wall = by_key["wall_ms"]["median"]
            rate = 2 * entry["bytes"] / MIB / (wall / 1000) if wall else float("nan")
            low = by_key["wall_ms"]["min"]
            lines.append(f"    {case:78s} {wall:8.1f} ({low:7.1f}) ms {rate:6.0f} MiB/s  cpu {by_key['cpu_ms']['median']:7.1f}")
    memory = transport["memory"]
    lines.append(
        f"  memory, {memory['side']}x{memory['side']}, in multiples of the layer ({memory['bytes'] / MIB:.0f} MiB): "
        "peak extra client / server; kept after the trip client / server"
    )
    for variant, figures in memory["variants"].items():
        peak = [_ratio_text(figures[f"{end}_peak_extra_bytes"], memory["bytes"]) for end in ("client", "server")]
        kept = [_ratio_text(figures[f"{end}_retained_bytes"], memory["bytes"]) for end in ("client", "server")]
        lines.append(f"    {variant:78s} {' / '.join(peak)};  {' / '.join(kept)}")
    for variant, rows in results.get("timelines", {}).items():
        lines += [
            "",
            f"timeline of one {transport['memory']['side']}x{transport['memory']['side']} round trip, {variant}: start ms, duration ms",
        ]
        lines += [f"  {row['start_ms']:8.1f} {row['ms']:8.1f}  {row['stage']}" for row in rows]
    lines += ["", "encodings (a smooth synthetic picture): size of raw, encode ms (server), decode ms, pays on links slower than"]
    for name, row in results["encodings"].items():
        pays = "" if row["pays_below_mib_s"] is None else f"{row['pays_below_mib_s']:8.1f} MiB/s"
        lines.append(f"  {name:12s} {row['of_raw']:6.3f}  {row['encode_ms']:8.2f}  {row['decode_ms']:8.2f}  {pays}")
    lines += ["", "headline: " + ", ".join(f"{k}={v}" for k, v in results["headline"].items())]
    return "\n".join(lines)


def _job_text(name: str, job: dict[str, Any], jobs: dict[str, Any], fig: dict[str, Any]) -> list[str]:
    return [
        f"model {name}: {job['side']}x{job['side']}, {job['steps']} steps x strength {job['strength']}, guidance {job['guidance']}",
        f"  (a) raw diffusers call            {_fmt(fig['raw_ms'], ' ms')}   (min {_fmt(jobs['raw']['wall_ms']['min'])})",
        f"  (b) engine in-process             {_fmt(fig['engine_ms'], ' ms')}   (min {_fmt(jobs['engine']['wall_ms']['min'])})",
        f"  (c) round trip, pure-Python client {_fmt(fig['roundtrip_ms'], ' ms')}   (min {_fmt(jobs['roundtrip']['wall_ms']['min'])})",
        f"      round trip, client with C speedups {_fmt(fig['roundtrip_native_ms'], ' ms')}",
        f"      round trip, pure-Python client, over the socket {_fmt(fig['roundtrip_socket_ms'], ' ms')} "
        f"(x{fig['roundtrip_socket_over_engine']} of (b)); progress every step {_fmt(fig['roundtrip_every_progress_ms'], ' ms')} "
        f"(x{fig['roundtrip_every_progress_over_engine']})",
        f"  (c)/(a) {fig['roundtrip_over_raw']}   (b)/(a) {fig['engine_over_raw']}   (c)/(b) {fig['roundtrip_over_engine']}   "
        f"(fastest rounds: {fig['roundtrip_over_raw_min']}, {fig['engine_over_raw_min']}, {fig['roundtrip_over_engine_min']})",
        f"  (a) and (b) interleaved on their own: {_fmt(fig['raw_alone_ms'], ' ms')} and {_fmt(fig['engine_alone_ms'], ' ms')}, "
        f"(b)/(a) {fig['engine_over_raw_alone']}",
        f"  previews every step: engine {_fmt(fig['engine_previews_ms'], ' ms')} ({fig['previews_engine']:.0f} previews), "
        f"round trip {_fmt(fig['roundtrip_previews_ms'], ' ms')} ({fig['previews_roundtrip']:.0f} previews, x{fig['previews_cost_x']} "
        f"of the round trip without); per preview: engine {_fmt(fig['engine_per_preview_ms'], ' ms')}, "
        f"round trip {_fmt(fig['per_preview_ms'], ' ms')}",
        f"  first preview: round trip {_fmt(fig['first_preview_ms'], ' ms')}, engine {_fmt(fig['engine_first_preview_ms'], ' ms')}; "
        f"engine time per denoising step {_fmt(fig['step_ms'], ' ms')}",
        *_variation_text(fig),
    ]


def _variation_text(fig: dict[str, Any]) -> list[str]:
    if "variations" not in fig:
        return []
    return [
        f"  {fig['variations']} variations: one job, batched {_fmt(fig['variations_batched_ms'], ' ms')}, "
        f"one at a time {_fmt(fig['variations_sequential_ms'], ' ms')}; {fig['variations']} single jobs "
        f"{_fmt(fig['variations_singles_ms'], ' ms')}; batched / single jobs x{fig['variations_batched_over_singles']}, "
        f"batched / one at a time x{fig['variations_batched_over_sequential']}"
    ]


def _live_text(name: str, model: dict[str, Any], fig: dict[str, Any]) -> list[str]:
    live = model["live"]
    lines = [
        f"model {name}, live frame: {live['side']}x{live['side']}, {live['steps']} steps x strength {live['strength']}, "
        f"guidance {live['guidance']}, previews every {live['preview_every']} (0: none); median ms",
        f"  diffusers: pipeline {_fmt(fig['live_raw_ms'])}, with TAESD {_fmt(fig['live_raw_taesd_ms'])}, "
        f"with TAESD and torch.compile {_fmt(fig['live_raw_taesd_compiled_ms'])} "
        + (f"(compiled and recorded in {model['prime_s'][RAW_COMPILED]} s)" if model["prime_s"] else "(not run: --compile)"),
        f"  engine in-process {_fmt(fig['live_engine_ms'])}, with CUDA graphs {_fmt(fig['live_engine_graphs_ms'])}; "
        f"prototype, the whole frame in one CUDA graph (frame alone): {_fmt(fig['live_frame_graph_ms'])} {model['frame_graph']}",
        f"  round trip {_fmt(fig['live_roundtrip_ms'])}, with CUDA graphs {_fmt(fig['live_roundtrip_graphs_ms'])}, "
        f"client with C speedups {_fmt(fig['live_roundtrip_native_ms'])}, over the socket {_fmt(fig['live_roundtrip_socket_ms'])} "
        f"(x{fig['live_roundtrip_socket_over_engine']} of the engine, client CPU {_fmt(fig['live_client_cpu_ms_socket'], ' ms')}), "
        f"progress every step {_fmt(fig['live_roundtrip_every_progress_ms'])}",
        f"  diffusers pipeline / round trip: x{fig['live_raw_over_roundtrip']}, with CUDA graphs x{fig['live_raw_over_roundtrip_graphs']}; "
        f"round trip / engine x{fig['live_roundtrip_over_engine']}; client CPU {_fmt(fig['live_client_cpu_ms'], ' ms')}; "
        f"first preview {_fmt(fig['live_first_preview_ms'], ' ms')}",
        f"  CUDA-graph engine ready {fig['graphs_ready_s']} s after load (graphs captured: {model['fast_path']['cuda_graphs']}), "
        f"its first frame {_fmt(fig['graphs_first_frame_ms'], ' ms')}",
    ]
    for engine, found in model["vram"].items():
        start, end = found["start"], found["readings"][-1]
        lines.append(
            f"  {found['frames']} live frames through the websocket, {engine}: allocated {_mib(start['allocated_bytes'])} -> "
            f"{_mib(end['allocated_bytes'])} (peak {_mib(found['max_allocated_bytes'])}), reserved {_mib(start['reserved_bytes'])} -> "
            f"{_mib(end['reserved_bytes'])}, resident {_mib(start['resident_bytes'])} -> {_mib(end['resident_bytes'])}; "
            f"frame {_fmt(found['wall_ms']['median'], ' ms')}"
        )
    oom = model["out_of_memory"]
    lines.append(
        f"  out of memory ({oom['how']}): answered {oom['error_code']} ({oom['error_message']!r}); "
        f"the next job {'succeeded' if oom['served_after'] else 'failed: ' + str(oom['next_job_error'])}"
    )
    return lines


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f} MiB"


def _ratio_text(value: int | None, size: int) -> str:
    return "n/a" if value is None else f"{value / size:.2f}x"
