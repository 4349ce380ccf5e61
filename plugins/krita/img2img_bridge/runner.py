"""The plug-in's worker thread: it talks to the bridge and turns pixels into what Krita writes.

Requests from the GUI thread (connect, submit, cancel, …) and the client's events
(from its reader thread) go through one queue to one worker thread, which owns
the client and the table of running jobs. It converts captures to RGBA 8-bit,
sends them, scales and converts previews and results back to the document's
format, and hands ``Update`` objects to ``deliver``: the host passes them to its
GUI thread. Nothing here touches Krita or Qt.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Union

from . import pixels as px
from .bridge_package import BridgeClient, ClientError, Rect, alpha_from_mask, crop, describe_error, p, preview_pixels, scale_nearest
from .bridge_package import Disconnected as ClientDisconnected
from .jobs import JobSpec, build_request

# --- what the worker reports --------------------------------------------------------------


@dataclass(frozen=True)
class Connecting:
    url: str


@dataclass(frozen=True)
class Connected:
    welcome: p.Welcome


@dataclass(frozen=True)
class ConnectFailed:
    message: str


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class JobQueued:
    job_id: str
    position: int


#: The longest side of the thumbnails previews and results carry for the docker's history strip.
THUMBNAIL_SIDE = 96


@dataclass(frozen=True)
class JobProgress:
    """Denoising step ``step`` of the ``steps`` this job really runs (about the schedule × strength)."""

    job_id: str
    step: int
    steps: int
    index: int = 0  # the variation

    @property
    def fraction(self) -> float:
        return self.step / self.steps if self.steps else 1.0


@dataclass(frozen=True)
class JobPreview:
    """``pixels`` (the job's format) cover ``rect`` in document coordinates; unmasked pixels are transparent."""

    job_id: str
    rect: Rect
    pixels: bytes
    index: int = 0  # the variation
    thumbnail: tuple[bytes, int, int] | None = None  # RGBA 8-bit, at most THUMBNAIL_SIDE a side


@dataclass(frozen=True)
class JobResult:
    """The final pixels for ``rect`` (document coordinates) in the job's format.

    ``view`` is the whole captured region in RGBA 8-bit with the result pasted in,
    ``view_size`` its width and height: what the docker shows. ``steps``, ``guidance`` and
    ``strength`` are what it ran with, as the bridge reports them (None from older bridges).
    """

    job_id: str
    rect: Rect
    pixels: bytes
    seed: int
    view: bytes
    view_size: tuple[int, int]
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    index: int = 0  # the variation ``index`` of ``count``; the job ends with the last
    count: int = 1
    thumbnail: tuple[bytes, int, int] | None = None  # ``view`` at most THUMBNAIL_SIDE a side, RGBA 8-bit

    @property
    def last(self) -> bool:
        return self.index >= self.count - 1


@dataclass(frozen=True)
class JobFailed:
    job_id: str
    message: str


@dataclass(frozen=True)
class JobCancelled:
    job_id: str


@dataclass(frozen=True)
class ModelsListed:
    models: tuple[p.ModelInfo, ...]
    current: p.ModelState


@dataclass(frozen=True)
class ModelChanged:
    state: p.ModelState


@dataclass(frozen=True)
class Notice:
    """A message from the bridge that concerns no job."""

    message: str


Update = Union[
    Connecting,
    Connected,
    ConnectFailed,
    Disconnected,
    JobQueued,
    JobProgress,
    JobPreview,
    JobResult,
    JobFailed,
    JobCancelled,
    ModelsListed,
    ModelChanged,
    Notice,
]

JOB_END = (JobResult, JobFailed, JobCancelled)

ClientFactory = Callable[..., BridgeClient]


@dataclass
class _Job:
    spec: JobSpec
    rgba: bytes


class JobRunner:
    """One worker thread per docker; every public method returns at once and may be called from any thread."""

    def __init__(self, deliver: Callable[[Update], None], *, client_factory: ClientFactory = BridgeClient, name: str = "krita") -> None:
        self._deliver = deliver
        self._client_factory = client_factory
        self._name = name
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._client: BridgeClient | None = None
        self._jobs: dict[str, _Job] = {}
        self._thread = threading.Thread(target=self._work, name="img2img-bridge-worker", daemon=True)
        self._thread.start()

    # --- requests -------------------------------------------------------------------------

    def connect(self, url: str, token: str = "") -> None:
        self._tasks.put(lambda: self._connect(url, token))

    def submit(self, spec: JobSpec) -> None:
        self._tasks.put(lambda: self._submit(spec))

    def cancel(self, job_id: str) -> None:
        self._tasks.put(lambda: self._send(lambda client: client.cancel(job_id)))

    def list_models(self) -> None:
        self._tasks.put(lambda: self._send(lambda client: client.list_models()))

    def load_model(self, name: str) -> None:
        self._tasks.put(lambda: self._send(lambda client: client.load_model(name)))

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection (the bridge cancels this client's jobs) and end the worker."""
        self._tasks.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                break
            try:
                task()
            except Exception as exc:  # a bug here must not end the worker
                import traceback

                traceback.print_exc()
                self._deliver(Notice(f"internal error in the plug-in: {exc.__class__.__name__}: {exc}"))
        self._drop_client()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        for job_id in list(self._jobs):
            self._deliver(JobFailed(job_id, "the connection to the bridge was closed"))
        self._jobs.clear()

    def _connect(self, url: str, token: str) -> None:
        self._drop_client()
        self._deliver(Connecting(url))
        holder: list[BridgeClient] = []

        def on_event(event: p.Message | ClientDisconnected) -> None:
            # runs on the client's reader thread: queue it for the worker
            if holder:
                self._tasks.put(lambda: self._on_event(holder[0], event))

        try:
            client = self._client_factory(url, token=token or None, name=self._name, on_event=on_event)
            welcome = client.connect()
        except ClientError as exc:
            self._deliver(ConnectFailed(exc.message))
            return
        holder.append(client)
        self._client = client
        self._deliver(Connected(welcome))

    def _send(self, action: Callable[[BridgeClient], None]) -> None:
        client = self._client
        if client is None:
            self._deliver(Notice("not connected to the bridge; press Reconnect"))
            return
        try:
            action(client)
        except ClientError as exc:
            self._deliver(Notice(exc.message))

    def _submit(self, spec: JobSpec) -> None:
        client = self._client
        if client is None or not client.connected:
            self._deliver(JobFailed(spec.job_id, "not connected to the bridge; press Reconnect"))
            return
        capture = spec.capture
        try:
            rgba = px.to_rgba8(capture.pixels, capture.fmt)
            request = build_request(spec, rgba)
            if client.welcome is not None:
                request.validate(client.welcome.limits)
        except p.ProtocolError as exc:
            self._deliver(JobFailed(spec.job_id, exc.message))
            return
        self._jobs[spec.job_id] = _Job(spec, rgba)
        try:
            client.generate(request)
        except ClientError as exc:
            del self._jobs[spec.job_id]
            self._deliver(JobFailed(spec.job_id, exc.message))

    def _on_event(self, client: BridgeClient, event: p.Message | ClientDisconnected) -> None:
        if client is not self._client:
            return  # an event from a connection that has since been replaced
        if isinstance(event, ClientDisconnected):
            self._client = None
            for job_id in list(self._jobs):
                self._deliver(JobFailed(job_id, event.reason))
            self._jobs.clear()
            self._deliver(Disconnected(event.reason))
            return
        if isinstance(event, p.Models):
            self._deliver(ModelsListed(tuple(event.models), event.current))
            return
        if isinstance(event, p.ModelStatusEvent):
            self._deliver(ModelChanged(event.model))
            return
        if isinstance(event, p.Error) and event.job_id is None:
            self._deliver(Notice(event.message))
            return
        event_job = getattr(event, "job_id", None)
        job = self._jobs.get(event_job) if isinstance(event_job, str) else None
        if job is None:
            return
        try:
            update = self._job_update(job, event)
        except (p.ProtocolError, ValueError) as exc:
            update = JobFailed(job.spec.job_id, f"the bridge sent an unreadable image: {exc}")
            self._send(lambda c: c.cancel(job.spec.job_id))
        if p.is_job_end(event) or isinstance(update, JobFailed):
            self._jobs.pop(job.spec.job_id, None)
        if update is not None:
            self._deliver(update)

    def _job_update(self, job: _Job, event: p.Message) -> Update | None:
        job_id = job.spec.job_id
        if isinstance(event, p.Queued):
            return JobQueued(job_id, event.position)
        if isinstance(event, p.Progress):
            return JobProgress(job_id, event.step, event.steps, event.index)
        if isinstance(event, p.Preview):
            return self._preview(job, event)
        if isinstance(event, p.Result):
            return self._result(job, event)
        if isinstance(event, p.Error):
            return JobFailed(job_id, describe_error(event, choose_model="in the docker's Model list", run_again="press Generate again"))
        if isinstance(event, p.Cancelled):
            return JobCancelled(job_id)
        return None

    def _preview(self, job: _Job, event: p.Preview) -> JobPreview:
        capture = job.spec.capture
        rect = Rect(event.x, event.y, event.width, event.height)
        rgba = preview_pixels(event, None)  # blown up to its region
        # the history strip's thumbnail: the preview (blended over the source) in the sent region, as a result's view
        thumbnail = _thumbnail(px.paste(job.rgba, capture.rect.width, rgba, rect, 4), capture.rect.width, capture.rect.height)
        if capture.mask is not None:
            rgba = alpha_from_mask(rgba, crop(capture.mask, capture.rect.width, rect, 1))
        pixels = px.from_rgba8(rgba, capture.fmt)
        return JobPreview(job.spec.job_id, rect.translate(capture.rect.x, capture.rect.y), pixels, event.index, thumbnail)

    def _result(self, job: _Job, event: p.Result) -> JobResult:
        capture = job.spec.capture
        rect = Rect(event.x, event.y, event.image.width, event.image.height)
        if rect.intersect(Rect(0, 0, capture.rect.width, capture.rect.height)) != rect:
            raise ValueError(f"the result's rectangle {rect} lies outside the {capture.rect.width}x{capture.rect.height} image sent")
        rgba = event.image.raw_rgba()
        pixels = px.from_rgba8(rgba, capture.fmt)
        if capture.mask is not None:
            # unmasked pixels come back from the source itself, at its own depth
            size = capture.fmt.pixel_bytes
            original = crop(capture.pixels, capture.rect.width, rect, size)
            pixels = px.keep_where_unmasked(pixels, original, crop(capture.mask, capture.rect.width, rect, 1), size)
        view = px.paste(job.rgba, capture.rect.width, rgba, rect, 4)
        return JobResult(
            job.spec.job_id,
            rect.translate(capture.rect.x, capture.rect.y),
            pixels,
            event.seed,
            view,
            (capture.rect.width, capture.rect.height),
            event.steps,
            event.guidance,
            event.strength,
            event.index,
            event.count,
            _thumbnail(view, capture.rect.width, capture.rect.height),
        )


def _thumbnail(rgba: bytes, width: int, height: int) -> tuple[bytes, int, int]:
    scale = min(1.0, THUMBNAIL_SIDE / max(width, height))
    small_width, small_height = max(1, round(width * scale)), max(1, round(height * scale))
    return scale_nearest(rgba, width, height, small_width, small_height), small_width, small_height
