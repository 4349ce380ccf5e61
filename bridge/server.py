"""The bridge server (aiohttp): ``GET /health`` and the websocket ``/ws``.

One GPU worker takes jobs from a shared queue and runs them on a dedicated
thread; events travel back to each connection through its own send queue, so
a slow client never stalls the GPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Callable

from aiohttp import WSMsgType, web

from . import __version__
from . import protocol as p
from .jobs import Job, JobQueue, JobState
from .models import LoadedModel, ModelError, ModelSpec, load_planned, plan, resolve, with_recipe
from .recipes import Overrides

log = logging.getLogger("img2img_bridge")

_SERVER_ENCODINGS = (p.Encoding.RAW, p.Encoding.ZLIB, p.Encoding.PNG, p.Encoding.JPEG)
_VIEW_BYTES = 1 << 16


@dataclass(frozen=True)
class ServerConfig:
    model: str | None = "tiny"
    device: str = "cpu"
    token: str | None = None
    limits: p.Limits = field(default_factory=p.Limits)
    catalog: tuple[ModelSpec, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    #: capture the UNet in CUDA graphs for live jobs, warmed up at load for ``live_size``² frames
    cuda_graphs: bool = False
    live_size: int = 512
    #: recipe fields set by ``serve --recipe``, for the model given with ``--model``
    recipe: Overrides = field(default_factory=Overrides)
    #: load pickled ``.ckpt`` checkpoints (they can run code)
    allow_pickle: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Connection:
    """One websocket client: its outgoing frames go through a queue drained by one sender task."""

    _ids = itertools.count(1)

    def __init__(self, ws: web.WebSocketResponse, loop: asyncio.AbstractEventLoop) -> None:
        self.id = next(self._ids)
        self.ws = ws
        self.loop = loop
        self.name = "?"
        self.encodings: tuple[p.Encoding, ...] = p.BASIC_ENCODINGS
        self.jobs: dict[str, Job] = {}
        self._outbox: asyncio.Queue[bytes | memoryview | None] = asyncio.Queue()
        self.closed = False

    def send(self, message: p.Message) -> None:
        """Queue a message (event-loop thread)."""
        self.send_frame(p.encode(message))

    def send_frame(self, frame: bytes) -> None:
        if not self.closed:
            # asyncio slices the unsent rest of a large frame: a view makes that free
            self._outbox.put_nowait(memoryview(frame) if len(frame) >= _VIEW_BYTES else frame)

    @property
    def backlog(self) -> int:
        """Frames queued for this client and not yet written (read from other threads as a hint)."""
        return self._outbox.qsize()

    def send_threadsafe(self, message: p.Message) -> None:
        """Queue a message from the GPU or preview threads; encoding happens on the calling thread."""
        frame = p.encode(message)
        self.loop.call_soon_threadsafe(self.send_frame, frame)

    async def pump(self) -> None:
        while True:
            frame = await self._outbox.get()
            if frame is None or self.ws.closed:
                return
            try:
                await self.ws.send_bytes(frame)  # type: ignore[arg-type]  # aiohttp takes any bytes-like
            except (ConnectionError, RuntimeError):
                return
            del frame  # a layer-sized frame must not stay alive until the next one

    def stop(self) -> None:
        self.closed = True
        self._outbox.put_nowait(None)


class _JobHooks:
    """Engine hooks for one job: progress, previews encoded on the preview pool, cancellation."""

    def __init__(self, job: Job, conn: Connection, previews: concurrent.futures.Executor) -> None:
        self.job = job
        self.conn = conn
        self.pool = previews
        self._busy: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()
        self.steps_run = 0

    def cancelled(self) -> bool:
        return self.job.cancel_event.is_set()

    def progress(self, index: int, step: int, steps: int) -> None:
        self.steps_run += 1
        self.conn.send_threadsafe(p.Progress(job_id=self.job.job_id, index=index, step=step, steps=steps))

    def preview(self, frame: Any) -> None:
        # a preview still being encoded, or frames still waiting for the socket, mean the client is behind:
        # skip this preview rather than queue it
        with self._lock:
            if (self._busy is not None and not self._busy.done()) or self.conn.backlog > 1:
                return
            self._busy = self.pool.submit(self._send_preview, frame)

    def _send_preview(self, frame: Any) -> None:
        from .engine import render_preview

        try:
            image = render_preview(frame, self.job.request.preview)
        except Exception:  # a preview is a nicety: the job goes on without it
            log.exception("preview for job %s failed", self.job.job_id)
            return
        region = frame.region
        self.conn.send_threadsafe(
            p.Preview(
                job_id=self.job.job_id,
                index=frame.index,
                step=frame.step,
                steps=frame.steps,
                image=image,
                x=region.x,
                y=region.y,
                width=region.width,
                height=region.height,
            )
        )

    def flush(self) -> None:
        """Wait for the preview in flight, so that no preview arrives after its result."""
        with self._lock:
            busy = self._busy
        if busy is not None:
            busy.result()


class Bridge:
    """The server's state: the model, the engine, the queue and the connected clients."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.queue = JobQueue()
        self.connections: set[Connection] = set()
        self.engine: Any | None = None
        self.loaded: LoadedModel | None = None
        self.model_state = p.ModelState(name=config.model, status=p.ModelStatus.NO_MODEL, message="no model was asked for")
        self._gpu = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-gpu")
        self._previews = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="img2img-preview")
        self._worker: asyncio.Task[None] | None = None
        self._loading: asyncio.Future[None] | None = None
        self._offered: list[ModelSpec] | None = None
        #: the last jobs that ended: job id, client, outcome, denoising steps run, milliseconds
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._worker = asyncio.create_task(self._work())
        if self.config.model:
            self.request_model(self.config.model)

    async def stop(self) -> None:
        for conn in list(self.connections):
            for job in conn.jobs.values():
                job.cancel_event.set()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._gpu.shutdown(wait=True, cancel_futures=True)
        self._previews.shutdown(wait=True, cancel_futures=True)

    # --- models ---------------------------------------------------------------------------

    def models(self) -> tuple[p.ModelInfo, ...]:
        if self._offered is None:
            specs: list[ModelSpec] = list(self.config.catalog)
            names = {s.name for s in specs}
            for extra in (self.config.model, "tiny"):
                if extra and extra not in names:
                    try:
                        specs.append(with_recipe(resolve(extra, allow_pickle=self.config.allow_pickle)))
                    except ModelError:
                        continue
                    names.add(extra)
            self._offered = specs
        loaded = self.loaded
        return tuple(
            p.ModelInfo(s.name, s.source, s.source == "builtin", loaded.recipe)
            if loaded is not None and loaded.spec.name == s.name
            else s.info
            for s in self._offered
        )

    @property
    def engine_thread(self) -> concurrent.futures.Executor:
        """The one thread that loads models and runs jobs: every torch call stays on it.

        Once a second thread calls into torch, its OpenMP pool stops spinning and CPU jobs run about 3x slower.
        """
        return self._gpu

    @property
    def loading(self) -> bool:
        return self._loading is not None and not self._loading.done()

    def request_model(self, name: str) -> None:
        """Start loading ``name`` on the GPU thread (after the running job); every client hears of it."""
        spec = resolve(name, list(self.config.catalog), allow_pickle=self.config.allow_pickle)
        self._set_state(p.ModelState(name=spec.name, status=p.ModelStatus.LOADING, message=f"loading {spec.name}", progress=0.0))
        assert self.loop is not None
        self._loading = self.loop.run_in_executor(self._gpu, self._load_blocking, spec)

    def _load_blocking(self, spec: ModelSpec) -> None:
        from .engine import Engine

        def progress(fraction: float, text: str) -> None:
            state = p.ModelState(name=spec.name, status=p.ModelStatus.LOADING, message=text, progress=fraction)
            self._call_soon(self._set_state, state)

        shown = [-1]

        def downloaded(done: int, total: int) -> None:
            percent = done * 100 // total if total else 0
            if percent == shown[0] and done < total:
                return  # one event per percent: a download is thousands of chunks
            shown[0] = percent
            text = f"downloading {spec.name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB"
            state = p.ModelState(
                name=spec.name,
                status=p.ModelStatus.LOADING,
                message=text,
                progress=0.05 + 0.15 * percent / 100,
                downloaded=done,
                download_size=total,
            )
            self._call_soon(self._set_state, state)

        overrides = self.config.recipe if spec.name == self.config.model else Overrides()
        try:
            # files, recipe and architecture first: a model that cannot load leaves the current one serving
            planned = plan(spec, overrides=overrides, on_download=downloaded)
        except ModelError as exc:
            self._call_soon(self._load_failed, spec, exc.message)
            return
        try:
            self.engine = None
            self.loaded = None
            loaded = load_planned(planned, self.config.device, progress)
            engine = Engine(loaded, cuda_graphs=self.config.cuda_graphs)
            if self.config.cuda_graphs and loaded.device == "cuda":
                progress(0.9, f"capturing CUDA graphs for {self.config.live_size}² live frames")
                engine.warm_up(self.config.live_size)
        except ModelError as exc:
            self._call_soon(self._set_state, p.ModelState(name=spec.name, status=p.ModelStatus.ERROR, message=exc.message))
            return
        except Exception as exc:  # a broken model must not take the server down
            log.exception("loading %s failed", spec.name)
            message = f"could not load {spec.name}: {exc.__class__.__name__}: {exc}"
            self._call_soon(self._set_state, p.ModelState(name=spec.name, status=p.ModelStatus.ERROR, message=message))
            return
        self.loaded, self.engine = loaded, engine
        self._call_soon(self._set_state, loaded.state)

    def _load_failed(self, spec: ModelSpec, message: str) -> None:
        log.error("%s", message)
        if self.loaded is None:
            status = p.ModelStatus.NO_MODEL if spec.source == "hub" else p.ModelStatus.ERROR
            self._set_state(p.ModelState(name=spec.name, status=status, message=message))
            return
        kept = self.loaded.state
        self._set_state(replace(kept, message=f"could not load {spec.name}: {message}; still serving {kept.name}"))

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)

    def _set_state(self, state: p.ModelState) -> None:
        self.model_state = state
        event = p.ModelStatusEvent(model=state)
        for conn in self.connections:
            conn.send(event)
        if state.status in (p.ModelStatus.NO_MODEL, p.ModelStatus.ERROR):
            log.warning("model %s: %s", state.name, state.message)
        elif state.status is p.ModelStatus.READY:
            log.info("model %s ready%s", state.name, f" ({state.message})" if state.message else "")

    # --- jobs -----------------------------------------------------------------------------

    def submit(self, conn: Connection, request: p.Generate) -> None:
        request.validate(self.config.limits)
        if request.job_id in conn.jobs:
            raise p.ProtocolError(
                p.ErrorCode.DUPLICATE_JOB, f"job {request.job_id!r} is still running; job ids must be unique", field="job_id"
            )
        state = self.model_state
        if state.status in (p.ModelStatus.NO_MODEL, p.ModelStatus.ERROR):
            raise p.ProtocolError(p.ErrorCode.NO_MODEL, f"no model is loaded: {state.message}", job_id=request.job_id)
        job = Job(request=request, owner=conn)
        if self.engine is not None:
            # decode and check the pixels now, so bad data is answered at once
            job.prepared, job.prepared_by = self.engine.prepare(request), self.engine
        position, replaced = self.queue.submit(job)
        conn.jobs[request.job_id] = job
        if replaced is not None:
            conn.jobs.pop(replaced.job_id, None)
            conn.send(p.Cancelled(job_id=replaced.job_id))
        conn.send(p.Queued(job_id=request.job_id, position=position))

    def cancel(self, conn: Connection, job_id: str) -> None:
        job = conn.jobs.get(job_id)
        if job is None:
            raise p.ProtocolError(p.ErrorCode.UNKNOWN_JOB, f"no job {job_id!r} is queued or running for this client", field="job_id")
        if self.queue.remove(job_id, conn) is not None:
            conn.jobs.pop(job_id, None)
            conn.send(p.Cancelled(job_id=job_id))
        else:
            job.cancel_event.set()  # the GPU thread notices within one step

    def disconnect(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.queue.remove_owner(conn)
        for job in conn.jobs.values():
            job.cancel_event.set()
        conn.jobs.clear()
        conn.stop()

    async def _work(self) -> None:
        assert self.loop is not None
        while True:
            job = await self.queue.next()
            if self._loading is not None and self.loading:
                await asyncio.shield(self._loading)
            conn: Connection = job.owner  # type: ignore[assignment]
            if job.cancel_event.is_set() or conn.closed:
                job.state = JobState.DONE
                continue
            try:
                await self.loop.run_in_executor(self._gpu, self._run_blocking, job, conn)
            except Exception:  # _run_blocking reports its own errors; this is a last resort
                log.exception("job %s failed", job.job_id)
            finally:
                job.state = JobState.DONE
                if conn.jobs.get(job.job_id) is job:
                    del conn.jobs[job.job_id]

    def _run_blocking(self, job: Job, conn: Connection) -> None:
        from .engine import EngineError, JobCancelled
        from .imaging import encode_rgba

        request = job.request
        engine = self.engine
        if engine is None:
            message = f"no model is loaded: {self.model_state.message}"
            conn.send_threadsafe(p.Error(code=p.ErrorCode.NO_MODEL, message=message, job_id=job.job_id))
            return
        hooks = _JobHooks(job, conn, self._previews)
        started = time.perf_counter()
        outcome = "done"
        try:
            prepared = job.prepared if job.prepared_by is engine else None
            steps, guidance, strength = engine.settings(request)
            for generated in engine.run(request, hooks, prepared):
                hooks.flush()
                encoding = request.result_encoding if request.result_encoding is not p.Encoding.JPEG else p.Encoding.PNG
                image = encode_rgba(generated.pixels, encoding)
                conn.send_threadsafe(
                    p.Result(
                        job_id=job.job_id,
                        index=generated.index,
                        count=request.count,
                        image=image,
                        x=generated.rect.x,
                        y=generated.rect.y,
                        seed=generated.seed,
                        timings=generated.timings,
                        steps=steps,
                        guidance=guidance,
                        strength=strength,
                    )
                )
        except JobCancelled:
            outcome = "cancelled"
            hooks.flush()
            conn.send_threadsafe(p.Cancelled(job_id=job.job_id))
        except p.ProtocolError as exc:
            outcome = "error"
            conn.send_threadsafe(p.Error(code=exc.code, message=exc.message, job_id=job.job_id, field=exc.field))
        except EngineError as exc:
            outcome = "error"
            conn.send_threadsafe(p.Error(code=exc.code, message=exc.message, job_id=job.job_id))
        except Exception as exc:
            outcome = "error"
            log.exception("job %s failed", job.job_id)
            message = f"the job failed inside the engine: {exc.__class__.__name__}: {exc}"
            conn.send_threadsafe(p.Error(code=p.ErrorCode.INTERNAL, message=message, job_id=job.job_id))
        finally:
            record = {
                "job_id": job.job_id,
                "client": conn.name,
                "outcome": outcome,
                "steps": hooks.steps_run,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            self._call_soon(self.recent.append, record)

    # --- views ----------------------------------------------------------------------------

    def welcome(self) -> p.Welcome:
        return p.Welcome(
            protocol=p.PROTOCOL_VERSION,
            server_version=__version__,
            device=self.config.device,
            model=self.model_state,
            limits=self.config.limits,
            models=self.models(),
            encodings=_SERVER_ENCODINGS,
        )

    def health(self) -> dict[str, Any]:
        state = self.model_state
        return {
            "status": state.status.value,
            "model": state.name,
            "message": state.message,
            "progress": state.progress,
            "downloaded": state.downloaded,
            "download_size": state.download_size,
            "recipe": None if state.recipe is None else state.recipe.to_wire(),
            "test_model": state.test_model,
            "device": self.config.device,
            "queue": len(self.queue),
            "running": sum(1 for c in self.connections for j in c.jobs.values() if j.state is JobState.RUNNING),
            "clients": len(self.connections),
            "protocol": p.PROTOCOL_VERSION,
            "version": __version__,
            "recent_jobs": list(self.recent)[-10:],
        }


BRIDGE = web.AppKey("bridge", Bridge)


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    bridge = request.app[BRIDGE]
    origin = request.headers.get("Origin")
    if origin is not None and origin not in bridge.config.allowed_origins:
        # a web page in the user's browser must not drive the local bridge
        raise web.HTTPForbidden(text=f"origin {origin} is not allowed (serve --allow-origin adds one)\n")
    if bridge.config.token and not _authorized(request, bridge.config.token):
        raise web.HTTPUnauthorized(text="a token is required: send 'Authorization: Bearer TOKEN' or ?token=TOKEN\n")
    response: web.StreamResponse = await handler(request)
    return response


async def _health(request: web.Request) -> web.Response:
    return web.json_response(request.app[BRIDGE].health())


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    bridge = request.app[BRIDGE]
    ws = web.WebSocketResponse(max_msg_size=bridge.config.limits.max_message_bytes, heartbeat=None, compress=False)
    await ws.prepare(request)
    conn = Connection(ws, asyncio.get_running_loop())
    sender = asyncio.create_task(conn.pump())
    greeted = False
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            state = _receive(bridge, conn, msg.data, greeted)
            del msg  # a layer-sized request must not stay alive until the next message
            if state is None:
                break
            greeted = state
    finally:
        bridge.disconnect(conn)
        await sender
        if not ws.closed:
            await ws.close()
    return ws


def _receive(bridge: Bridge, conn: Connection, data: bytes | str, greeted: bool) -> bool | None:
    """Handle one frame; returns whether the client has said hello, or None when the connection must close."""
    try:
        message = p.decode_client_message(data)
        if isinstance(message, p.Hello):
            return True if _greet(bridge, conn, message) else None
        if not greeted:
            raise p.ProtocolError(p.ErrorCode.HANDSHAKE_REQUIRED, "send 'hello' first")
        _dispatch(bridge, conn, message)
    except p.ProtocolError as exc:
        conn.send(p.Error.from_exception(exc))
    except ModelError as exc:
        conn.send(p.Error(code=exc.code, message=exc.message))
    except Exception as exc:  # a bug of ours must cost one message, not the connection
        log.exception("message from %s failed", conn.name)
        conn.send(p.Error(code=p.ErrorCode.INTERNAL, message=f"the bridge failed on this message: {exc.__class__.__name__}: {exc}"))
    return greeted


def _greet(bridge: Bridge, conn: Connection, hello: p.Hello) -> bool:
    if hello.protocol != p.PROTOCOL_VERSION:
        conn.send(
            p.Error(
                code=p.ErrorCode.UNSUPPORTED_PROTOCOL,
                message=f"this bridge speaks protocol {p.PROTOCOL_VERSION}, the client {hello.protocol}: update the older one",
            )
        )
        return False
    conn.name = hello.client
    conn.encodings = hello.encodings
    bridge.connections.add(conn)
    conn.send(bridge.welcome())
    return True


def _dispatch(bridge: Bridge, conn: Connection, message: p.Message) -> None:
    if isinstance(message, p.Generate):
        bridge.submit(conn, message)
    elif isinstance(message, p.Cancel):
        bridge.cancel(conn, message.job_id)
    elif isinstance(message, p.ListModels):
        conn.send(p.Models(models=bridge.models(), current=bridge.model_state))
    elif isinstance(message, p.LoadModel):
        bridge.request_model(message.model)


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application: the bridge starts with it and stops with it."""
    app = web.Application(middlewares=[_guard], client_max_size=config.limits.max_message_bytes)
    bridge = Bridge(config)
    app[BRIDGE] = bridge
    app.router.add_get("/health", _health)
    app.router.add_get(p.WS_PATH, _websocket)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await bridge.start()
        yield
        await bridge.stop()

    async def close_sockets(app: web.Application) -> None:
        for conn in list(bridge.connections):
            await conn.ws.close(message=b"server shutting down")

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_sockets)
    return app
