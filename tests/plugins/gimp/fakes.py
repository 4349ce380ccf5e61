"""A fake canvas and bridge that check what GIMP would insist on."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from img2img_gimp.job import ResultLayer

from bridge.editor import protocol as p
from bridge.editor.client import ClientError
from bridge.editor.regions import Rect


@dataclass
class FakeCanvas:
    """Records calls; raises when the order would break GIMP's undo history."""

    ops: list[str] = field(default_factory=list)
    frozen: bool = False
    preview: tuple[Rect, bytes] | None = None
    results: list[tuple[Rect, bytes, str]] = field(default_factory=list)
    result_masks: list[bytes | None] = field(default_factory=list)
    result_settings: list[str] = field(default_factory=list)
    groups: list[str | None] = field(default_factory=list)  # per add: the variations' group name, None for one result
    progress: list[tuple[float | None, str]] = field(default_factory=list)
    fail_on: str | None = None

    def _op(self, name: str) -> None:
        self.ops.append(name)
        if name == self.fail_on:
            raise RuntimeError(f"GIMP said no to {name}")

    def freeze_history(self) -> None:
        assert not self.frozen, "frozen twice"
        self._op("freeze")
        self.frozen = True

    def thaw_history(self) -> None:
        assert self.frozen, "thawed without a freeze"
        assert self.preview is None, "thawed while the preview layer is still there"
        self._op("thaw")
        self.frozen = False

    def show_preview(self, rect: Rect, rgba: bytes) -> None:
        assert self.frozen, "preview shown with history on"
        assert len(rgba) == rect.width * rect.height * 4
        self._op("preview")
        self.preview = (rect, rgba)

    def remove_preview(self) -> None:
        assert self.preview is not None
        self._op("remove")
        self.preview = None

    def add_results(self, results: Sequence[ResultLayer], group: str | None) -> None:
        assert not self.frozen, "result added while history is frozen: it would not be undoable"
        assert self.preview is None, "result added beside the preview"
        assert results and (group is not None) == (len(results) > 1), "a group holds two or more variations"
        for layer in results:
            rect = layer.rect
            assert len(layer.rgba) == rect.width * rect.height * 4
            assert layer.mask is None or len(layer.mask) == rect.width * rect.height
        self._op("result")
        self.groups.append(group)
        for layer in results:
            self.results.append((layer.rect, layer.rgba, layer.name))
            self.result_masks.append(layer.mask)
            self.result_settings.append(layer.settings)

    def set_progress(self, fraction: float | None, text: str) -> None:
        self.progress.append((fraction, text))


@dataclass
class FakeBridge:
    sent: list[p.Message] = field(default_factory=list)
    broken: bool = False

    def _send(self, message: p.Message) -> None:
        if self.broken:
            raise ClientError(p.ErrorCode.CONNECTION, "the connection to the bridge is closed")
        self.sent.append(message)

    def generate(self, request: p.Generate) -> str:
        self._send(request)
        return request.job_id

    def load_model(self, model: str) -> None:
        self._send(p.LoadModel(model=model))

    def cancel(self, job_id: str) -> None:
        self._send(p.Cancel(job_id=job_id))


def model_state(name: str | None = "tiny", status: p.ModelStatus = p.ModelStatus.READY, message: str = "") -> p.ModelState:
    return p.ModelState(name=name, status=status, message=message)


def welcome(model: p.ModelState | None = None, limits: p.Limits | None = None) -> p.Welcome:
    return p.Welcome(
        protocol=p.PROTOCOL_VERSION,
        server_version="test",
        device="cpu",
        model=model or model_state(),
        limits=limits or p.Limits(),
        models=(p.ModelInfo("tiny", "builtin", test_model=True), p.ModelInfo("other", "folder")),
        encodings=p.BASIC_ENCODINGS,
    )


class QueueLoop:
    """A main loop for tests: callbacks posted from any thread run on the thread that called ``run``."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.posted_from: set[str] = set()
        self.ran_on: set[str] = set()
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._quit = False

    def post(self, callback: Callable[[], None]) -> None:
        self.posted_from.add(threading.current_thread().name)
        self._queue.put(callback)

    def run(self) -> None:
        self._quit = False
        while not self._quit:
            callback = self._queue.get(timeout=self.timeout)  # queue.Empty fails the test instead of hanging it
            self.ran_on.add(threading.current_thread().name)
            callback()

    def quit(self) -> None:
        self._quit = True
