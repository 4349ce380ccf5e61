"""One img2img run as a state machine: the bridge's events in, canvas calls out.

The preview layer's lifecycle lives here, so that it is the same (and tested)
whatever the editor: history is frozen before the first preview appears and
thawed only after the preview is gone, and the result is added with history
on, as one undoable step. Every method runs on the editor's main thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .bridge_package import (
    ClientError,
    Disconnected,
    Rect,
    crop,
    describe_loading,
    loading_fraction,
    p,
    preview_pixels,
    result_layer_name,
    result_settings,
    used_by,
    variation_group_name,
)
from .errors import MODEL_HINT, describe_client_error, describe_disconnect, describe_error
from .source import Source


class JobState(Enum):
    READY = "ready"
    LOADING_MODEL = "loading-model"
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = frozenset({JobState.FINISHED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class ResultLayer:
    """One variation to add: ``rgba`` for ``rect`` (image coordinates), written where ``mask`` is not 0."""

    rect: Rect
    rgba: bytes
    mask: bytes | None  # one byte a pixel of ``rect``; None: the whole rectangle changes
    name: str
    settings: str  # ``ResultSettings.to_text()``, attached to the layer


class Canvas(Protocol):
    """What a job does to the image; rectangles are in image coordinates, pixels RGBA u8."""

    def freeze_history(self) -> None: ...

    def thaw_history(self) -> None: ...

    def show_preview(self, rect: Rect, rgba: bytes) -> None:
        """Create the preview layer above the source, or overwrite it in place."""
        ...

    def remove_preview(self) -> None: ...

    def add_results(self, results: Sequence[ResultLayer], group: str | None) -> None:
        """Show the source replaced by the first result, all in one undoable step.

        With ``group`` the results go into a new layer group of that name, the first visible and the others hidden.
        """
        ...

    def set_progress(self, fraction: float | None, text: str) -> None: ...


class Bridge(Protocol):
    """The part of ``bridge.editor.client.BridgeClient`` a job uses."""

    def generate(self, request: p.Generate) -> str: ...

    def load_model(self, model: str) -> None: ...

    def cancel(self, job_id: str) -> None: ...


class ImageJob:
    """Runs ``request`` (built from ``source``) on the bridge and shows what comes back on ``canvas``."""

    def __init__(
        self,
        request: p.Generate,
        source: Source,
        canvas: Canvas,
        bridge: Bridge,
        *,
        on_end: Callable[[], None] = lambda: None,
    ) -> None:
        self.request = request
        self.source = source
        self.canvas = canvas
        self.bridge = bridge
        self.on_end = on_end
        self.state = JobState.READY
        self.error: str | None = None
        self.seed: int | None = None  # the first variation's
        self.seeds: list[int] = []
        self.model = ""  # the model that ran it, as the bridge named it
        # the steps, guidance and strength the last result ran with, as the bridge reported them
        self.used: tuple[int | None, float | None, float | None] = (None, None, None)
        self.result_rect: Rect | None = None
        self.previews = 0
        self._wanted_model: str | None = None
        self._frozen = False
        self._preview_shown = False
        self._arrived: list[ResultLayer] = []

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def job_id(self) -> str:
        return self.request.job_id

    # --- driving ------------------------------------------------------------------------------

    def start(self, welcome: p.Welcome, model: str = "") -> None:
        """Check the request against the bridge, load ``model`` if it is not the loaded one, then submit."""
        if self.state is not JobState.READY:
            raise RuntimeError(f"the job was already started (state {self.state.value})")
        too_large = _too_large(self.source.rect, welcome.limits)
        if too_large:
            self._fail(too_large)
            return
        current = welcome.model
        wanted = model or None
        self.model = model or current.name or ""
        if wanted is not None and not (current.name == wanted and current.status is p.ModelStatus.READY):
            self._wanted_model = wanted
            self.state = JobState.LOADING_MODEL
            self.canvas.set_progress(None, f"Img2Img: loading model {wanted}\u2026")
            if not (current.name == wanted and current.status is p.ModelStatus.LOADING):
                self._send(lambda: self.bridge.load_model(wanted))
            return
        if current.status is p.ModelStatus.READY:
            self._submit()
        elif current.status is p.ModelStatus.LOADING:
            self.state = JobState.LOADING_MODEL
            self.canvas.set_progress(loading_fraction(current), f"Img2Img: {describe_loading(current)}\u2026")
        elif current.status is p.ModelStatus.NO_MODEL:
            self._fail(f"The bridge has no model loaded: {MODEL_HINT}.")
        else:
            self._fail(f"The bridge's model failed to load ({current.message.rstrip('.')}): {MODEL_HINT}.")

    def abort(self, message: str) -> None:
        """End the job now with ``message``, cancelling it on the bridge and cleaning up the canvas."""
        if not self.ended:
            self._fail(message)

    def handle(self, event: p.Message | Disconnected) -> None:
        """React to one event from the bridge."""
        if self.ended:
            return
        if isinstance(event, Disconnected):
            self._fail(describe_disconnect(event.reason), cancel_remote=False)
        elif isinstance(event, p.ModelStatusEvent):
            if self.state is JobState.LOADING_MODEL:
                self._on_model(event.model)
        elif isinstance(event, p.Error):
            if event.job_id == self.job_id or (event.job_id is None and self.state is JobState.LOADING_MODEL):
                self._fail(describe_error(event), cancel_remote=False)
        elif getattr(event, "job_id", None) != self.job_id:
            return
        elif isinstance(event, p.Queued):
            self.state = JobState.QUEUED
            ahead = f"{event.position} job(s) ahead" if event.position else "starting"
            self.canvas.set_progress(0.0, f"Img2Img: queued, {ahead}\u2026")
        elif isinstance(event, p.Progress):
            self.state = JobState.RUNNING
            self.canvas.set_progress(event.fraction, f"Img2Img: step {event.step} of {event.steps}")
        elif isinstance(event, p.Preview):
            self.state = JobState.RUNNING
            self._on_preview(event)
        elif isinstance(event, p.Result):
            self._on_result(event)
        elif isinstance(event, p.Cancelled):
            self._end(JobState.CANCELLED)

    # --- events -------------------------------------------------------------------------------

    def _on_model(self, model: p.ModelState) -> None:
        if model.status is p.ModelStatus.READY and (self._wanted_model is None or model.name == self._wanted_model):
            self._submit()
        elif model.status is p.ModelStatus.ERROR:
            self._fail(f"The bridge could not load the model ({model.message.rstrip('.')}): {MODEL_HINT}.")
        elif model.status is p.ModelStatus.LOADING:
            self.canvas.set_progress(loading_fraction(model), f"Img2Img: {describe_loading(model)}\u2026")

    def _submit(self) -> None:
        self.state = JobState.SUBMITTED
        rect = self.source.rect
        self.canvas.set_progress(0.0, f"Img2Img: sending {rect.width}x{rect.height} pixels\u2026")
        self._send(lambda: self.bridge.generate(self.request))

    def _on_preview(self, preview: p.Preview) -> None:
        if preview.index != len(self._arrived):
            return  # variations preview together: the layer follows the first one still being made
        area = Rect(preview.x, preview.y, preview.width, preview.height)
        if not self._inside_source(area) or preview.image.encoding not in p.BASIC_ENCODINGS:
            return  # a preview is a courtesy: skip one that cannot be shown
        mask = None if self.source.mask is None else crop(self.source.mask, self.source.rect.width, area, 1)
        rgba = preview_pixels(preview, mask)
        try:
            if not self._frozen:
                self.canvas.freeze_history()
                self._frozen = True
            self.canvas.show_preview(area.translate(self.source.rect.x, self.source.rect.y), rgba)
            self._preview_shown = True
        except Exception as exc:  # the editor's own errors (the image was closed, ...) end the job
            self._fail(f"GIMP could not show the preview: {exc}")
            return
        self.previews += 1
        self.canvas.set_progress(
            preview.step / preview.steps if preview.steps else None, f"Img2Img: step {preview.step} of {preview.steps}"
        )

    def _on_result(self, result: p.Result) -> None:
        area = Rect(result.x, result.y, result.image.width, result.image.height)
        if not self._inside_source(area):
            self._fail(f"The bridge sent a result outside the area it was given ({area}); update the bridge.", cancel_remote=False)
            return
        try:
            rgba = result.image.raw_rgba()
        except p.ProtocolError as exc:
            self._fail(f"The bridge sent an unreadable result: {exc.message}", cancel_remote=False)
            return
        mask = None if self.source.mask is None else crop(self.source.mask, self.source.rect.width, area, 1)
        rect = area.translate(self.source.rect.x, self.source.rect.y)
        request = self.request
        asked = (request.strength, request.steps, request.guidance)
        settings = result_settings(request.prompt, request.negative_prompt, result.seed, self.model, asked=asked, used=used_by(result))
        settings_text = settings.to_text()
        self._arrived.append(ResultLayer(rect, rgba, mask, result_layer_name(request.prompt, result.seed), settings_text))
        self.seeds.append(result.seed)
        if self.seed is None:
            self.seed, self.result_rect = result.seed, rect
            self.used = (result.steps, result.guidance, result.strength)
        if not result.last:
            return  # the variations go in together: one undo step, never one held open across the network
        failure = self._clear_preview()
        if failure:
            self._fail(failure, cancel_remote=False)
            return
        arrived, self._arrived = self._arrived, []
        group = variation_group_name(self.request.prompt, len(arrived)) if len(arrived) > 1 else None
        try:
            self.canvas.add_results(arrived, group)
        except Exception as exc:
            self._fail(f"GIMP could not add the result layer: {exc}", cancel_remote=False)
            return
        self._end(JobState.FINISHED)

    # --- endings ------------------------------------------------------------------------------

    def _fail(self, message: str, *, cancel_remote: bool = True) -> None:
        if cancel_remote and self.state in (JobState.SUBMITTED, JobState.QUEUED, JobState.RUNNING):
            try:
                self.bridge.cancel(self.job_id)
            except ClientError:
                pass  # the connection is gone: the bridge cancels the job itself
        self.error = message
        self._end(JobState.FAILED)

    def _end(self, state: JobState) -> None:
        failure = self._clear_preview()
        if failure and self.error is None:
            self.error = failure
            state = JobState.FAILED
        self.state = state
        self.on_end()

    def _clear_preview(self) -> str | None:
        """Remove the preview layer, then thaw history; returns a sentence if the editor refused."""
        failure = None
        if self._preview_shown:
            self._preview_shown = False
            try:
                self.canvas.remove_preview()
            except Exception as exc:
                failure = f"GIMP could not remove the preview layer: {exc}"
        if self._frozen:
            self._frozen = False
            try:
                self.canvas.thaw_history()
            except Exception as exc:
                failure = failure or f"GIMP could not turn undo history back on: {exc}"
        return failure

    def _send(self, action: Callable[[], object]) -> None:
        try:
            action()
        except ClientError as exc:
            self._fail(describe_client_error(exc), cancel_remote=False)

    def _inside_source(self, area: Rect) -> bool:
        sent = Rect(0, 0, self.source.rect.width, self.source.rect.height)
        return not area.empty and area.intersect(sent) == area


def _too_large(rect: Rect, limits: p.Limits) -> str | None:
    if rect.width <= limits.max_side and rect.height <= limits.max_side and rect.width * rect.height <= limits.max_pixels:
        return None
    return (
        f"The area to process is {rect.width}x{rect.height} pixels; this bridge takes at most {limits.max_side} "
        f"a side and {limits.max_pixels} in all: select a smaller region or scale the image down."
    )
