"""What the docker's buttons do, and what each update from the worker changes: host-independent, GUI thread only.

The controller drives a ``Canvas`` (the document: capture, preview layer, result
layer) and a ``Runner`` (the worker thread), and publishes a ``ViewState`` that
the docker renders. Krita's adapter implements ``Canvas``; tests use fakes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Hashable, Iterable, Protocol

from . import runner as r
from .bridge_package import (
    History,
    HistoryEntry,
    Rect,
    ResultSettings,
    describe_loading,
    describe_used,
    p,
    recipe_for,
    result_layer_name,
    result_settings,
    sentence,
)
from .jobs import JobSpec
from .live import LiveScheduler, LiveState, LiveStats
from .settings import MAX_SEED, Settings, Source
from .sources import Capture, CaptureError


class Canvas(Protocol):
    def active_document(self) -> object | None:
        """The document the user works on, or None when no image is open."""

    def is_open(self, document: object) -> bool: ...

    def capture(self, source: Source, from_canvas: bool, document: object | None = None) -> Capture:
        """Read the source of the active (or the given) document; raises CaptureError."""

    def show_preview(self, target: object, rect: Rect, pixels: bytes) -> None:
        """Write ``pixels`` into the target's [Preview] layer (created on first use), outside the undo history."""

    def clear_preview(self, target: object) -> None:
        """Remove the target's [Preview] layer, if any."""

    def apply_result(
        self, target: object, name: str, rect: Rect, pixels: bytes, *, from_preview: bool, settings: ResultSettings | None = None
    ) -> None:
        """Leave one new layer named ``name`` holding ``pixels`` above the target's layer, as one undo step.

        With ``from_preview`` the [Preview] layer, when it is there, becomes that layer. ``settings`` are kept
        with the layer (in the document).
        """


class Runner(Protocol):
    def connect(self, url: str, token: str = "") -> None: ...

    def submit(self, spec: JobSpec) -> None: ...

    def cancel(self, job_id: str) -> None: ...

    def list_models(self) -> None: ...

    def load_model(self, name: str) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


class Connection(Enum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    ONLINE = "online"


@dataclass(frozen=True)
class StripItem:
    """One thumbnail of the history strip: a variation of a job, done or still coming."""

    job_id: str
    index: int
    thumbnail: tuple[bytes, int, int] | None  # RGBA 8-bit; None before its first preview
    tooltip: str
    done: bool

    @property
    def key(self) -> tuple[str, int]:
        return self.job_id, self.index


@dataclass(frozen=True)
class ViewState:
    """Everything the docker shows."""

    connection: Connection = Connection.OFFLINE
    connection_text: str = "Not connected"
    models: tuple[str, ...] = ()
    model: str | None = None
    recipe: p.Recipe | None = None  # the selected model's: what "auto" settings become
    running: bool = False
    progress: float | None = None
    status: str = ""
    error: str = ""
    result_ready: bool = False
    seed: int | None = None
    live: LiveState = LiveState.OFF
    live_image: tuple[bytes, int, int] | None = None
    live_stats: LiveStats = field(default_factory=LiveStats)
    strip: tuple[tuple[StripItem, ...], ...] = ()  # the shown document's history, newest job first
    picked: tuple[str, int] | None = None  # the strip item shown on the canvas


@dataclass(frozen=True)
class _Result:
    target: object
    rect: Rect
    pixels: bytes
    seed: int
    prompt: str
    on_canvas: bool
    document: object = None  # where it came from: it is shown, and applied, only there
    settings: ResultSettings | None = None  # what made it (one-shot jobs)


_PER_DOCUMENT = ("seed", "live_image", "status", "error", "picked")


class Controller:
    def __init__(
        self,
        canvas: Canvas,
        runner: Runner,
        settings: Callable[[], Settings],
        view: Callable[[ViewState], None],
        *,
        live: LiveScheduler | None = None,
    ) -> None:
        self._canvas = canvas
        self._runner = runner
        self._settings = settings
        self._view = view
        self.live = live or LiveScheduler()
        self.state = ViewState()
        self._job: str | None = None  # the one-shot job in flight
        self._job_target: object = None
        self._job_prompt = ""
        self._job_document: object = None
        self._shown_document: object = None  # the document the docker shows the state of
        self._other_documents: list[tuple[object, dict[str, object]]] = []  # the per-document fields of the others
        self._cancelling = False
        self._result: _Result | None = None
        self._live_document: object | None = None
        self._live_seed = 0
        self._live_on_canvas = False
        self._live_error = ""
        self._models: tuple[p.ModelInfo, ...] = ()
        self._current = p.ModelState(None, p.ModelStatus.NO_MODEL)
        self.live_jobs: dict[str, Hashable] = {}  # every live job sent, with the state it rendered
        self._live_targets: dict[str, object] = {}
        self.live_rendered: list[Hashable] = []  # the states whose results arrived, in order
        self.capture_ms: float | None = None  # the last live capture's cost on the GUI thread
        self.history = History()  # one-shot results of every open document, for the strip
        self._job_settings = Settings()
        self._job_model = ""
        self._job_previews: dict[int, tuple[bytes, int, int]] = {}  # the running job's newest thumbnail per variation
        self._canvas_follows_job = True  # else the artist picked another result to look at meanwhile

    # --- connection -----------------------------------------------------------------------

    def connect(self) -> None:
        settings = self._settings()
        self._runner.connect(settings.url, settings.token)

    def select_model(self, name: str) -> None:
        if name and name != self.state.model and self.state.connection is Connection.ONLINE:
            self._runner.load_model(name)
            self._publish(recipe=recipe_for(name, self._models, self._current))

    # --- one-shot jobs --------------------------------------------------------------------

    def generate(self) -> None:
        if self._job is not None or self.live.state is not LiveState.OFF:
            return
        settings = self._settings()
        if self.state.connection is Connection.OFFLINE:
            self._runner.connect(settings.url, settings.token)
        if settings.from_canvas:
            self._drop_result()  # its [Preview] layer would be read as part of the canvas
        pending, self._result = self._result, None
        document = self._canvas.active_document()
        try:
            capture = self._canvas.capture(settings.source, settings.from_canvas)
        except CaptureError as exc:
            if pending is not None and pending.document == document:
                self._result = pending
            elif pending is not None and pending.on_canvas:
                self._canvas.clear_preview(pending.target)
            self._publish(error=exc.message, status="", result_ready=self._result is not None)
            return
        if pending is not None and pending.on_canvas and pending.target != capture.target:
            self._canvas.clear_preview(pending.target)  # else the new job reuses its [Preview] layer
        spec = JobSpec.new(capture, settings)
        self._job, self._job_target, self._job_prompt, self._job_document, self._cancelling = (
            spec.job_id,
            capture.target,
            settings.prompt,
            document,
            False,
        )
        self._job_settings, self._job_model, self._job_previews = settings, self.state.model or settings.model, {}
        self._canvas_follows_job = True
        self._runner.submit(spec)
        self._publish(running=True, progress=0.0, status="Sending…", error="", seed=None, result_ready=False, picked=None)
        self._publish_strip()

    def cancel(self) -> None:
        if self._job is not None and not self._cancelling:
            self._cancelling = True
            self._runner.cancel(self._job)
            self._publish(status="Cancelling…")

    def apply(self) -> None:
        result = self._result
        if result is None or result.document != self._canvas.active_document():
            return
        name = result_layer_name(result.prompt, result.seed)
        live = self.live.state is not LiveState.OFF
        self._canvas.apply_result(
            result.target, name, result.rect, result.pixels, from_preview=result.on_canvas and not live, settings=result.settings
        )
        self._result = None
        self._publish(result_ready=False, status="Applied as a new layer", error="", picked=None)

    # --- the history strip ----------------------------------------------------------------

    def pick(self, job_id: str, index: int) -> None:
        """Show a result of the strip on the canvas (the [Preview] layer); Apply then keeps exactly it."""
        entry = self.history.get(job_id, index)
        document = self._canvas.active_document()
        if entry is None or entry.document != document or self.live.state is not LiveState.OFF:
            return
        current = self._result
        if current is not None and current.on_canvas and current.target != entry.target:
            self._canvas.clear_preview(current.target)
        self._canvas.show_preview(entry.target, entry.rect, entry.pixels)
        s = entry.settings
        self._result = _Result(entry.target, entry.rect, entry.pixels, s.seed, s.prompt, on_canvas=True, document=document, settings=s)
        self._canvas_follows_job = job_id == self._job and index == 0
        self._publish(result_ready=True, seed=s.seed, picked=entry.key, status=f"Showing {s.describe()}: Apply keeps it")

    def settings_of(self, job_id: str, index: int) -> ResultSettings | None:
        """What made a result of the strip (Reuse puts them back in the docker)."""
        entry = self.history.get(job_id, index)
        return None if entry is None else entry.settings

    def _publish_strip(self) -> None:
        document = self._shown_document if self._shown_document is not None else self._canvas.active_document()
        self._publish(strip=self._strip(document))

    def _strip(self, document: object) -> tuple[tuple[StripItem, ...], ...]:
        jobs: list[tuple[StripItem, ...]] = []
        if self._job is not None and self._job_document == document:
            items = []
            for index in range(self._job_settings.count):
                entry = self.history.get(self._job, index)
                if entry is not None:
                    items.append(_strip_item(entry))
                else:
                    waiting = f"variation {index + 1} of {self._job_settings.count}: generating…"
                    items.append(StripItem(self._job, index, self._job_previews.get(index), waiting, done=False))
            jobs.append(tuple(items))
        jobs.extend(tuple(_strip_item(e) for e in entries) for entries in self.history.jobs(document) if entries[0].job_id != self._job)
        return tuple(jobs)

    def discard(self) -> None:
        self._drop_result()
        self._publish(
            result_ready=False,
            status="Discarded",
            live_image=None if self.live.state is LiveState.OFF else self.state.live_image,
        )

    def _drop_result(self) -> None:
        result, self._result = self._result, None
        if result is not None and result.on_canvas:
            self._canvas.clear_preview(result.target)

    # --- live mode ------------------------------------------------------------------------

    def set_live(self, on: bool) -> None:
        if on == (self.live.state is not LiveState.OFF):
            return
        if on:
            document = self._canvas.active_document()
            if document is None:
                self._publish(error="Open an image to use live mode.")
                return
            if self._job is not None:
                self.cancel()
            self._drop_result()
            settings = self._settings()
            if self.state.connection is Connection.OFFLINE:
                self._runner.connect(settings.url, settings.token)
            self._live_document = document
            self._live_seed = settings.seed if settings.fixed_seed else random.randint(0, MAX_SEED)
            self._live_error = ""
            self.capture_ms = None
            self.live.start()
            self._publish(
                live=self.live.state, live_stats=self.live.stats(), status="Live: watching the canvas", error="", result_ready=False
            )
            return
        job_id = self.live.stop()
        if job_id is not None:
            self._runner.cancel(job_id)
        self._drop_result()  # Apply keeps only the result the docker shows, and live shows none once off
        self._live_document = None
        self._publish(live=LiveState.OFF, status="Live off", result_ready=False)

    def tick(self) -> None:
        """Called every ``live.TICK_S`` while live mode is on, and when a live frame is back: send the canvas when it changed.

        Whether it must also have settled first is the scheduler's call (only while frames are slow).
        """
        if self.live.state is LiveState.OFF or self._live_document is None:
            return
        if not self._canvas.is_open(self._live_document):
            self.set_live(False)
            self._publish(status="Live off: the image was closed")
            return
        if self.live.in_flight is not None:
            return  # nothing can go out before the frame is back, and its return captures at once
        settings = replace(self._settings(), fixed_seed=True, seed=self._live_seed)
        started = time.perf_counter()
        try:
            capture = self._canvas.capture(settings.source, settings.from_canvas, self._live_document)
        except CaptureError as exc:
            if exc.message != self._live_error:
                self._live_error = exc.message
                self._publish(error=exc.message)
            return
        if self._live_error:
            self._live_error = ""
            self._publish(error="")
        key = (
            capture.key,
            settings.prompt,
            settings.negative_prompt,
            settings.strength,
            settings.live_steps,
            settings.guidance,
            settings.seed,
        )
        self.capture_ms = (time.perf_counter() - started) * 1000
        if self.live.observe(key):
            spec = JobSpec.new(capture, settings, live=True)
            self._live_on_canvas = settings.live_on_canvas and not settings.from_canvas
            self.live_jobs[spec.job_id] = key
            self._live_targets[spec.job_id] = capture.target
            self.live.sent(spec.job_id, key)
            self._runner.submit(spec)
        if self.state.live is not self.live.state:
            self._publish(live=self.live.state)

    # --- updates from the worker ----------------------------------------------------------

    def handle(self, updates: Iterable[r.Update]) -> None:
        """Apply a batch of updates; of several previews of one job only the newest is drawn."""
        batch = list(updates)
        newest: dict[tuple[str, int], int] = {(u.job_id, u.index): i for i, u in enumerate(batch) if isinstance(u, r.JobPreview)}
        for i, update in enumerate(batch):
            if isinstance(update, r.JobPreview) and newest.get((update.job_id, update.index)) != i:
                continue
            self._handle(update)
        self._publish(live=self.live.state)

    def _handle(self, update: r.Update) -> None:
        if isinstance(update, r.Connecting):
            self._publish(connection=Connection.CONNECTING, connection_text=f"Connecting to {update.url}…")
        elif isinstance(update, r.Connected):
            self._connected(update)
        elif isinstance(update, r.ConnectFailed):
            self._publish(connection=Connection.OFFLINE, connection_text="Not connected", error=update.message)
        elif isinstance(update, r.Disconnected):
            self._publish(connection=Connection.OFFLINE, connection_text="Disconnected", error=update.reason)
        elif isinstance(update, r.ModelsListed):
            self._models_known(update.models, update.current)
        elif isinstance(update, r.ModelChanged):
            self._model_changed(update)
        elif isinstance(update, r.Notice):
            self._publish(error=update.message)
        elif update.job_id in self.live_jobs:
            self._live_update(update)
        elif update.job_id == self._job:
            self._job_update(update)

    def _connected(self, update: r.Connected) -> None:
        welcome = update.welcome
        self._publish(
            connection=Connection.ONLINE,
            connection_text=f"Connected: bridge {welcome.server_version} on {welcome.device}",
            error="",
        )
        self._models_known(welcome.models, welcome.model)
        wanted = self._settings().model
        if wanted and wanted in self.state.models and wanted != welcome.model.name:
            self._runner.load_model(wanted)
            self._publish(recipe=recipe_for(wanted, self._models, self._current))

    def _models_known(self, models: Iterable[p.ModelInfo], current: p.ModelState) -> None:
        self._models, self._current = tuple(models), current
        self._publish(models=tuple(m.name for m in self._models), model=current.name, recipe=recipe_for("", self._models, current))

    def _model_changed(self, update: r.ModelChanged) -> None:
        state = self._current = update.state
        text = state.message or state.status.value.capitalize()
        if state.status is p.ModelStatus.LOADING:
            text = describe_loading(state)
        self._publish(model=state.name, recipe=recipe_for("", self._models, state), status=f"Model: {text}")

    def _job_update(self, update: r.Update) -> None:
        if isinstance(update, r.JobQueued):
            ahead = f" ({update.position} ahead)" if update.position else ""
            self._publish(status=f"Queued{ahead}")
        elif isinstance(update, r.JobProgress):
            count = self._job_settings.count
            variation = f" (variation {update.index + 1} of {count})" if count > 1 else ""
            self._publish(progress=update.fraction, status=f"Generating: step {update.step} of {update.steps}{variation}")
        elif isinstance(update, r.JobPreview):
            if update.thumbnail is not None:
                self._job_previews[update.index] = update.thumbnail
                self._publish_strip()
            if not self._cancelling and update.index == 0 and self._canvas_follows_job:
                self._canvas.show_preview(self._job_target, update.rect, update.pixels)
        elif isinstance(update, r.JobResult):
            self._job_result(update)
        elif isinstance(update, r.JobFailed):
            self._canvas.clear_preview(self._job_target)
            self._end_job()
            self._publish(error=update.message, status="Failed")
        elif isinstance(update, r.JobCancelled):
            self._canvas.clear_preview(self._job_target)
            self._end_job()
            self._publish(status="Cancelled")

    def _job_result(self, update: r.JobResult) -> None:
        document = self._job_document
        s = self._job_settings
        settings = result_settings(
            s.prompt,
            s.negative_prompt,
            update.seed,
            self._job_model,
            asked=(s.strength, s.steps, s.guidance),
            used=(update.strength, update.steps, update.guidance),
        )
        thumbnail = update.thumbnail or (b"", 0, 0)
        entry = HistoryEntry(
            document, update.job_id, update.index, update.count, settings, update.rect, update.pixels, thumbnail[0], thumbnail[1:],
            target=self._job_target,
        )  # fmt: skip
        self.history.add(entry)
        if update.index == 0 and self._canvas_follows_job:
            self._canvas.show_preview(self._job_target, update.rect, update.pixels)
            self._result = _Result(self._job_target, update.rect, update.pixels, update.seed, self._job_prompt, True, document, settings)
            self._publish_for(document, result_ready=True, seed=update.seed, picked=entry.key)
        if not update.last:
            self._publish_strip()
            return
        self._end_job()
        used = describe_used(update.steps, update.guidance, update.strength)
        done = f"Done ({used})" if used else "Done"
        more = ", or pick another in the strip" if update.count > 1 else ""
        self._publish_for(document, status=f"{done}: Apply keeps it as a new layer{more}")

    def _end_job(self) -> None:
        self._job, self._job_target, self._cancelling = None, None, False
        self._job_previews = {}
        self._publish(running=False, progress=None)
        self._publish_strip()

    def _live_update(self, update: r.Update) -> None:
        job_id = getattr(update, "job_id", "")
        if isinstance(update, r.JobResult):
            self.live.finished(job_id, shown=True)
            self.live_rendered.append(self.live_jobs[job_id])
            target = self._live_targets.pop(job_id, None)
            if self.live.state is LiveState.OFF:
                return
            prompt = self._settings().prompt
            on_canvas = self._live_on_canvas
            if on_canvas:
                self._canvas.show_preview(target, update.rect, update.pixels)
            elif self._result is not None and self._result.on_canvas:
                self._canvas.clear_preview(self._result.target)
            document = self._live_document
            self._result = _Result(target, update.rect, update.pixels, update.seed, prompt, on_canvas, document)
            width, height = update.view_size
            self._publish_for(
                document,
                live_image=(update.view, width, height),
                live_stats=self.live.stats(self.capture_ms),
                result_ready=True,
                seed=update.seed,
                status="Live",
            )
            self.tick()  # the frame is back: the newest canvas state goes out now, not at the next tick
        elif isinstance(update, (r.JobFailed, r.JobCancelled)):
            self.live.finished(job_id)
            self._live_targets.pop(job_id, None)
            if isinstance(update, r.JobFailed) and self.live.state is not LiveState.OFF:
                self._publish(error=update.message)

    # --- documents ------------------------------------------------------------------------

    def document_changed(self) -> None:
        """The active document changed: show its own result, seed, live image and status, not the last one's."""
        document = self._canvas.active_document()
        if document == self._shown_document:
            return
        if self._shown_document is not None and self._canvas.is_open(self._shown_document):
            self._store(self._shown_document, {name: getattr(self.state, name) for name in _PER_DOCUMENT})
        self._shown_document = document
        kept = next((fields for doc, fields in self._other_documents if doc == document), {})
        self._other_documents = [(doc, f) for doc, f in self._other_documents if doc != document and self._canvas.is_open(doc)]
        restored = {name: kept.get(name, getattr(ViewState(), name)) for name in _PER_DOCUMENT}
        self.history.forget(lambda doc: doc == document or self._canvas.is_open(doc))
        ready = self._result is not None and self._result.document == document
        self._publish(**restored, result_ready=ready, strip=self._strip(document))

    def _publish_for(self, document: object, **changes: object) -> None:
        """Publish ``changes`` if ``document`` is the one shown, else keep them for when it is."""
        if self._shown_document is None or document is None or document == self._shown_document:
            self._publish(**changes)
        else:
            self._store(document, {name: value for name, value in changes.items() if name in _PER_DOCUMENT})

    def _store(self, document: object, fields: dict[str, object]) -> None:
        kept = next((f for doc, f in self._other_documents if doc == document), None)
        if kept is None:
            self._other_documents.append((document, dict(fields)))
        else:
            kept.update(fields)

    # --- shutdown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop live mode, cancel the job in flight and end the worker."""
        self.set_live(False)
        self.cancel()
        self._runner.close()

    def _publish(self, **changes: object) -> None:
        if "error" in changes:  # the bridge's, the client's and the capture's messages, all as sentences
            changes["error"] = sentence(str(changes["error"]))
        state = replace(self.state, **changes)  # type: ignore[arg-type]
        if state != self.state:
            self.state = state
            self._view(state)


def _strip_item(entry: HistoryEntry) -> StripItem:
    s = entry.settings
    tooltip = f"{s.prompt or '(no prompt)'}\n{s.describe()}"
    thumbnail = (entry.thumbnail, *entry.thumbnail_size) if entry.thumbnail else None
    return StripItem(entry.job_id, entry.index, thumbnail, tooltip, done=True)
