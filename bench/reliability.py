"""Hostile and careless clients against a real bridge, with its peak memory: ``python bench/reliability.py [ATTACK ...] [--json FILE]``.

Each attack runs against a fresh ``img2img-bridge serve --model tiny --device cpu`` on a loopback port;
the figures are the server process's resident memory before the attack (VmRSS) and its peak during it
(VmHWM), and whether a well-behaved client is still served afterwards. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script: make the checkout's packages importable
    sys.path.insert(0, str(_ROOT))

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["IMG2IMG_BRIDGE_OFFLINE"] = "1"

from bench import fuzz  # noqa: E402
from bridge.editor import protocol as p  # noqa: E402
from bridge.editor.client import BridgeClient, new_job_id  # noqa: E402
from tests.served import Served, serve  # noqa: E402

SIDE = 4096
_MIB = 1 << 20


class Server(Served):
    """``serve`` in a subprocess on a free loopback port (``tests.served``), with what the attacks read of it."""

    def memory_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def answer(self, host: str | None = None) -> tuple[int, bytes]:
        """The status and body of ``GET /health``, sent with ``host`` as its Host header when given."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/health")
        if host:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def serves(self) -> bool:
        """Whether a well-behaved client still gets a result."""
        try:
            with BridgeClient(self.url, name="well-behaved", timeout=30) as client:
                return client.run(_job(64, 64), timeout=120).ok
        except Exception:
            return False


@contextmanager
def serving(*args: str) -> Iterator[Server]:
    with (
        tempfile.TemporaryDirectory(prefix="bridge-logs-") as logs,
        serve("--model", "tiny", "--device", "cpu", *args, log_dir=Path(logs), timeout=180) as served,
    ):
        yield Server(served.process, served.port, served.log)


def _job(width: int, height: int, **fields: Any) -> p.Generate:
    data = bytes(width * height * 4)
    settings: dict[str, Any] = {"prompt": "x", "steps": 1, "strength": 1.0, "seed": 1, "preview": p.PreviewSettings(every=0)}
    settings.update(fields)
    return p.Generate(job_id=new_job_id(), image=p.Image(width, height, data), **settings)


def _zlib_job(stream: bytes, width: int = SIDE, height: int = SIDE, **fields: Any) -> bytes:
    request = _job(1, 1, **fields)
    wire = request.to_wire()
    wire["image"] = {"width": width, "height": height, "encoding": "zlib", "data": stream}
    return _pack(wire)


def _pack(wire: dict[str, Any]) -> bytes:
    import msgpack

    return bytes(msgpack.packb(wire, use_bin_type=True))


def _zeros_stream(size: int) -> bytes:
    compressor = zlib.compressobj(9)
    chunk = bytes(_MIB)
    parts = [compressor.compress(chunk) for _ in range(size // _MIB)]
    return b"".join(parts) + compressor.flush()


def _raw_client(server: Server, name: str = "attacker", max_queue: int | None = 64) -> Any:
    from websockets.sync.client import connect

    ws = connect(server.url, max_size=None, max_queue=max_queue, proxy=None, ping_interval=None)
    ws.send(p.encode(p.Hello(client=name)))
    ws.recv(timeout=30)
    return ws


def _drain(ws: Any, until: Callable[[p.Message], bool], timeout: float = 300) -> list[p.Message]:
    seen: list[p.Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = p.decode_server_message(ws.recv(timeout=deadline - time.monotonic()))
        seen.append(event)
        if until(event):
            break
    return seen


# --- the attacks ------------------------------------------------------------------------------------


def zlib_bombs(server: Server) -> dict[str, Any]:
    """Ten 1 MB zlib streams that inflate to 1 GiB each, claiming a 4096² image."""
    stream = _zeros_stream(1024 * _MIB)
    ws = _raw_client(server)
    codes = []
    for _ in range(10):
        ws.send(_zlib_job(stream))
        codes += [e.code.value for e in _drain(ws, lambda e: isinstance(e, p.Error)) if isinstance(e, p.Error)]
    ws.close()
    return {"sent_bytes_each": len(stream), "answers": sorted(set(codes))}


def queued_zlib_jobs(server: Server) -> dict[str, Any]:
    """24 valid 4096² zlib jobs (65 KB each on the wire, 64 MiB decoded) sent at once, results read."""
    stream = _zeros_stream(SIDE * SIDE * 4)
    ws = _raw_client(server)
    for _ in range(24):
        ws.send(_zlib_job(stream))
    outcomes: dict[str, int] = {}
    ended = 0
    while ended < 24:
        event = p.decode_server_message(ws.recv(timeout=600))
        if p.is_job_end(event):
            ended += 1
            key = event.code.value if isinstance(event, p.Error) else event.TYPE
            outcomes[key] = outcomes.get(key, 0) + 1
    ws.close()
    return {"sent_bytes_each": len(stream), "outcomes": outcomes}


def never_reads(server: Server) -> dict[str, Any]:
    """A client submits 4096² jobs (two results each) and never reads its socket."""
    stream = _zeros_stream(SIDE * SIDE * 4)
    ws = _raw_client(server, max_queue=1)
    sent = 0
    try:
        for _ in range(24):
            ws.send(_zlib_job(stream, count=2))
            sent += 1
    except Exception:
        pass
    deadline = time.monotonic() + 300
    clients: object = 1
    while time.monotonic() < deadline:
        clients = server.health()["clients"]
        if clients == 0:
            break
        time.sleep(0.5)
    closed_by_server = clients == 0
    try:
        ws.close()
    except Exception:
        pass
    return {"jobs_sent": sent, "disconnected_by_the_bridge": closed_by_server}


def long_name(server: Server) -> dict[str, Any]:
    """A client named with 8 MB of text runs a job; how large /health is afterwards."""
    with BridgeClient(server.url, name="n" * (8 * _MIB), timeout=30) as client:
        client.run(_job(64, 64), timeout=120)
    return {"health_bytes": len(server.answer()[1])}


def foreign_host(server: Server) -> dict[str, Any]:
    """A DNS-rebinding page: Host evil.example."""
    status, _ = server.answer(host="evil.example")
    return {"health_status_for_evil_example": status}


def idle_sockets(server: Server) -> dict[str, Any]:
    """1100 TCP connections that send nothing, then a well-behaved client while they stay open."""
    log_before = server.log.stat().st_size
    sockets = []
    for _ in range(1100):
        sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
    served = server.serves()
    time.sleep(12)  # past the handshake timeout: the bridge should have closed them all
    closed = 0
    for sock in sockets:
        sock.settimeout(0.5)
        try:
            closed += sock.recv(1) == b""
        except OSError:
            pass
        sock.close()
    return {
        "sockets": 1100,
        "client_served_meanwhile": served,
        "closed_by_the_bridge": closed,
        "log_bytes": server.log.stat().st_size - log_before,
    }


def silent_websockets(server: Server) -> dict[str, Any]:
    """100 websockets that never say hello."""
    from websockets.sync.client import connect

    opened, refused = [], 0
    for _ in range(100):
        try:
            opened.append(connect(server.url, proxy=None, ping_interval=None))
        except Exception:
            refused += 1
    closed = 0
    for ws in opened:
        try:
            ws.recv(timeout=30)
        except Exception as exc:
            closed += "hello" in str(exc)
    return {"accepted": len(opened), "refused_503": refused, "closed_for_no_hello": closed, "client_served_after": server.serves()}


def load_storm(server: Server) -> dict[str, Any]:
    """30 model loads from one client, and another client's job latency meanwhile."""

    with BridgeClient(server.url, name="victim", timeout=30) as victim, BridgeClient(server.url, name="storm", timeout=30) as storm:

        def latency() -> float:
            started = time.perf_counter()
            victim.run(_job(64, 64), timeout=300)
            return round((time.perf_counter() - started) * 1000, 1)

        quiet = min(latency() for _ in range(3))
        for index in range(30):
            storm.load_model("broken" if index % 2 else "tiny")
        during = latency()
    return {"job_ms_quiet": quiet, "job_ms_during_30_loads": during}


def large_layers(server: Server) -> dict[str, Any]:
    """One client sends eight 4096² PNG layers; another measures how long the bridge takes to answer it meanwhile."""
    import io

    import numpy as np
    from PIL import Image as PILImage

    ramp = np.linspace(0, 255, SIDE, dtype=np.uint8)
    pixels = np.dstack(
        [
            np.tile(ramp, (SIDE, 1)),
            np.tile(ramp[:, None], (1, SIDE)),
            np.full((SIDE, SIDE), 90, np.uint8),
            np.full((SIDE, SIDE), 255, np.uint8),
        ]
    )
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, "RGBA").save(buffer, "PNG", compress_level=1)
    wire = _job(1, 1).to_wire()
    wire["image"] = {"width": SIDE, "height": SIDE, "encoding": "png", "data": buffer.getvalue()}

    def answers(ws: Any, count: int) -> list[float]:
        waits = []
        for index in range(count):
            started = time.perf_counter()
            ws.send(p.encode(p.Cancel(job_id=f"probe-{index}")))
            ws.recv(timeout=60)
            waits.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        return waits

    probe = _raw_client(server, name="probe")
    quiet = answers(probe, 100)
    sender = _raw_client(server, name="layers")
    frames = []
    for _ in range(8):
        wire["job_id"] = new_job_id()
        frames.append(_pack(wire))
    done = threading.Event()

    def send() -> None:
        for frame in frames:
            sender.send(frame)
        done.set()

    threading.Thread(target=send, daemon=True).start()
    busy: list[float] = []
    while not done.is_set() or len(busy) < 300:  # about four seconds: the layers are decoded meanwhile
        busy += answers(probe, 10)
    probe.close()
    sender.close()
    return {
        "png_bytes_each": len(frames[0]),
        "answer_ms_quiet_median": round(sorted(quiet)[len(quiet) // 2], 1),
        "answer_ms_quiet_max": round(max(quiet), 1),
        "answer_ms_during_median": round(sorted(busy)[len(busy) // 2], 1),
        "answer_ms_during_max": round(max(busy), 1),
        "probes_during": len(busy),
    }


def fuzz_100k(server: Server) -> dict[str, Any]:
    """100 000 mutated messages."""
    report = fuzz.run(server.url, messages=100_000, seed=0)
    result = asdict(report)
    result["internal"] = len(report.internal)
    result["crashed"] = server.process.poll() is not None
    return result


ATTACKS: dict[str, Callable[[Server], dict[str, Any]]] = {
    f.__name__: f
    for f in (
        zlib_bombs,
        queued_zlib_jobs,
        never_reads,
        long_name,
        foreign_host,
        idle_sockets,
        silent_websockets,
        load_storm,
        large_layers,
        fuzz_100k,
    )
}


def measure(name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as models:
        broken = Path(models) / "broken"
        broken.mkdir()
        (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
        with serving("--models-dir", models) as server:
            before = server.memory_kib("VmRSS")
            started = time.perf_counter()
            figures = ATTACKS[name](server)
            figures.update(
                seconds=round(time.perf_counter() - started, 1),
                rss_before_mib=round(before / 1024),
                peak_rss_mib=round(server.memory_kib("VmHWM") / 1024),
                still_serves=server.serves(),
                alive=server.process.poll() is None,
            )
            return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/reliability.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("attacks", nargs="*", help=f"default: all of {', '.join(ATTACKS)}")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    unknown = set(args.attacks) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    results = {}
    for name in args.attacks or list(ATTACKS):
        results[name] = measure(name)
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
