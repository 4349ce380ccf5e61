"""A real bridge server on a loopback port, run on a background thread for tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from aiohttp import web

from bridge.editor import protocol as p
from bridge.server import BRIDGE, Bridge, ServerConfig, create_app


class RunningBridge:
    def __init__(self, app: web.Application, host: str, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.loop = loop

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{p.WS_PATH}"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def bridge(self) -> Bridge:
        return self.app[BRIDGE]

    def health(self, token: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.http + "/health")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the model asked for at start-up has loaded (or failed to)."""
        deadline = time.monotonic() + timeout
        while self.bridge.loading:
            if time.monotonic() > deadline:
                raise TimeoutError("the bridge did not finish loading its model")
            time.sleep(0.02)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's event loop and return its result."""

        async def wrapper() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_bridge(config: ServerConfig | None = None, host: str = "127.0.0.1", wait: bool = True) -> Iterator[RunningBridge]:
    """Start ``create_app(config)`` on a free loopback port in a thread; stop it afterwards."""
    config = config or ServerConfig(model="tiny")
    if config.model == "tiny" and config.device == "auto":
        config = replace(config, device="cpu")
    started = threading.Event()
    holder: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    async def start() -> None:
        app = create_app(config)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        port = free_port(host)
        await web.TCPSite(runner, host, port).start()
        holder.update(app=app, runner=runner, port=port)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:
            holder["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(holder["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="bridge-test-server", daemon=True)
    thread.start()
    started.wait(60)
    if "error" in holder:
        raise holder["error"]
    running = RunningBridge(holder["app"], host, holder["port"], loop)
    try:
        if wait:
            running.wait_ready()
        yield running
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)


class StepGate:
    """Stands in for a bridge's engine and holds every job at one denoising step until released.

    A job slow enough to watch, without sleeping: ``reached`` is set when a job reports the step,
    and the job goes on when ``released`` is set (or fails after ``timeout`` seconds).
    """

    def __init__(self, engine: Any, step: int, timeout: float = 120.0) -> None:
        self.engine = engine
        self.step = step
        self.timeout = timeout
        self.reached = threading.Event()
        self.released = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def run(self, request: p.Generate, hooks: Any, prepared: Any = None) -> Iterator[Any]:
        return self.engine.run(request, _HeldHooks(hooks, self), prepared)


class _HeldHooks:
    def __init__(self, hooks: Any, gate: StepGate) -> None:
        self.hooks = hooks
        self.gate = gate

    def cancelled(self) -> bool:
        return bool(self.hooks.cancelled())

    def preview(self, frame: Any) -> None:
        self.hooks.preview(frame)

    def progress(self, index: int, step: int, steps: int) -> None:
        self.hooks.progress(index, step, steps)
        if step == self.gate.step:
            self.gate.reached.set()
            if not self.gate.released.wait(self.gate.timeout):
                raise TimeoutError(f"the test never released the job held at step {step}")


@contextmanager
def held_at_step(bridge: Bridge, step: int) -> Iterator[StepGate]:
    """Serve the bridge's jobs through a ``StepGate`` for the block; whatever it holds goes on when the block ends."""
    from bench.transport import serving

    gate = StepGate(bridge.engine, step)
    with serving(bridge, gate):
        try:
            yield gate
        finally:
            gate.released.set()
