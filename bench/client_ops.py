"""What the client worker measures: transport round trips, jobs, the bare stack, and cProfile tables.

Standard library and the client library only (see ``client_worker``).
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import os
import pstats
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bridge.editor import client as bridge_client
from bridge.editor import protocol as p
from bridge.editor.dependencies import msgpack, websockets_client, websockets_frames, websockets_protocol

from . import client_patches, timing

_MARK = "@@ "


def implementations() -> dict[str, str]:
    """Which websockets and msgpack code is running (C speedups or pure Python), named as outside a package."""
    vendored = f"{p.__package__}._vendor."
    return {
        "python": sys.version.split()[0],
        "websockets": sys.modules[websockets_frames.__package__ or "websockets"].__version__,
        "websockets_apply_mask": websockets_frames.apply_mask.__module__.removeprefix(vendored),
        "websockets_stream_reader": websockets_protocol.StreamReader.__module__.removeprefix(vendored),
        "msgpack": ".".join(str(v) for v in msgpack.version),
        "msgpack_unpacker": msgpack.Unpacker.__module__.removeprefix(vendored),
        "client_library": bridge_client.__file__ or "?",
    }


def is_pure(info: dict[str, str]) -> bool:
    """No C speedups: websockets masks in Python (its own ``utils`` or the client's faster ``fast_apply_mask``)."""
    masks_in_python = info["websockets_apply_mask"] in ("websockets.utils", bridge_client.__name__)
    return masks_in_python and info["msgpack_unpacker"] == "msgpack.fallback"


_PIXELS: dict[int, bytes] = {}


def rgba(side: int) -> bytes:
    """Random opaque RGBA pixels, made once per size and process."""
    if side not in _PIXELS:
        pixels = bytearray(os.urandom(side * side * 4))
        pixels[3::4] = b"\xff" * (side * side)
        _PIXELS[side] = bytes(pixels)
    return _PIXELS[side]


class Clients:
    """One connected BridgeClient per (url, variant), created under that variant's patches."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], bridge_client.BridgeClient] = {}

    def get(self, url: str, variant: str) -> bridge_client.BridgeClient:
        key = (url, variant)
        client = self._open.get(key)
        if client is None or not client.connected:
            patches = client_patches.parse_variant(variant)
            client = bridge_client.BridgeClient(
                url,
                name=f"bench-{variant}",
                timeout=30,
                shared_memory=client_patches.shares_memory(patches),
                raw_frames=client_patches.raw_frames(patches),
            )
            client.connect()
            self._open[key] = client
        return client

    def close(self) -> None:
        for client in self._open.values():
            client.close()
        self._open.clear()


def transport(clients: Clients, cmd: dict[str, Any]) -> dict[str, Any]:
    """A layer through the bridge and back (the server's engine echoes it): wall, CPU and peak memory."""
    side = int(cmd["side"])
    pixels = rgba(side)
    request = p.Generate(
        job_id=bridge_client.new_job_id(),
        image=p.Image(side, side, pixels),
        prompt="transport",
        steps=1,
        strength=1.0,
        guidance=0.0,
        seed=0,
        preview=p.PreviewSettings(every=0),
    )
    marks: list[tuple[float, float, str, int]] = []
    with client_patches.patched(client_patches.parse_variant(cmd["variant"])):
        client = clients.get(cmd["url"], cmd["variant"])
        with _client_marks(client, marks, bool(cmd.get("marks"))):
            outcome, measured = _measured(lambda: client.run(request, timeout=300), memory=bool(cmd.get("memory")))
    before = measured.pop("resident_before")
    if marks:
        measured["marks"] = marks
    if not outcome.ok:
        raise RuntimeError(f"transport round trip failed: {outcome.error}")
    result = outcome.results[0].image
    if cmd.get("check") and (result.width, result.height, result.data) != (side, side, pixels):
        raise RuntimeError(f"the {side}x{side} layer came back changed")
    if cmd.get("memory"):
        # what stays allocated once the caller has dropped the result
        del outcome, result
        timing.release_free_memory()
        now = timing.resident_bytes()
        measured["retained_bytes"] = None if now is None or before is None else max(0, now - before)
    return {"bytes": len(pixels), **measured}


def job(clients: Clients, cmd: dict[str, Any]) -> dict[str, Any]:
    """One Generate through the bridge with the real engine; previews timed as they arrive."""
    side = int(cmd["side"])
    request = p.Generate(
        job_id=bridge_client.new_job_id(),
        image=p.Image(side, side, rgba(side)),
        prompt=cmd.get("prompt", "a red fox in the snow"),
        steps=int(cmd["steps"]),
        strength=float(cmd["strength"]),
        guidance=float(cmd["guidance"]),
        seed=int(cmd["seed"]),
        preview=p.PreviewSettings(every=int(cmd["preview_every"]), max_size=int(cmd.get("preview_max", 256))),
        live=bool(cmd.get("live", False)),
    )
    first: list[float] = []

    def on_event(event: Any) -> None:
        if isinstance(event, p.Preview) and not first:
            first.append(time.perf_counter())

    with client_patches.patched(client_patches.parse_variant(cmd["variant"])):
        client = clients.get(cmd["url"], cmd["variant"])
        started = time.perf_counter()
        outcome, measured = _measured(lambda: client.run(request, on_event=on_event, timeout=600))
    measured.pop("resident_before")
    if not outcome.ok:
        if cmd.get("allow_error") and outcome.error is not None:
            return {**measured, "error_code": outcome.error.code.name, "error_message": outcome.error.message}
        raise RuntimeError(f"job failed: {outcome.error}")
    return {
        **measured,
        "previews": outcome.previews,
        "first_preview_ms": (first[0] - started) * 1000 if first else None,
        "server_timings": outcome.results[0].timings,
    }


@contextmanager
def _client_marks(client: bridge_client.BridgeClient, marks: list[tuple[float, float, str, int]], on: bool) -> Iterator[None]:
    """Record when the client sends the request and decodes each reply (see bench/timeline.py)."""
    if not on:
        yield
        return
    ws: Any = client._ws
    send, decode, run = ws.send, p.decode_server_message, client.run

    def timed_send(message: Any) -> None:
        started = time.perf_counter()
        send(message)
        marks.append((started, time.perf_counter(), "client: send the request", 0))

    def timed_decode(frame: Any) -> p.Message:
        started = time.perf_counter()
        message = decode(frame)
        marks.append((started, time.perf_counter(), "client: decode a reply", len(frame)))
        return message

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        outcome = run(*args, **kwargs)
        marks.append((started, time.perf_counter(), "client: round trip", 0))
        return outcome

    ws.send, p.decode_server_message, client.run = timed_send, timed_decode, timed_run  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        del ws.send, client.run
        p.decode_server_message = decode


def bare(cmd: dict[str, Any]) -> dict[str, Any]:
    """The bare stack: websockets' sync client and msgpack against an aiohttp echo endpoint."""
    connect = websockets_client.connect

    side = int(cmd["side"])
    pixels = rgba(side)
    variant = client_patches.parse_variant(cmd.get("variant", "shipped"))
    with client_patches.patched(variant), connect(cmd["url"], compression=None, max_size=None, proxy=None) as ws:

        def round_trip() -> Any:
            ws.send(msgpack.packb({"type": "echo", "data": pixels}, use_bin_type=True))
            return msgpack.unpackb(ws.recv(), raw=False)

        round_trip()  # a first frame of this size, so later ones are not the first
        echoed, measured = _measured(round_trip)
    measured.pop("resident_before")
    if len(echoed["data"]) != len(pixels):
        raise RuntimeError("the echo came back short")
    return {"bytes": len(pixels), **measured}


def _measured(action: Any, *, memory: bool = False) -> tuple[Any, dict[str, Any]]:
    """Wall and CPU milliseconds; with ``memory``, freed memory is released first so the peak counts live data."""
    if memory:
        timing.release_free_memory()
    timing.reset_peak()
    resident = timing.resident_bytes()
    cpu = time.process_time()
    started = time.perf_counter()
    value = action()
    wall_ms = (time.perf_counter() - started) * 1000
    cpu_ms = (time.process_time() - cpu) * 1000
    peak = timing.peak_bytes()
    extra = None if peak is None or resident is None else max(0, peak - resident)
    return value, {"wall_ms": wall_ms, "cpu_ms": cpu_ms, "peak_extra_bytes": extra, "resident_before": resident}


# --- cProfile across threads ------------------------------------------------------------------


@contextmanager
def _profiled_threads(profiles: list[cProfile.Profile]) -> Iterator[None]:
    """Profile every thread started inside the block (the websocket's and the client's readers)."""
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    try:
        yield
    finally:
        threading.Thread.run = original  # type: ignore[method-assign]


def profile(cmd: dict[str, Any]) -> dict[str, Any]:
    """cProfile of one transport round trip on a fresh connection, all client threads merged."""
    side = int(cmd["side"])
    rgba(side)
    profiles: list[cProfile.Profile] = []
    clients = Clients()
    main = cProfile.Profile()
    with _profiled_threads(profiles), client_patches.patched(client_patches.parse_variant(cmd["variant"])):
        clients.get(cmd["url"], cmd["variant"])
        main.enable()
        try:
            measured = transport(clients, {**cmd, "check": False})
        finally:
            main.disable()
        clients.close()
    stats = pstats.Stats(main)
    for extra in profiles:
        stats.add(extra)
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(int(cmd.get("top", 20)))
    return {**measured, "table": _trim_table(out.getvalue())}


def _trim_table(text: str) -> str:
    # waiting for the other side (lock acquire, socket recv blocking) is listed but is not client CPU
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:])


def _close_all(clients: Clients) -> dict[str, Any]:
    # a client's reader thread keeps its last frame and event alive until the next one arrives
    clients.close()
    gc.collect()
    return {"closed": True}


def serve(*, expect_pure: bool) -> None:
    """Answer commands from stdin until ``quit`` or end of input."""
    info = implementations()
    if expect_pure and not is_pure(info):
        _answer({"error": f"expected pure-Python websockets and msgpack, got {info}"})
        return
    _answer({"info": info})
    clients = Clients()
    ops = {
        "transport": lambda cmd: transport(clients, cmd),
        "job": lambda cmd: job(clients, cmd),
        "bare": bare,
        "profile": profile,
        "close_all": lambda cmd: _close_all(clients),
    }
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            _answer(ops[cmd["op"]](cmd))
        except Exception as exc:
            _answer({"error": f"{exc.__class__.__name__}: {exc}"})
    clients.close()


def _answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(_MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()
