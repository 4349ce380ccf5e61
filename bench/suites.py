"""The measurements, each run interleaved round by round so that drift and neighbours hit every case alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any

from bridge.engine import Engine

from . import server_patches, timeline, timing
from .clients import ClientProcess
from .inprocess import InProcessEngine, RawPipeline, request_for, sample_rgba
from .profiles import JOB_PROTOTYPE, SHIPPED, JobSettings, ModelCase, Profile

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


def compare_model(
    case: ModelCase, raw_pipe: Any, engine: Engine, worker: Executor, url: str, pure: ClientProcess, native: ClientProcess, rounds: int
) -> dict[str, Any]:
    """(a) raw pipeline, (b) engine in-process, (c) round trip, with and without previews; then a live frame.

    (a) and (b) run on ``worker``, the thread on which the server runs its engine: once a second
    thread has run torch on the CPU, libgomp finds more OpenMP threads than cores and stops
    spinning between parallel regions, which made every job here about 2.5x slower.
    """
    raw = RawPipeline(raw_pipe, engine)
    in_process = InProcessEngine(engine)
    job, job_previews = case.job, case.job.with_previews()
    pixels = sample_rgba(job.side)
    image = raw.working_image(job)
    plain_request, preview_request = request_for(job, pixels), request_for(job_previews, pixels)

    def on_worker(call: Callable[[], Any]) -> Case:
        return lambda: worker.submit(call).result()

    def round_trip(client: ClientProcess, settings: JobSettings, variant: str = SHIPPED) -> Case:
        client_variant, _, server_variant = variant.partition("|")

        def case() -> dict[str, Any]:
            with server_patches.patched(server_patches.parse_variant(server_variant)):
                return client.ask("job", url=url, variant=client_variant, **asdict(settings))

        return case

    # (a) against (b) on their own first, then everything interleaved
    raw_case = on_worker(lambda: {"wall_ms": raw.call(job, image)})
    engine_case = on_worker(lambda: in_process.call(job, plain_request))
    alone = interleaved({"raw": raw_case, "engine": engine_case}, rounds)
    cases: dict[str, Case] = {
        "raw": raw_case,
        "engine": engine_case,
        "engine_previews": on_worker(lambda: in_process.call(job_previews, preview_request)),
        "roundtrip": round_trip(pure, job),
        "roundtrip_previews": round_trip(pure, job_previews),
        "roundtrip_native": round_trip(native, job),
        "roundtrip_throttled": round_trip(pure, job, JOB_PROTOTYPE),
    }
    jobs = interleaved(cases, rounds)

    live = case.live
    live_request = request_for(live, sample_rgba(live.side))
    live_cases: dict[str, Case] = {
        "engine": on_worker(lambda: in_process.call(live, live_request)),
        "roundtrip": round_trip(pure, live),
        "roundtrip_throttled": round_trip(pure, live, JOB_PROTOTYPE),
        "roundtrip_native": round_trip(native, live),
    }
    lives = interleaved(live_cases, rounds)
    return {
        "job": asdict(job),
        "live": asdict(live),
        "alone_samples": _summaries(alone),
        "job_samples": _summaries(jobs),
        "live_samples": _summaries(lives),
    }


def _summaries(samples: dict[str, dict[str, timing.Samples]]) -> dict[str, dict[str, dict[str, float]]]:
    return {name: {key: s.summary() for key, s in by_key.items()} for name, by_key in samples.items()}


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
        by_side[str(side)] = {"bytes": side * side * 4, "samples": _summaries(interleaved(cases, profile.transport_rounds, warmup=0))}
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
