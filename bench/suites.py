"""The measurements, each run interleaved round by round so that drift and neighbours hit every case alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from bridge.engine import Engine
from bridge.graphs import OneStepFrame
from tests.memory import exhausted_memory

from . import server_patches, timeline, timing
from .clients import ClientProcess
from .inprocess import RAW_COMPILED, InProcessEngine, RawPipeline, Sync, request_for, sample_rgba
from .profiles import EVERY_PROGRESS, SHIPPED, SOCKET, JobSettings, Profile
from .transport import serving

Case = Callable[[], dict[str, Any]]
_WARMUP_ROUNDS = 1


def interleaved(cases: dict[str, Case], rounds: int, warmup: int = _WARMUP_ROUNDS) -> dict[str, dict[str, timing.Samples]]:
    """Run every case once per round, ``warmup`` rounds discarded; each number a case returns becomes a sample."""
    samples: dict[str, dict[str, timing.Samples]] = {name: {} for name in cases}
    for round_index in range(warmup + rounds):
        for name, case in cases.items():
            measured = case()
            if round_index < warmup:
                continue
            for key, value in measured.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    samples[name].setdefault(key, timing.Samples()).add(float(value))
    return samples


def _on(worker: Executor, call: Callable[[], Any]) -> Case:
    return lambda: worker.submit(call).result()


def _round_trip(client: ClientProcess, url: str, settings: JobSettings, variant: str = SHIPPED) -> Case:
    client_variant, _, server_variant = variant.partition("|")

    def case() -> dict[str, Any]:
        with server_patches.patched(server_patches.parse_variant(server_variant)):
            return client.ask("job", url=url, variant=client_variant, **asdict(settings))

    return case


def compare_job(
    job: JobSettings, raw: RawPipeline, engine: Engine, worker: Executor, url: str, pure: ClientProcess, native: ClientProcess, rounds: int
) -> dict[str, Any]:
    """A whole job: (a) raw pipeline, (b) engine in-process, (c) round trip, with and without previews every step.

    (a) and (b) run on ``worker``, the thread on which the server runs its engine: once a second
    thread has run torch on the CPU, libgomp finds more OpenMP threads than cores and stops
    spinning between parallel regions, which made every job here about 2.5x slower.
    """
    in_process = InProcessEngine(engine)
    job_previews = job.with_previews()
    pixels = sample_rgba(job.side)
    image = raw.working_image(job)
    plain_request, preview_request = request_for(job, pixels), request_for(job_previews, pixels)

    # (a) against (b) on their own first, then everything interleaved
    raw_case = _on(worker, lambda: {"wall_ms": raw.call(job, image)})
    engine_case = _on(worker, lambda: in_process.call(job, plain_request))
    alone = interleaved({"raw": raw_case, "engine": engine_case}, rounds)
    cases: dict[str, Case] = {
        "raw": raw_case,
        "engine": engine_case,
        "engine_previews": _on(worker, lambda: in_process.call(job_previews, preview_request)),
        "roundtrip": _round_trip(pure, url, job),
        "roundtrip_previews": _round_trip(pure, url, job_previews),
        "roundtrip_native": _round_trip(native, url, job),
        "roundtrip_socket": _round_trip(pure, url, job, SOCKET),
        "roundtrip_every_progress": _round_trip(pure, url, job, EVERY_PROGRESS),
    }
    jobs = interleaved(cases, rounds)
    return {"job": asdict(job), "alone_samples": _summaries(alone), "job_samples": _summaries(jobs)}


def variations(job: JobSettings, engine: Engine, worker: Executor, rounds: int, count: int = 4) -> dict[str, Any]:
    """``count`` variations of one job against ``count`` one-variation jobs with the same seeds, in-process.

    ``batched`` is the shipped engine (the variations denoised together); ``sequential`` the same job on an
    engine that denoises one variation at a time (encode and prompt still shared); ``singles`` the jobs apart.
    """
    in_process = InProcessEngine(engine)
    one_at_a_time = InProcessEngine(Engine(engine.model, max_batch=1))
    pixels = sample_rgba(job.side)
    together = replace(request_for(job, pixels), count=count)
    apart = [request_for(replace(job, seed=job.seed + index), pixels) for index in range(count)]
    cases: dict[str, Case] = {
        "batched": _on(worker, lambda: in_process.call(job, together)),
        "sequential": _on(worker, lambda: one_at_a_time.call(job, together)),
        "singles": _on(worker, lambda: {"wall_ms": sum(in_process.call(job, request)["wall_ms"] for request in apart)}),
    }
    return {"count": count, "variation_samples": _summaries(interleaved(cases, rounds))}


def fast_path(engine: Engine, worker: Executor, live: JobSettings) -> tuple[Engine, dict[str, Any]]:
    """An engine as ``serve --cuda-graphs`` builds it, on the same loaded model: warmed up at ``live.side``.

    Returns it with how long it took to be ready after the model had loaded and its first live frame.
    """

    def build() -> tuple[Engine, dict[str, Any]]:
        sync = Sync(engine)
        sync()
        started = time.perf_counter()
        graphed = Engine(engine.model, cuda_graphs=True)
        graphed.warm_up(live.side)
        sync()
        ready_s = time.perf_counter() - started
        first = InProcessEngine(graphed).call(live, request_for(live, sample_rgba(live.side)))
        return graphed, {"ready_s": round(ready_s, 3), "first_frame_ms": round(first["wall_ms"], 2)}

    graphed, info = worker.submit(build).result()
    info["cuda_graphs"] = engine.device.type == "cuda"
    return graphed, info


def compare_live(
    live: JobSettings,
    raws: dict[str, RawPipeline],
    engine: Engine,
    graphed: Engine,
    bridge: Any,
    worker: Executor,
    url: str,
    pure: ClientProcess,
    native: ClientProcess,
    rounds: int,
) -> dict[str, Any]:
    """A live frame: diffusers' set-ups, the engine in-process and through the websocket, each with and without CUDA graphs."""
    request = request_for(live, sample_rgba(live.side))
    image = next(iter(raws.values())).working_image(live)
    primed: dict[str, float] = {}
    for name, raw in raws.items():
        if name == RAW_COMPILED:  # compiles and records its graphs here, outside the measured rounds
            primed[name] = round(worker.submit(raw.prime, live, image).result(), 1)
    cases: dict[str, Case] = {name: _on(worker, _raw_call(raw, live, image)) for name, raw in raws.items()}
    cases["engine"] = _on(worker, lambda: InProcessEngine(engine).call(live, request))
    cases["engine_graphs"] = _on(worker, lambda: InProcessEngine(graphed).call(live, request))
    frame_case, frame_info = _frame_graph(engine, next(iter(raws.values())), live, worker)
    if frame_case is not None:
        cases["frame_graph"] = frame_case
    cases["roundtrip"] = _round_trip(pure, url, live)
    shipped_graphs = _round_trip(pure, url, live)

    def roundtrip_graphs() -> dict[str, Any]:
        with serving(bridge, graphed):
            return shipped_graphs()

    cases["roundtrip_graphs"] = roundtrip_graphs
    cases["roundtrip_native"] = _round_trip(native, url, live)
    cases["roundtrip_socket"] = _round_trip(pure, url, live, SOCKET)
    cases["roundtrip_every_progress"] = _round_trip(pure, url, live, EVERY_PROGRESS)
    return {"live": asdict(live), "prime_s": primed, "frame_graph": frame_info, "live_samples": _summaries(interleaved(cases, rounds))}


def _frame_graph(engine: Engine, raw: RawPipeline, live: JobSettings, worker: Executor) -> tuple[Case | None, dict[str, Any]]:
    """The prototype of a whole one-step frame in one CUDA graph (``bridge.graphs.OneStepFrame``), where it applies.

    It times the frame alone: TAESD in, UNet, TAESD out and the uint8 copies both ways,
    on the working image; the engine's decoding, scaling and blending on the CPU are not in it.
    """
    model = engine.model
    if live.guidance > 1.0 or not OneStepFrame.supports(engine.pipe, model.tiny_vae, live.steps, live.strength):
        return None, {"applies": False}
    rgb = np.asarray(raw.working_image(live))
    sync = Sync(engine)

    def build() -> tuple[OneStepFrame, Any, float]:
        with engine.torch.inference_mode():
            embeds = engine.pipe.encode_prompt(live.prompt, engine.device, 1, False)[0]
        sync()
        started = time.perf_counter()
        frame = OneStepFrame(engine.pipe, model.tiny_vae, live.steps, live.strength, rgb.shape[0], rgb.shape[1], capture=True)
        frame(rgb, embeds, live.seed)
        sync()
        return frame, embeds, time.perf_counter() - started

    try:
        frame, embeds, recorded_s = worker.submit(build).result()
    except Exception as exc:  # a prototype: its failure is a finding, not the end of the run
        return None, {"applies": True, "error": f"{exc.__class__.__name__}: {exc}"}

    def call() -> dict[str, float]:
        sync()
        started = time.perf_counter()
        frame(rgb, embeds, live.seed)
        sync()
        return {"wall_ms": (time.perf_counter() - started) * 1000}

    return _on(worker, call), {"applies": True, "captured": engine.device.type == "cuda", "recorded_s": round(recorded_s, 3)}


def _raw_call(raw: RawPipeline, live: JobSettings, image: Any) -> Callable[[], dict[str, float]]:
    return lambda: {"wall_ms": raw.call(live, image)}


def vram(live: JobSettings, engines: dict[str, Engine], bridge: Any, url: str, pure: ClientProcess, frames: int) -> dict[str, Any]:
    """``frames`` live frames through the websocket per engine: GPU memory allocated along the way, and its peak.

    On a CPU the allocator figures are null and the process's resident memory stands in.
    """
    found: dict[str, Any] = {}
    for name, engine in engines.items():
        memory = _DeviceMemory(engine)
        frame = _round_trip(pure, url, live)
        readings: list[dict[str, Any]] = []
        walls = timing.Samples()
        with serving(bridge, engine):
            frame()
            memory.reset_peak()
            start = memory.now()
            every = max(1, frames // 10)
            for index in range(1, frames + 1):
                walls.add(frame()["wall_ms"])
                if index % every == 0 or index == frames:
                    readings.append({"frame": index, **memory.now()})
        first, last = start["allocated_bytes"], readings[-1]["allocated_bytes"]
        found[name] = {
            "frames": frames,
            "start": start,
            "readings": readings,
            "growth_bytes": None if first is None or last is None else last - first,
            "max_allocated_bytes": memory.peak(),
            "wall_ms": walls.summary(),
        }
    return found


class _DeviceMemory:
    def __init__(self, engine: Engine) -> None:
        self.torch = engine.torch
        self.device = engine.device if engine.device.type == "cuda" else None

    def reset_peak(self) -> None:
        if self.device is not None:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def now(self) -> dict[str, int | None]:
        cuda = self.torch.cuda
        if self.device is not None:
            cuda.synchronize(self.device)
        return {
            "allocated_bytes": None if self.device is None else int(cuda.memory_allocated(self.device)),
            "reserved_bytes": None if self.device is None else int(cuda.memory_reserved(self.device)),
            "resident_bytes": timing.resident_bytes(),
        }

    def peak(self) -> int | None:
        return None if self.device is None else int(self.torch.cuda.max_memory_allocated(self.device))


def out_of_memory(job: JobSettings, engine: Engine, bridge: Any, url: str, pure: ClientProcess) -> dict[str, Any]:
    """A job that runs out of memory is answered with OUT_OF_MEMORY, and the next job on the same connection succeeds.

    On CUDA the allocator is capped 16 MiB above what it already holds, so the job
    really exhausts it; elsewhere the UNet raises the error CUDA would (tests/memory.py).
    """
    job = replace(job, live=False, preview_every=0)
    with serving(bridge, engine):
        with exhausted_memory(engine, headroom=16 << 20) as how:
            failed = pure.ask("job", url=url, variant="shipped", allow_error=True, **asdict(job))
        after = pure.ask("job", url=url, variant="shipped", allow_error=True, **asdict(job))
    return {
        "how": how,
        "job": asdict(job),
        "error_code": failed.get("error_code"),
        "error_message": failed.get("error_message"),
        "next_job_error": after.get("error_code"),
        "served_after": "error_code" not in after,
        "next_job_ms": after.get("wall_ms"),
    }


def _summaries(samples: dict[str, dict[str, timing.Samples]]) -> dict[str, dict[str, dict[str, float]]]:
    return {name: {key: s.summary() for key, s in by_key.items()} for name, by_key in samples.items()}


#: a layer this small makes a round trip of a few milliseconds, where the neighbours' noise is as large as the
#: differences between variants: its cases run this many times as many rounds (they cost little)
_SMALL_LAYER_SIDE = 1024
_SMALL_LAYER_ROUNDS = 5


def transport(url: str, echo_url: str | None, pure: ClientProcess, native: ClientProcess, profile: Profile) -> dict[str, Any]:
    """Layers through the server (its engine an ``EchoEngine``) per client and server variant; then peak memory."""
    by_side: dict[str, Any] = {}
    for side in profile.transport_sides:
        variants = [_TransportCase(pure, url, side, v) for v in profile.transport_variants]
        variants += [_TransportCase(native, url, side, v) for v in profile.native_variants]
        for variant in variants:  # each must hand the layer back unchanged; this is also its warm-up
            variant(check=True)
        cases: dict[str, Case] = {v.name: v for v in variants}
        if echo_url is not None:
            cases["bare pure"] = _bare_case(pure, echo_url, side)
            cases["bare native"] = _bare_case(native, echo_url, side)
        rounds = profile.transport_rounds * (_SMALL_LAYER_ROUNDS if side <= _SMALL_LAYER_SIDE else 1)
        by_side[str(side)] = {"bytes": side * side * 4, "rounds": rounds, "samples": _summaries(interleaved(cases, rounds, warmup=0))}
    largest = max(profile.transport_sides)
    memory = {variant: _memory_case(_TransportCase(pure, url, largest, variant)) for variant in profile.memory_variants}
    return {"sides": by_side, "memory": {"side": largest, "bytes": largest * largest * 4, "variants": memory}}


class _TransportCase:
    """One layer size through the bridge and back, with a client variant (in the worker) and a server variant (here)."""

    def __init__(self, client: ClientProcess, url: str, side: int, variant: str) -> None:
        self.client, self.url, self.side = client, url, side
        self.client_variant, _, server_variant = variant.partition("|")
        self.server_variant = server_variant or "shipped"
        self.name = f"{'pure' if client.pure else 'native'} {variant}"

    def __call__(self, *, check: bool = False, memory: bool = False) -> dict[str, Any]:
        with server_patches.patched(server_patches.parse_variant(self.server_variant)):
            return self.client.ask("transport", url=self.url, variant=self.client_variant, side=self.side, check=check, memory=memory)


def _bare_case(client: ClientProcess, url: str, side: int) -> Case:
    return lambda: client.ask("bare", url=url, side=side)


def _memory_case(case: _TransportCase) -> dict[str, Any]:
    """Peak extra resident memory of the client process and of the server process during one round trip.

    Both ends keep the last frame they handled alive until the next one (reader
    loops' locals), so the measured trip runs on a fresh connection after a small one.
    """
    case.client.ask("close_all")
    _TransportCase(case.client, case.url, 64, f"{case.client_variant}|{case.server_variant}")()
    timing.release_free_memory()
    server_before = timing.resident_bytes()
    timing.reset_peak()
    measured = case(memory=True)
    server_peak = timing.peak_bytes()
    timing.release_free_memory()
    server_after = timing.resident_bytes()
    known = server_before is not None and server_peak is not None and server_after is not None
    return {
        "client_peak_extra_bytes": measured["peak_extra_bytes"],
        "client_retained_bytes": measured.get("retained_bytes"),
        "server_peak_extra_bytes": max(0, server_peak - server_before) if known else None,  # type: ignore[operator]
        "server_retained_bytes": max(0, server_after - server_before) if known else None,  # type: ignore[operator]
        "wall_ms": measured["wall_ms"],
    }


def timelines(url: str, pure: ClientProcess, side: int, variants: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """Stage-by-stage timelines of one round trip per variant (see bench/timeline.py); echo engine."""
    found = {}
    for variant in variants:
        case = _TransportCase(pure, url, side, variant)
        case()
        marks: list[timeline.Mark] = []
        with server_patches.patched(server_patches.parse_variant(case.server_variant)), timeline.server_marks(marks):
            answer = pure.ask("transport", url=url, variant=case.client_variant, side=side, marks=True)
        found[variant] = timeline.merge(answer["marks"], marks)
    return found


def client_profiles(url: str, pure: ClientProcess, sides: tuple[int, ...], variants: tuple[str, ...]) -> dict[str, str]:
    """cProfile tables of the pure-Python client (all its threads) for one round trip per size and variant; echo engine."""
    tables = {}
    for side in sides:
        for variant in variants:
            case = _TransportCase(pure, url, side, variant)
            case()  # warm the server side
            with server_patches.patched(server_patches.parse_variant(case.server_variant)):
                answer = pure.ask("profile", url=url, variant=case.client_variant, side=side, top=25)
            tables[f"{side} {variant}"] = f"wall {answer['wall_ms']:.1f} ms, client CPU {answer['cpu_ms']:.1f} ms\n{answer['table']}"
    return tables


def wait_ready(bridge: Any, timeout: float = 600.0) -> Engine:
    """The bridge's engine once its model has loaded; raises if loading failed."""
    deadline = time.monotonic() + timeout
    while bridge.engine is None:
        if time.monotonic() > deadline or bridge.model_state.status.value in ("error", "no-model"):
            raise RuntimeError(f"the bridge did not load its model: {bridge.model_state.message}")
        time.sleep(0.05)
    engine: Engine = bridge.engine
    return engine
