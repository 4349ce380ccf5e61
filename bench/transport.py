"""Transport alone: an engine that echoes its input through the real server, and a bare aiohttp echo endpoint.

``EchoEngine`` takes the place of the bridge's engine, so a Generate runs the
server's whole path (decode, validate, queue, worker thread, result encoding,
send queue) with no model work. The bare echo endpoint is the reference stack
of the issue: aiohttp websocket, websockets sync client, msgpack, nothing else.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from aiohttp import WSMsgType, web

from bridge import imaging
from bridge.editor import protocol as p
from bridge.editor.regions import Rect
from bridge.engine import GeneratedImage, JobHooks
from bridge.server import Bridge


class EchoEngine:
    """Stands in for ``bridge.engine.Engine``: the result is the sent image, unchanged."""

    def settings(self, request: p.Generate) -> tuple[int, float, float]:
        """What the job asked for; the echo has no recipe, so what it left unset reads as one step, no guidance, all."""
        return (
            1 if request.steps is None else request.steps,
            0.0 if request.guidance is None else request.guidance,
            1.0 if request.strength is None else request.strength,
        )

    def prepare(self, request: p.Generate) -> Any:
        return imaging.decode_rgba(request.image)

    def run(self, request: p.Generate, hooks: JobHooks, prepared: Any = None) -> Iterator[GeneratedImage]:
        source = prepared if prepared is not None else self.prepare(request)
        height, width = source.shape[:2]
        yield GeneratedImage(index=0, seed=request.seed or 0, pixels=source, rect=Rect(0, 0, width, height), timings={})


@contextmanager
def serving(bridge: Bridge, engine: Any) -> Iterator[None]:
    """Let the running bridge serve its jobs with ``engine`` for the duration of the block (call it between jobs)."""
    before = bridge.engine
    bridge.engine = engine
    try:
        yield
    finally:
        bridge.engine = before


def echo_engine(bridge: Bridge) -> AbstractContextManager[None]:
    """Swap the running bridge's engine for an ``EchoEngine`` for the duration of the block."""
    return serving(bridge, EchoEngine())


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0, heartbeat=None, compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


@contextmanager
def running_echo(host: str = "127.0.0.1") -> Iterator[str]:
    """An aiohttp websocket echo endpoint on a free loopback port, in a thread; yields its URL."""
    from tests.bridge_server import free_port

    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        app = web.Application()
        app.router.add_get(p.WS_PATH, _echo)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        port = free_port(host)
        await web.TCPSite(runner, host, port).start()
        holder.update(runner=runner, port=port)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(holder["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="bench-echo", daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield f"ws://{host}:{holder['port']}{p.WS_PATH}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
