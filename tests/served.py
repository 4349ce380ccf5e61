"""``img2img-bridge serve`` as a separate process, as a user starts it (standard library only).

The client tests also run under Python 3.10, where the server's dependencies
are absent: the server then runs under IMG2IMG_SERVER_PYTHON (the project's venv).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def server_python() -> str:
    return os.environ.get("IMG2IMG_SERVER_PYTHON") or sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, process: subprocess.Popen[str], port: int, log: Path, token: str | None = None) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.token = token

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def health(self) -> dict[str, object]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/health")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.loads(response.read()))


@contextmanager
def serve(*args: str, log_dir: Path, timeout: float = 120.0, token: str | None = None, unset: tuple[str, ...] = ()) -> Iterator[Served]:
    """Start the bridge in a subprocess (without the environment variables in ``unset``) and wait until
    /health says its model is no longer loading."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("w") as out:
        process = subprocess.Popen(
            [server_python(), "-m", "bridge", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    served = Served(process, port, log, token)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the bridge exited with {process.returncode}:\n{log.read_text()}")
            try:
                if served.health()["status"] != "loading":
                    break
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # a bridge with a token: up, its state is its own business
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge did not come up:\n{log.read_text()}")
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
