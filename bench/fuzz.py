"""Mutated client messages against a running bridge: ``python bench/fuzz.py URL [--messages N] [--seed S]``.

Valid messages (generate in every encoding, with and without masks, cancel, list_models, load_model) are
mutated (fields dropped, retyped, resized, bytes flipped, frames cut short) and sent over one connection.
Every answer is read; an ``internal`` error is a bug, and a ``list_models`` that goes unanswered for
``HANG_SECONDS`` is a hang. Jobs the bridge accepts are cancelled at once so the fuzz stays fast.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script: make the checkout's packages importable
    sys.path.insert(0, str(_ROOT))

import msgpack  # noqa: E402

from bridge.editor import protocol as p  # noqa: E402

HANG_SECONDS = 30.0
#: a probe (a cancel of a job that does not exist) goes out after this many mutated messages,
#: to prove the bridge still answers; the connection handles frames in order, so its answer comes last
PROBE_EVERY = 100


@dataclass
class FuzzReport:
    messages: int = 0
    answers: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    internal: list[str] = field(default_factory=list)
    hangs: int = 0
    reconnects: int = 0
    jobs_accepted: int = 0
    seconds: float = 0.0


def _png(width: int, height: int, rng: random.Random) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.frombytes("RGBA", (width, height), rng.randbytes(width * height * 4)).save(buffer, "PNG")
    return buffer.getvalue()


def _valid(rng: random.Random, pngs: list[bytes]) -> dict[str, Any]:
    """One valid client message as a wire map."""
    kind = rng.choice(("generate", "generate", "generate", "cancel", "list_models", "load_model"))
    if kind == "cancel":
        return {"type": "cancel", "job_id": f"job-{rng.randrange(1000)}"}
    if kind == "list_models":
        return {"type": "list_models"}
    if kind == "load_model":
        return {"type": "load_model", "model": rng.choice(("tiny", "nope", "a/b", "../x"))}
    width, height = rng.choice(((8, 8), (16, 12), (32, 32)))
    encoding = rng.choice(("raw", "zlib", "png"))
    pixels = rng.randbytes(width * height * 4)
    data = {"raw": pixels, "zlib": zlib.compress(pixels, 1), "png": pngs[0] if (width, height) == (8, 8) else b""}[encoding]
    if encoding == "png" and not data:
        encoding, data = "raw", pixels
    message: dict[str, Any] = {
        "type": "generate",
        "job_id": f"job-{rng.randrange(1000)}",
        "image": {"width": width, "height": height, "encoding": encoding, "data": data},
        "prompt": "a fox",
        "steps": rng.randint(1, 2),
        "strength": rng.choice((0.3, 1.0)),
        "seed": rng.randrange(100),
        "preview": {"every": rng.randint(0, 1), "max_size": 16, "encoding": "raw"},
    }
    if rng.random() < 0.4:
        mask = bytes(rng.choice((0, 255)) for _ in range(width * height))
        if rng.random() < 0.5:
            message["mask"] = {"width": width, "height": height, "encoding": "zlib", "data": zlib.compress(mask)}
        else:
            message["mask"] = {"width": width, "height": height, "data": mask}
    return message


def _random_value(rng: random.Random) -> Any:
    choices: list[Any] = [
        None, True, False, 0, -1, 1, 2**31, -(2**63), 2**64 - 1, 0.5, -1e308, 1e308, float("nan"), float("inf"),
        "", "x" * rng.randrange(1, 5000), "\u0000\ud7ff", b"", rng.randbytes(rng.randrange(1, 300)), [], [1, "a", None],
        {}, {"width": 1}, {"width": 2**40, "height": 2**40, "data": b""}, "raw", "zlib", "png", "jpeg", "tiny",
    ]  # fmt: skip
    return rng.choice(choices)


def _mutate_map(obj: dict[str, Any], rng: random.Random) -> None:
    target = obj
    nested = [k for k, v in obj.items() if isinstance(v, dict)]
    if nested and rng.random() < 0.4:
        target = obj[rng.choice(nested)]
    keys = list(target)
    action = rng.randrange(5)
    if action == 0 and keys:
        del target[rng.choice(keys)]
    elif action == 1 and keys:
        target[rng.choice(keys)] = _random_value(rng)
    elif action == 2:
        target[rng.choice(("type", "job_id", "width", "height", "encoding", "data", "mask", "count", "zz"))] = _random_value(rng)
    elif action == 3 and "width" in target and isinstance(target.get("width"), int):
        target[rng.choice(("width", "height"))] = rng.choice((0, 1, 4097, 8193, 100_000, -5))
    else:
        obj["type"] = rng.choice(("generate", "cancel", "load_model", "list_models", "teleport", 7))


def _mutate_bytes(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    action = rng.randrange(3)
    if action == 0 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif action == 1 and data:
        del data[rng.randrange(len(data)) :]
    else:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def frames(seed: int, count: int) -> list[bytes]:
    """``count`` mutated frames, the same ones for the same seed."""
    rng = random.Random(seed)
    pngs = [_png(8, 8, rng)]
    out = []
    for _ in range(count):
        obj = _valid(rng, pngs)
        for _ in range(rng.randint(1, 3)):
            _mutate_map(obj, rng)
        frame = bytes(msgpack.packb(obj, use_bin_type=True))
        if rng.random() < 0.25:
            frame = _mutate_bytes(frame, rng)
        out.append(frame)
    return out


class _Session:
    """One greeted connection; a reader thread tallies answers and cancels accepted jobs."""

    def __init__(self, url: str, report: FuzzReport, token: str | None) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.report = report
        self.ws = connect(url, max_size=None, proxy=None, additional_headers=headers, ping_interval=None)
        self.ws.send(p.encode(p.Hello(client="fuzz")))
        welcome = p.decode_server_message(self.ws.recv(timeout=HANG_SECONDS))
        if not isinstance(welcome, p.Welcome):
            raise RuntimeError(f"no welcome: {welcome}")
        self.answered = threading.Event()
        self._probe = ""
        self._probes = 0
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                event = p.decode_server_message(self.ws.recv())
                self.report.answers += 1
                if isinstance(event, p.Error) and self._probe and self._probe in event.message:
                    self.report.answers -= 1
                    self.answered.set()
                elif isinstance(event, p.Error):
                    self.report.codes[event.code.value] = self.report.codes.get(event.code.value, 0) + 1
                    if event.code is p.ErrorCode.INTERNAL:
                        self.report.internal.append(event.message)
                elif isinstance(event, p.Queued):
                    self.report.jobs_accepted += 1
                    self.ws.send(p.encode(p.Cancel(job_id=event.job_id)))
        except Exception:
            self.closed.set()

    def probe(self) -> bool:
        """Whether the bridge answers a probe within HANG_SECONDS (all frames before it are then answered)."""
        self._probes += 1
        self._probe = f"fuzz-probe-{self._probes}"
        self.answered.clear()
        self.ws.send(p.encode(p.Cancel(job_id=self._probe)))
        return self.answered.wait(HANG_SECONDS) or self.closed.is_set()

    def close(self) -> None:
        self.ws.close()
        self._reader.join(10)


def run(url: str, messages: int, seed: int = 0, token: str | None = None) -> FuzzReport:
    report = FuzzReport()
    started = time.perf_counter()
    session = _Session(url, report, token)
    for index, frame in enumerate(frames(seed, messages)):
        if session.closed.is_set():  # the bridge may close after some frames (a hello of another protocol)
            report.reconnects += 1
            session = _Session(url, report, token)
        try:
            session.ws.send(frame)
        except Exception:
            session.closed.set()
            continue
        report.messages += 1
        if (index + 1) % PROBE_EVERY == 0 and not session.probe():
            report.hangs += 1
    if not session.closed.is_set() and not session.probe():
        report.hangs += 1
    session.close()
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/fuzz.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    report = run(args.url, args.messages, args.seed, args.token)
    print(json.dumps(asdict(report), indent=2))
    return 1 if report.internal or report.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
