"""Where one round trip's time goes: stage marks from the server (this process) and the client worker, on one clock.

Both processes read ``time.perf_counter``, which is the system's monotonic
clock on Linux, so their marks line up; elsewhere only each side's own
durations mean something.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from aiohttp import web

from bridge import imaging, server
from bridge.editor import protocol as p

Mark = tuple[float, float, str, int]  # start, end, stage, bytes


@contextmanager
def server_marks(marks: list[Mark]) -> Iterator[None]:
    """Record the server's stages of each message into ``marks`` while the block runs."""
    with ExitStack() as stack:

        def wrap(obj: Any, name: str, stage: str) -> None:
            original = getattr(obj, name)

            def timed(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                value = original(*args, **kwargs)
                size = (
                    len(args[0]) if isinstance(args[0], (bytes, bytearray, memoryview)) else len(value) if isinstance(value, bytes) else 0
                )
                marks.append((started, time.perf_counter(), stage, size))
                return value

            stack.callback(setattr, obj, name, original)
            setattr(obj, name, timed)

        wrap(p, "decode_client_message", "server: decode the request")
        wrap(imaging, "encode_rgba", "server: result pixels")
        wrap(p, "encode", "server: encode a message")
        send_bytes = web.WebSocketResponse.send_bytes

        async def timed_send(self: web.WebSocketResponse, data: Any, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            await send_bytes(self, data, *args, **kwargs)
            marks.append((started, time.perf_counter(), "server: write the frame to the socket", len(data)))

        stack.callback(setattr, web.WebSocketResponse, "send_bytes", send_bytes)
        web.WebSocketResponse.send_bytes = timed_send  # type: ignore[method-assign,assignment]
        # the job waits for the worker thread: mark when the result leaves it
        run_blocking = server.Bridge._run_blocking

        def timed_run(self: server.Bridge, *args: Any) -> server.Frames:
            started = time.perf_counter()
            terminal = run_blocking(self, *args)
            marks.append((started, time.perf_counter(), "server: job on the worker thread", 0))
            return terminal

        stack.callback(setattr, server.Bridge, "_run_blocking", run_blocking)
        server.Bridge._run_blocking = timed_run  # type: ignore[method-assign,assignment]
        yield


def merge(client: list[list[Any]], server_side: list[Mark], *, smallest: int = 1 << 16) -> list[dict[str, Any]]:
    """Both sides' stages in time order, relative to the client's start; small messages are left out."""
    stages = [(float(a), float(b), str(c), int(d)) for a, b, c, d in client] + list(server_side)
    origin = min(start for start, _, stage, _ in stages if stage.startswith("client"))
    rows = []
    for start, end, stage, size in sorted(stages):
        if 0 < size < smallest:
            continue
        rows.append({"stage": stage, "start_ms": round((start - origin) * 1000, 1), "ms": round((end - start) * 1000, 1), "bytes": size})
    return rows
