"""The bridge server (aiohttp): the status page ``/``, ``GET /health`` and the websocket ``/ws``.

One GPU worker takes jobs from a shared queue and runs them on a dedicated
thread; events travel back to each connection through its own send queue, so
a slow client never stalls the GPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import itertools
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from . import __version__
from .bounds import ByteBudget, ServerBounds, input_bytes
from .editor import protocol as p
from .editor.shm import ShmUnavailable
from .editor.shm import loopback as is_loopback
from .handoff import SharedMemoryHost
from .jobs import Job, JobQueue, JobState
from .models import TINY_MODEL_NAME, LoadedModel, LoadPlan, ModelError, ModelSpec, load_planned, plan, resolve, with_recipe
from .recipes import Overrides
from .status import ActiveJob, ClientView, JobRecord, StatusBoard

log = logging.getLogger("img2img_bridge")

_SERVER_ENCODINGS = (p.Encoding.RAW, p.Encoding.ZLIB, p.Encoding.PNG, p.Encoding.JPEG)
_VIEW_BYTES = 1 << 16
#: frames larger than this are parsed off the event loop
_INLINE_DECODE_BYTES = 1 << 20
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")

#: what goes out for one message: its msgpack frame, or that frame and the raw frames of its pixels (in order)
Frames = bytes | tuple[p.wire.Piece, ...]


@dataclass(frozen=True)
class ServerConfig:
    model: str | None = "tiny"
    device: str = "cpu"
    token: str | None = None
    limits: p.Limits = field(default_factory=p.Limits)
    catalog: tuple[ModelSpec, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    #: Host header names besides loopback ones that /health and /ws answer (DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()
    #: let clients load Hugging Face Hub ids the operator did not list
    allow_hub: bool = False
    bounds: ServerBounds = field(default_factory=ServerBounds)
    #: capture the UNet in CUDA graphs for live jobs, warmed up at load for ``live_size``² frames
    cuda_graphs: bool = False
    live_size: int = 512
    #: recipe fields set by ``serve --recipe``, for the model given with ``--model``
    recipe: Overrides = field(default_factory=Overrides)
    #: load pickled ``.ckpt`` checkpoints (they can run code)
    allow_pickle: bool = False
    #: offer loopback clients the same-machine hand-off of pixels (bridge.editor.shm), in ``shm_folder`` (default: per user)
    shared_memory: bool = True
    shm_folder: str | None = None


class Connection:
    """One websocket client: its outgoing frames go through a queue drained by one sender task."""

    _ids = itertools.count(1)

    def __init__(
        self,
        ws: web.WebSocketResponse,
        loop: asyncio.AbstractEventLoop,
        outbox_bytes: int,
        transport: asyncio.BaseTransport | None = None,
        peer: str = "?",
    ) -> None:
        self.id = next(self._ids)
        self.ws = ws
        self.transport = transport
        self.loop = loop
        self.name = "?"
        self.peer = peer
        self.since = time.time()
        self.jobs_ended = 0
        self.encodings: tuple[p.Encoding, ...] = p.BASIC_ENCODINGS
        #: the welcome offered this client the shared-memory hand-off
        self.shares_memory = False
        #: large pixel data goes to this client as binary frames of their own (its hello asked for them)
        self.raw_frames = False
        self.jobs: dict[str, Job] = {}
        self.outbox_bytes = outbox_bytes
        self._outbox: asyncio.Queue[Frames | memoryview | None] = asyncio.Queue()
        self._pending = 0  # bytes queued or being written (event-loop thread)
        self.closed = False
        #: why the bridge closed this connection, when it did
        self.dropped: str | None = None

    def encode(self, message: p.Message) -> Frames:
        """The frames that carry ``message`` to this client: with raw frames, its large pixels go in frames of their own."""
        if self.raw_frames:
            head, pixels = p.split_frames(message)
            if pixels:
                return (p.encode(head), *(memoryview(data).cast("B") for data in pixels))
        return p.encode(message)

    def send(self, message: p.Message) -> None:
        """Queue a message (event-loop thread)."""
        self.send_frame(self.encode(message))

    def send_frame(self, frame: Frames, droppable: bool = False, on_drop: Callable[[], None] | None = None) -> None:
        """Queue a message's frames; a droppable one (a preview) is skipped whenever anything is still waiting (then ``on_drop`` runs)."""
        if self.closed or (droppable and self._pending):
            if on_drop is not None:
                on_drop()
            return
        size = _size(frame)
        if self._pending + size > self.outbox_bytes:
            self.drop(f"the client did not read its events: {self._pending >> 20} MiB were waiting (at most {self.outbox_bytes >> 20} MiB)")
            return
        self._pending += size
        # asyncio slices the unsent rest of a large frame: a view makes that free
        self._outbox.put_nowait(memoryview(frame) if isinstance(frame, bytes) and size >= _VIEW_BYTES else frame)

    @property
    def backlog(self) -> int:
        """Frames queued for this client and not yet written (read from other threads as a hint)."""
        return self._outbox.qsize()

    def send_threadsafe(self, message: p.Message, droppable: bool = False, on_drop: Callable[[], None] | None = None) -> None:
        """Queue a message from the GPU or preview threads; encoding happens on the calling thread."""
        self.send_frame_threadsafe(self.encode(message), droppable, on_drop)

    def send_frame_threadsafe(self, frame: Frames, droppable: bool = False, on_drop: Callable[[], None] | None = None) -> None:
        self.loop.call_soon_threadsafe(self.send_frame, frame, droppable, on_drop)

    async def pump(self) -> None:
        while True:
            frame = await self._outbox.get()
            if frame is None or self.ws.closed:
                return
            size = _size(frame)
            try:
                await self._write(frame)
            except (ConnectionError, RuntimeError):
                return
            finally:
                self._pending -= size
            del frame  # a layer-sized frame must not stay alive until the next one

    async def _write(self, frame: Frames | memoryview) -> None:
        # a message and the raw frames of its pixels go out back to back: nothing else is sent between them
        for part in frame if isinstance(frame, tuple) else (frame,):
            await self.ws.send_bytes(part)  # type: ignore[arg-type]  # aiohttp takes any bytes-like

    def drop(self, reason: str) -> None:
        """Close the connection from the server's side with ``reason`` (policy violation); frees what it held."""
        if self.closed:
            return
        self.dropped = reason
        log.warning("closing the connection of %s: %s", self.name, reason)
        self.stop()
        while not self._outbox.empty():
            self._outbox.get_nowait()
        self._outbox.put_nowait(None)
        self.loop.create_task(_close(self.ws, WSCloseCode.POLICY_VIOLATION, reason, self.transport))

    def stop(self) -> None:
        self.closed = True
        self._outbox.put_nowait(None)


def _size(frame: Frames | memoryview) -> int:
    return sum(memoryview(part).nbytes for part in frame) if isinstance(frame, tuple) else len(frame)


async def _close(ws: web.WebSocketResponse, code: int, reason: str, transport: asyncio.BaseTransport | None) -> None:
    """Close with a reason; a peer that does not read the close frame is cut off after two seconds."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:120]), 2.0)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            transport.abort()


#: progress events at most this often per variation (its last step always goes at once, a held-back step once
#: the interval is over): each one wakes the loop and the client
PROGRESS_INTERVAL_S = 0.05


class _JobHooks:
    """Engine hooks for one job: progress (throttled), previews encoded on the preview pool, cancellation.

    ``handoff`` (when the job's client takes shared memory) moves previews' pixels into segments.
    """

    def __init__(self, job: Job, conn: Connection, previews: concurrent.futures.Executor, handoff: SharedMemoryHost | None = None) -> None:
        self.job = job
        self.conn = conn
        self.pool = previews
        self.handoff = handoff
        self._busy: dict[int, concurrent.futures.Future[None]] = {}  # per variation: a batch previews each of them
        self._lock = threading.Lock()
        #: raised by ``seal``: a preview rendered for an earlier epoch is not sent
        self._epoch = 0
        #: per variation: when its last progress went, and the newest one held back until the interval is over
        self._progress_sent: dict[int, float] = {}
        self._progress_due: dict[int, p.Progress] = {}
        self.steps_run = 0

    def cancelled(self) -> bool:
        return self.job.cancel_event.is_set()

    def progress(self, index: int, step: int, steps: int) -> None:
        self.steps_run += 1
        self.job.progress = (index, step, steps)
        message = p.Progress(job_id=self.job.job_id, index=index, step=step, steps=steps)
        now = time.monotonic()
        with self._lock:
            wait = self._progress_sent.get(index, float("-inf")) + PROGRESS_INTERVAL_S - now
            if step < steps and wait > 0:
                # held back, not dropped: a step that stalls after fast ones still shows where the job is
                if index not in self._progress_due:
                    self.conn.loop.call_soon_threadsafe(self.conn.loop.call_later, wait, self._send_due_progress, index)
                self._progress_due[index] = message
                return
            self._progress_due.pop(index, None)
            self._progress_sent[index] = now
        self.conn.send_threadsafe(message)

    def _send_due_progress(self, index: int) -> None:
        """On the event loop, once a held-back progress's interval is over (unless a newer one or the result went)."""
        with self._lock:
            message = self._progress_due.pop(index, None)
            if message is None:
                return
            self._progress_sent[index] = time.monotonic()
        self.conn.send_threadsafe(message)

    def preview(self, frame: Any) -> None:
        # a preview of this variation still being encoded, or frames still waiting for the socket (beyond one
        # per variation of a batch), mean the client is behind: skip this preview rather than queue it
        with self._lock:
            busy = self._busy.get(frame.index)
            if (busy is not None and not busy.done()) or self.conn.backlog > max(1, len(self._busy)):
                return
            self._busy[frame.index] = self.pool.submit(self._send_preview, frame, self._epoch)

    def _send_preview(self, frame: Any, epoch: int) -> None:
        from .engine import render_preview

        try:
            image = render_preview(frame, self.job.request.preview)
        except Exception:  # a preview is a nicety: the job goes on without it
            log.exception("preview for job %s failed", self.job.job_id)
            return
        region = frame.region
        with self._lock:
            if epoch != self._epoch:
                return  # its variation's result has gone out: a late preview is dropped, never sent after it
            handoff = self.handoff
            if handoff is not None:
                image = handoff.hand_over(self.conn, image, self.conn.outbox_bytes)
            self.conn.send_threadsafe(
                droppable=True,
                message=p.Preview(
                    job_id=self.job.job_id,
                    index=frame.index,
                    step=frame.step,
                    steps=frame.steps,
                    image=image,
                    x=region.x,
                    y=region.y,
                    width=region.width,
                    height=region.height,
                ),
                on_drop=None if handoff is None else functools.partial(handoff.discard, self.conn, image),
            )

    def seal(self) -> None:
        """A result (or the job's end) goes out next: a preview still being rendered, or a progress held back, is dropped."""
        with self._lock:
            self._epoch += 1
            self._busy.clear()
            self._progress_due.clear()


class Bridge:
    """The server's state: the model, the engine, the queue and the connected clients."""

    def __init__(self, config: ServerConfig) -> None:
        config.bounds.check(config.limits.max_message_bytes)
        self.config = config
        self.bounds = config.bounds
        self.queue = JobQueue()
        self.connections: set[Connection] = set()
        #: open websockets, greeted or not (the connection cap counts these)
        self.sockets = 0
        self.inputs = ByteBudget(config.bounds.client_queued_bytes, config.bounds.total_queued_bytes)
        self.engine: Any | None = None
        self.loaded: LoadedModel | None = None
        self.model_state = p.ModelState(name=config.model, status=p.ModelStatus.NO_MODEL, message="no model was asked for")
        self._gpu = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-gpu")
        self._previews = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="img2img-preview")
        # decoding (msgpack, zlib, PNG, numpy) runs here: never on the event loop, never on the torch thread
        self._decoder = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="img2img-decode")
        self._worker: asyncio.Task[None] | None = None
        self._loading: asyncio.Future[None] | None = None
        self._loading_spec: ModelSpec | None = None
        self._wanted: ModelSpec | None = None
        self._offered: list[ModelSpec] | None = None
        #: the last jobs that ended, the last results' thumbnails, live frame rates
        self.board = StatusBoard()
        self.loop: asyncio.AbstractEventLoop | None = None
        #: the same-machine hand-off, once started (None: off, or not possible here)
        self.handoff: SharedMemoryHost | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.config.shared_memory:
            folder = Path(self.config.shm_folder) if self.config.shm_folder else None
            try:
                self.handoff = SharedMemoryHost(folder)
            except ShmUnavailable as exc:
                log.warning("no shared-memory hand-off (pixels go over the socket): %s", exc.reason)
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
        self._decoder.shutdown(wait=True, cancel_futures=True)
        if self.handoff is not None:
            self.handoff.close()

    # --- models ---------------------------------------------------------------------------

    def offered(self) -> list[ModelSpec]:
        """What clients may load: the operator's --model, the --models-dir catalog and the tiny model (found once)."""
        if self._offered is None:
            specs: list[ModelSpec] = list(self.config.catalog)
            names = {s.name for s in specs}
            for extra in (self.config.model, TINY_MODEL_NAME):
                if extra and extra not in names:
                    try:
                        specs.append(with_recipe(resolve(extra, allow_pickle=self.config.allow_pickle)))
                    except ModelError:
                        continue
                    names.add(extra)
            self._offered = specs
        return self._offered

    def models(self) -> tuple[p.ModelInfo, ...]:
        """The offered models; the loaded one with the recipe it really runs with."""
        loaded = self.loaded
        return tuple(
            replace(s.info, recipe=loaded.recipe) if loaded is not None and loaded.spec.name == s.name else s.info for s in self.offered()
        )

    def _offered_spec(self, name: str) -> ModelSpec:
        """The spec of an offered model; anything else is refused without looking at the disk."""
        limit = self.bounds.max_model_chars
        if len(name) > limit:
            raise ModelError(p.ErrorCode.UNKNOWN_MODEL, f"model names are at most {limit} characters")
        for spec in self.offered():
            if spec.name == name:
                return spec
        if self.config.allow_hub and _HUB_ID.fullmatch(name):
            return ModelSpec(name, "hub", name)
        more = "--models-dir or --allow-hub" if not self.config.allow_hub else "--models-dir"
        raise ModelError(
            p.ErrorCode.UNKNOWN_MODEL,
            f"{_shorten(name, 80)!r} is not a model this bridge offers: pick one from list_models (serve {more} offers more)",
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

    def request_model(self, name: str) -> p.ModelState | None:
        """Load an offered model on the GPU thread (after the running job); every client hears of it.

        Requests coalesce: asking for the model that is loaded or loading changes nothing (its state is
        returned for the asker), and while one load runs only the newest request waits behind it.
        """
        spec = self._offered_spec(name)
        current = self._loading_spec if self.loading else (self.loaded.spec if self.loaded is not None else None)
        if current == spec:
            self._wanted = None  # the newest wish is what is loaded or loading already
            return self.model_state
        self._wanted = spec
        if not self.loading:
            self._start_load()
        return None

    def _start_load(self) -> None:
        spec, self._wanted = self._wanted, None
        if spec is None or (self.loaded is not None and self.loaded.spec == spec):
            return
        assert self.loop is not None
        self._loading_spec = spec
        self._set_state(p.ModelState(name=spec.name, status=p.ModelStatus.LOADING, message=f"loading {spec.name}", progress=0.0))
        self._loading = self.loop.run_in_executor(self._gpu, self._load_blocking, spec)
        self._loading.add_done_callback(lambda _: self._start_load())

    def _load_blocking(self, spec: ModelSpec) -> None:
        overrides = self.config.recipe if spec.name == self.config.model else Overrides()
        try:
            # files, recipe and architecture first: a model that cannot load leaves the current one serving
            planned = plan(spec, overrides=overrides, on_download=self._download_progress(spec))
        except ModelError as exc:
            self._call_soon(self._load_failed, spec, exc.message)
            return
        previous = self.loaded.spec if self.loaded is not None else None
        failure = self._try_load(spec, planned)
        if failure is None:
            return
        status = p.ModelStatus.NO_MODEL if spec.source == "hub" else p.ModelStatus.ERROR
        self._call_soon(self._set_state, p.ModelState(name=spec.name, status=status, message=failure))
        if previous is not None and previous != spec:
            # the weights failed after the current model was let go: a failed switch must not leave every client without one
            try:
                self._try_load(previous, plan(previous))
            except ModelError as exc:
                log.error("reloading %s failed: %s", previous.name, exc.message)

    def _load_failed(self, spec: ModelSpec, message: str) -> None:
        log.error("%s", message)
        if self.loaded is None:
            status = p.ModelStatus.NO_MODEL if spec.source == "hub" else p.ModelStatus.ERROR
            self._set_state(p.ModelState(name=spec.name, status=status, message=message))
            return
        kept = self.loaded.state
        self._set_state(replace(kept, message=f"could not load {spec.name}: {message}; still serving {kept.name}"))

    def _download_progress(self, spec: ModelSpec) -> Callable[[int, int], None]:
        """A callback that turns downloaded bytes into model states, one per percent."""
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

        return downloaded

    def _try_load(self, spec: ModelSpec, planned: LoadPlan) -> str | None:
        """Load ``spec`` (already planned) in place of the current model; returns None, or why it failed."""
        from .engine import Engine

        def progress(fraction: float, text: str) -> None:
            state = p.ModelState(name=spec.name, status=p.ModelStatus.LOADING, message=text, progress=fraction)
            self._call_soon(self._set_state, state)

        try:
            self.engine = None
            self.loaded = None
            loaded = load_planned(planned, self.config.device, progress)
            engine = Engine(loaded, cuda_graphs=self.config.cuda_graphs)
            if self.config.cuda_graphs and loaded.device == "cuda":
                progress(0.9, f"capturing CUDA graphs for {self.config.live_size}² live frames")
                engine.warm_up(self.config.live_size)
        except ModelError as exc:
            return exc.message
        except Exception as exc:  # a broken model must not take the server down
            log.exception("loading %s failed", spec.name)
            return f"could not load {spec.name}: {exc.__class__.__name__}: {_shorten(str(exc), 300)}"
        self.loaded, self.engine = loaded, engine
        self._call_soon(self._set_state, loaded.state)
        return None

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

    async def decode(self, data: bytes | str) -> p.Message:
        """Parse a client's frame; large ones are parsed off the event loop."""
        if len(data) <= _INLINE_DECODE_BYTES:
            return p.decode_client_message(data)
        assert self.loop is not None
        return await self.loop.run_in_executor(self._decoder, p.decode_client_message, data)

    async def submit(self, conn: Connection, request: p.Generate) -> None:
        """Check, decode and queue a job; a refusal raises ProtocolError carrying the job id."""
        try:
            await self._submit(conn, request)
        except p.ProtocolError as exc:
            exc.job_id = request.job_id
            raise

    async def _submit(self, conn: Connection, request: p.Generate) -> None:
        if request.image.segment is not None or (request.mask is not None and request.mask.segment is not None):
            assert self.loop is not None  # mapping (and populating) a layer's pages stays off the event loop
            request = await self.loop.run_in_executor(self._decoder, self._attach, conn, request)
        request.validate(self.config.limits)
        if request.job_id in conn.jobs:
            raise p.ProtocolError(
                p.ErrorCode.DUPLICATE_JOB, f"job {request.job_id!r} is still running; job ids must be unique", field="job_id"
            )
        state = self.model_state
        if state.status in (p.ModelStatus.NO_MODEL, p.ModelStatus.ERROR):
            raise p.ProtocolError(p.ErrorCode.NO_MODEL, f"no model is loaded: {state.message}")
        image, mask = request.image, request.mask
        size = input_bytes(image.width, image.height, len(image.data) + (len(mask.data) if mask else 0), mask is not None)
        refusal = self.inputs.reserve(conn, size)
        if refusal is not None:
            raise p.ProtocolError(p.ErrorCode.QUEUE_FULL, f"{refusal}: wait for a result or cancel a job")
        job = Job(request=request, owner=conn, held_bytes=size)
        try:
            engine = self.engine
            if engine is not None:
                # decode and check the pixels now (off the loop), so bad data is answered at once
                assert self.loop is not None
                job.prepared = await self.loop.run_in_executor(self._decoder, engine.prepare, request)
                job.prepared_by = engine
            if conn.closed:
                raise p.ProtocolError(p.ErrorCode.CONNECTION, "the client went away")
            position, replaced = self.queue.submit(job)
        except BaseException:
            self.inputs.release(conn, job.held_bytes)
            job.held_bytes = 0
            raise
        conn.jobs[request.job_id] = job
        if replaced is not None:
            self._end(replaced, conn, p.encode(p.Cancelled(job_id=replaced.job_id)))
        conn.send(p.Queued(job_id=request.job_id, position=position))

    def _attach(self, conn: Connection, request: p.Generate) -> p.Generate:
        """``request`` with the pixels of the shared-memory segments it names; they stay the client's, read-only."""
        if self.handoff is None or not conn.shares_memory:
            raise p.ProtocolError(
                p.ErrorCode.INVALID_FIELD,
                "this bridge did not offer shared memory to this connection: send the pixels in image.data",
                field="image.segment",
            )
        return self.handoff.attach(request)

    def _end(self, job: Job, conn: Connection, frame: Frames | None) -> None:
        """Send a job's one terminal event (already encoded) and free what it held (event-loop thread)."""
        if job.ended:
            return
        job.ended = True
        job.state = JobState.DONE
        self._record(job, conn)
        job.prepared = None
        if job.held_bytes:
            self.inputs.release(conn, job.held_bytes)
            job.held_bytes = 0
        if conn.jobs.get(job.job_id) is job:
            del conn.jobs[job.job_id]
        if frame is not None:
            conn.send_frame(frame)

    def _record(self, job: Job, conn: Connection) -> None:
        record = JobRecord.of(job, conn.name, conn.id)
        self.board.job_ended(record)
        conn.jobs_ended += 1
        # live frames come many a second: debug level (the status page shows their rate); each line is its own
        # template, so the log throttle (meant for floods of refusals) never drops one
        log.log(logging.DEBUG if record.live else logging.INFO, record.log_line())

    def cancel(self, conn: Connection, job_id: str) -> None:
        job = conn.jobs.get(job_id)
        if job is None:
            raise p.ProtocolError(p.ErrorCode.UNKNOWN_JOB, f"no job {job_id!r} is queued or running for this client", field="job_id")
        if self.queue.remove(job_id, conn) is not None:
            self._end(job, conn, p.encode(p.Cancelled(job_id=job_id)))
        else:
            job.cancel_event.set()  # the worker notices before it starts, the GPU thread within one step

    def disconnect(self, conn: Connection) -> None:
        if conn in self.connections:
            log.info("client %r #%d disconnected after %.0f s, %d jobs", conn.name, conn.id, time.time() - conn.since, conn.jobs_ended)
        self.connections.discard(conn)
        self.board.forget(conn.id)
        conn.stop()
        if self.handoff is not None:
            self.handoff.forget(conn)
        waiting = self.queue.remove_owner(conn)
        for job in list(conn.jobs.values()):
            job.cancel_event.set()
            if job in waiting:
                self._end(job, conn, None)  # nobody to tell; frees its inputs

    async def _work(self) -> None:
        assert self.loop is not None
        while True:
            job = await self.queue.next()
            if self._loading is not None and self.loading:
                # one load, not every load that follows: the job then runs after at most the next one
                await asyncio.shield(self._loading)
            conn: Connection = job.owner  # type: ignore[assignment]
            if job.cancel_event.is_set() or conn.closed:
                self._end(job, conn, p.encode(p.Cancelled(job_id=job.job_id)))
                continue
            try:
                frame = await self.loop.run_in_executor(self._gpu, self._run_blocking, job, conn)
            except Exception as exc:  # _run_blocking reports its own errors; this is a last resort
                log.exception("job %s failed", job.job_id)
                job.outcome = "error"
                message = f"the job failed: {exc.__class__.__name__}"
                frame = p.encode(p.Error(code=p.ErrorCode.INTERNAL, message=message, job_id=job.job_id))
            self._end(job, conn, frame)

    def _run_blocking(self, job: Job, conn: Connection) -> Frames:
        """Run a job on the GPU thread; streams its events and returns its terminal event, encoded."""
        from .engine import EngineError, JobCancelled
        from .imaging import encode_rgba

        request = job.request
        engine = self.engine
        if engine is None:
            job.outcome = "error"
            message = f"no model is loaded: {self.model_state.message}"
            return p.encode(p.Error(code=p.ErrorCode.NO_MODEL, message=message, job_id=job.job_id))
        handoff = self.handoff if request.shm and conn.shares_memory else None
        hooks = _JobHooks(job, conn, self._previews, handoff)
        outcome = "done"
        last: Frames | None = None
        try:
            prepared = job.prepared if job.prepared_by is engine else None
            steps, guidance, strength = engine.settings(request)
            job.settings = (steps, guidance, strength)
            for generated in engine.run(request, hooks, prepared):
                hooks.seal()
                if last is not None:
                    conn.send_frame_threadsafe(last)
                encoding = request.result_encoding if request.result_encoding is not p.Encoding.JPEG else p.Encoding.PNG
                image = encode_rgba(generated.pixels, encoding)
                if handoff is not None:
                    image = handoff.hand_over(conn, image, conn.outbox_bytes)
                last = conn.encode(
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
            if last is None:
                raise RuntimeError("the engine produced no result")
            if not request.live:
                with contextlib.suppress(RuntimeError):  # the pool is shut down when the bridge stops
                    self._previews.submit(self.board.add_thumbnail, job.job_id, generated.index, generated.pixels)
            return last
        except JobCancelled:
            outcome = "cancelled"
            hooks.seal()
            return p.encode(p.Cancelled(job_id=job.job_id))
        except p.ProtocolError as exc:
            outcome = "error"
            return p.encode(p.Error(code=exc.code, message=exc.message, job_id=job.job_id, field=exc.field))
        except EngineError as exc:
            outcome = "error"
            return p.encode(p.Error(code=exc.code, message=exc.message, job_id=job.job_id))
        except Exception as exc:
            outcome = "error"
            log.exception("job %s failed", job.job_id)
            message = f"the job failed inside the engine: {exc.__class__.__name__}: {_shorten(str(exc), 300)}"
            return p.encode(p.Error(code=p.ErrorCode.INTERNAL, message=message, job_id=job.job_id))
        finally:
            job.outcome, job.steps_run = outcome, hooks.steps_run

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

    def health(self, detailed: bool) -> dict[str, Any]:
        """The bridge's state; ``detailed`` adds the model's name and the recent jobs of every client."""
        state = self.model_state
        health: dict[str, Any] = {
            "status": state.status.value,
            "progress": state.progress,
            "downloaded": state.downloaded,
            "download_size": state.download_size,
            "test_model": state.test_model,
            "device": self.config.device,
            "queue": len(self.queue),
            "running": sum(1 for c in self.connections for j in c.jobs.values() if j.state is JobState.RUNNING),
            "clients": len(self.connections),
            "protocol": p.PROTOCOL_VERSION,
            "version": __version__,
        }
        if detailed:
            recent = [{k: v for k, v in asdict(r).items() if k in _HEALTH_JOB_FIELDS} for r in self.board.recent(10)]
            recipe = None if state.recipe is None else state.recipe.to_wire()
            health.update(model=state.name, message=state.message, recipe=recipe, recent_jobs=recent)
        return health

    def status(self) -> dict[str, Any]:
        """What the status page shows (only to callers that may see other clients' details)."""
        clients = [
            ClientView(connection=c.id, name=c.name, peer=c.peer, since=c.since, jobs=len(c.jobs))
            for c in sorted(self.connections, key=lambda c: c.id)
        ]
        jobs = [(job, c) for c in self.connections for job in c.jobs.values() if not job.ended]
        jobs.sort(key=lambda pair: (pair[0].state is not JobState.RUNNING, pair[0].submitted))
        active = [ActiveJob.of(job, c.name, c.id) for job, c in jobs[:_ACTIVE_SHOWN]]
        return self.board.snapshot(
            model=self.model_state, device=self.config.device, queued=len(self.queue), clients=clients, active=active
        )


_HEALTH_JOB_FIELDS = ("job_id", "client", "outcome", "steps", "ms")
#: the running job and the first waiting ones: a page, not the whole queue
_ACTIVE_SHOWN = 20


BRIDGE = web.AppKey("bridge", Bridge)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def host_name(host: str) -> str:
    """The name in a Host header, without port, brackets or trailing dot, lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _trusted_host(request: web.Request) -> bool:
    return is_loopback(host_name(request.headers.get("Host", "")))


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else request.query.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    bridge = request.app[BRIDGE]
    name = host_name(request.headers.get("Host", ""))
    if not is_loopback(name) and name not in bridge.config.allowed_hosts:
        # a page on another site that rebinds its name to 127.0.0.1 still sends its own name here
        raise web.HTTPMisdirectedRequest(text=f"host {_shorten(name, 80)!r} is not served here (serve --allow-host adds one)\n")
    origin = request.headers.get("Origin")
    if origin is not None and origin not in bridge.config.allowed_origins:
        # a web page in the user's browser must not drive the local bridge
        raise web.HTTPForbidden(text=f"origin {_shorten(origin, 80)} is not allowed (serve --allow-origin adds one)\n")
    if bridge.config.token and not _authorized(request, bridge.config.token):
        raise web.HTTPUnauthorized(text="a token is required: send 'Authorization: Bearer TOKEN' or ?token=TOKEN\n")
    response: web.StreamResponse = await handler(request)
    return response


async def _health(request: web.Request) -> web.Response:
    return web.json_response(request.app[BRIDGE].health(detailed=_trusted_host(request)))


def _may_see_details(request: web.Request) -> bool:
    """Loopback callers, or any caller once the guard has checked the token of a bridge that has one."""
    return _trusted_host(request) or bool(request.app[BRIDGE].config.token)


async def _status_page(request: web.Request) -> web.Response:
    if not _may_see_details(request):
        raise web.HTTPForbidden(text="the status page is shown on this machine only, or with the bridge's token\n")
    return web.Response(text=_page(), content_type="text/html", headers={"Cache-Control": "no-store"})


@functools.cache
def _page() -> str:
    """status.html with its stylesheet and script inlined: one request, which carries the token when there is one."""
    static = resources.files("bridge").joinpath("static")
    html = static.joinpath("status.html").read_text(encoding="utf-8")
    css = static.joinpath("status.css").read_text(encoding="utf-8")
    js = static.joinpath("status.js").read_text(encoding="utf-8")
    html = html.replace('<link rel="stylesheet" href="status.css">', f"<style>\n{css}</style>")
    return html.replace('<script src="status.js"></script>', f"<script>\n{js}</script>")


async def _status(request: web.Request) -> web.Response:
    if not _may_see_details(request):
        raise web.HTTPForbidden(text="the status is shown on this machine only, or with the bridge's token\n")
    return web.json_response(request.app[BRIDGE].status(), headers={"Cache-Control": "no-store"})


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    bridge = request.app[BRIDGE]
    bounds = bridge.bounds
    if bridge.sockets >= bounds.max_connections:
        raise web.HTTPServiceUnavailable(text=f"the bridge already serves {bridge.sockets} connections (serve --max-connections)\n")
    ws = web.WebSocketResponse(max_msg_size=bridge.config.limits.max_message_bytes, heartbeat=bounds.ping_interval, compress=False)
    bridge.sockets += 1
    try:
        await ws.prepare(request)
        conn = Connection(ws, asyncio.get_running_loop(), bounds.outbox_bytes, request.transport, peer=request.remote or "?")
        sender = asyncio.create_task(conn.pump())
        try:
            await _serve_connection(bridge, conn)
        finally:
            bridge.disconnect(conn)
            await sender
            if not ws.closed:
                await _close(ws, WSCloseCode.OK, "", request.transport)
    finally:
        bridge.sockets -= 1
    return ws


async def _serve_connection(bridge: Bridge, conn: Connection) -> None:
    ws = conn.ws
    greeted = False
    while not conn.closed:
        try:
            msg = await ws.receive(timeout=None if greeted else bridge.bounds.hello_timeout)
        except asyncio.TimeoutError:
            conn.drop(f"no hello within {bridge.bounds.hello_timeout:g} s")
            return
        if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            continue
        data = msg.data
        del msg  # a layer-sized request must not stay alive until the next message
        state = await _receive(bridge, conn, data, greeted)
        del data
        if state is None:
            return
        greeted = state


async def _receive(bridge: Bridge, conn: Connection, data: bytes | str, greeted: bool) -> bool | None:
    """Handle one message (and the raw frames that follow it); returns whether the client has said hello, or None
    when the connection must close."""
    job_id = None
    try:
        try:
            message = await bridge.decode(data)
        except p.ProtocolError as exc:
            # the pixels an unreadable message announced follow it: they are not messages
            if exc.frames and await _read_frames(bridge, conn, exc.frames) is None:
                return None
            raise
        del data
        following = p.frames_following(message)
        if following:
            job_id = getattr(message, "job_id", None)
            frames = await _read_frames(bridge, conn, following)
            if frames is None:
                return None
            message = p.join_frames(message, frames)
            del frames
        if isinstance(message, p.Hello):
            return True if _greet(bridge, conn, message) else None
        if not greeted:
            raise p.ProtocolError(p.ErrorCode.HANDSHAKE_REQUIRED, "send 'hello' first")
        if isinstance(message, p.Generate):
            job_id = message.job_id
            await bridge.submit(conn, message)
        else:
            _dispatch(bridge, conn, message)
    except p.ProtocolError as exc:
        if exc.job_id is None and isinstance(job_id, str):
            exc.job_id = job_id
        conn.send(p.Error.from_exception(exc))
    except ModelError as exc:
        conn.send(p.Error(code=exc.code, message=exc.message))
    except Exception as exc:  # a bug of ours must cost one message, not the connection
        log.exception("message from %s failed", conn.name)
        conn.send(p.Error(code=p.ErrorCode.INTERNAL, message=f"the bridge failed on this message: {exc.__class__.__name__}", job_id=job_id))
    return greeted


async def _read_frames(bridge: Bridge, conn: Connection, count: int) -> list[Any] | None:
    """The ``count`` binary frames that carry a message's pixels; None when they do not follow in time (the connection
    is dropped then) or the connection closes."""
    frames = []
    timeout = bridge.bounds.frame_timeout
    for _ in range(count):
        try:
            msg = await conn.ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            conn.drop(f"a message announced {count} frames of pixels; they did not follow within {timeout:g} s")
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        frames.append(msg.data)
    return frames


def _greet(bridge: Bridge, conn: Connection, hello: p.Hello) -> bool:
    if hello.protocol != p.PROTOCOL_VERSION:
        conn.send(
            p.Error(
                code=p.ErrorCode.UNSUPPORTED_PROTOCOL,
                message=f"this bridge speaks protocol {p.PROTOCOL_VERSION}, the client {hello.protocol}: update the older one",
            )
        )
        return False
    conn.name = _shorten(
        "".join(c if c.isprintable() else "?" for c in hello.client[: bridge.bounds.max_name_chars + 1]), bridge.bounds.max_name_chars
    )
    conn.encodings = hello.encodings
    conn.shares_memory = hello.shm and bridge.handoff is not None and is_loopback(conn.peer)
    conn.raw_frames = hello.raw_frames
    bridge.connections.add(conn)
    log.info("client %r #%d connected from %s", conn.name, conn.id, conn.peer)
    offer = bridge.handoff.offer if conn.shares_memory and bridge.handoff is not None else None
    conn.send(replace(bridge.welcome(), shm=offer, raw_frames=hello.raw_frames))
    return True


def _dispatch(bridge: Bridge, conn: Connection, message: p.Message) -> None:
    if isinstance(message, p.Cancel):
        bridge.cancel(conn, message.job_id)
    elif isinstance(message, p.ListModels):
        conn.send(p.Models(models=bridge.models(), current=bridge.model_state))
    elif isinstance(message, p.LoadModel):
        unchanged = bridge.request_model(message.model)
        if unchanged is not None:
            conn.send(p.ModelStatusEvent(model=unchanged))


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application: the bridge starts with it and stops with it."""
    app = web.Application(
        middlewares=[_guard],
        client_max_size=config.limits.max_message_bytes,
        # aiohttp closes a connection that sends no request for this long, the first one included
        handler_args={"keepalive_timeout": config.bounds.handshake_timeout},
    )
    bridge = Bridge(config)
    app[BRIDGE] = bridge
    app.router.add_get("/", _status_page)
    app.router.add_get("/status.json", _status)
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
