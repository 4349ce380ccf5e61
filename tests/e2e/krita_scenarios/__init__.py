"""A pykrita extension that drives the img2img docker in real Krita and writes what it saw as JSON.

It acts only when ``IMG2IMG_KRITA_SCENARIOS`` names the result file. Krita must
have been started with the test's images on its command line (``u8.png``,
``deep.png``): only documents opened that way get an active layer under Xvfb.
Each scenario uses the docker's own widgets, waits for the plug-in's events
with a nested event loop, and records facts; ``tests/e2e/test_krita.py``
judges them. Runs on Krita's Python (3.13 and 3.14 here, 3.10 in Krita 5.2 builds), under PyQt5 or PyQt6.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import traceback
import zlib
from importlib import import_module
from typing import Any, Callable

from krita import Extension, Krita, Selection

# the binding Krita loaded: PyQt6 under Krita 6, PyQt5 under Krita 5 (importing the other one is refused)
_QT = "PyQt6" if "PyQt6" in sys.modules else "PyQt5"
QtCore: Any = import_module(f"{_QT}.QtCore")
QtWidgets: Any = import_module(f"{_QT}.QtWidgets")
QByteArray, QEventLoop, QTimer = QtCore.QByteArray, QtCore.QEventLoop, QtCore.QTimer
QAbstractItemView, QApplication, QDockWidget, QMdiArea = (
    QtWidgets.QAbstractItemView,
    QtWidgets.QApplication,
    QtWidgets.QDockWidget,
    QtWidgets.QMdiArea,
)

RESULT = os.environ.get("IMG2IMG_KRITA_SCENARIOS", "")
ECHO_URL = os.environ.get("IMG2IMG_KRITA_ECHO_URL", "")  # a bridge whose engine echoes its input: the live benchmark's
BENCH_SIDES = (512, 1024, 2048)
JOB_TIMEOUT = 120.0


def wait_until(predicate: Callable[[], bool], timeout: float = JOB_TIMEOUT) -> bool:
    """Run Krita's event loop until ``predicate()`` holds (checked every 20 ms) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: (predicate() or time.monotonic() > deadline) and loop.quit())
    timer.start(20)
    if not predicate():
        loop.exec()
    timer.stop()
    return predicate()


def pump(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


class Run:
    """What the scenarios share: Krita, the docker, the documents, and the updates the docker received."""

    def __init__(self) -> None:
        self.app = Krita.instance()
        window = self.app.activeWindow()
        assert window is not None, "Krita has no window"
        self.window = window
        dockers = sys.modules["img2img_bridge.docker"].DOCKERS
        self.docker = dockers[-1]
        self.updates: list[Any] = []
        receive = self.docker.relay._receiver

        def record(items: list[Any]) -> None:
            self.updates.extend(items)
            receive(items)

        self.docker.relay._receiver = record

    @property
    def state(self) -> Any:
        return self.docker.controller.state

    def document(self, suffix: str) -> Any:
        wait_until(lambda: any(d.fileName().endswith(suffix) for d in self.app.documents()), 30)  # files open one by one
        doc = next(d for d in self.app.documents() if d.fileName().endswith(suffix))
        mdi = self.window.qwindow().findChild(QMdiArea)
        for sub, view in zip(mdi.subWindowList(), self.window.views(), strict=True):
            if view.document() == doc:
                mdi.setActiveSubWindow(sub)
        wait_until(lambda: self.app.activeDocument() == doc, 5)
        assert self.app.activeDocument() == doc, f"could not make {suffix} the active document"
        assert doc.activeNode() is not None, f"{suffix} has no active layer"
        self.activate_bottom_layer(doc)
        return doc

    def activate_bottom_layer(self, doc: Any) -> None:
        """Make the image's own layer the active one, as a user would in the Layers docker.

        Krita 5.3 and 6 make a result layer the active one after Apply (5.2 under Xvfb keeps the source active), and
        ``Document.setActiveNode`` has no effect under Xvfb: every scenario works on the image's own layer.
        """
        bottom = doc.topLevelNodes()[0]
        if doc.activeNode() == bottom:
            return
        for dock in self.window.qwindow().findChildren(QDockWidget):
            if dock.objectName() != "KisLayerBox":
                continue
            for view in dock.findChildren(QAbstractItemView):  # the layer list (the first is the blending modes')
                model = view.model()
                rows = [model.index(row, 0) for row in range(model.rowCount())]
                for index in rows:
                    if model.data(index) == bottom.name():
                        view.selectionModel().setCurrentIndex(index, QtCore.QItemSelectionModel.SelectionFlag.ClearAndSelect)
        assert wait_until(lambda: doc.activeNode() == bottom, 5), f"could not make {bottom.name()} the active layer"

    def history(self) -> int:
        """Entries in Krita's undo history (the History docker's list)."""
        for dock in self.window.qwindow().findChildren(QDockWidget):
            if dock.objectName() == "History":
                return int(dock.findChildren(QAbstractItemView)[0].model().rowCount())
        raise RuntimeError("no History docker")

    def configure(self, *, source: str, prompt: str, steps: int = 2, live_steps: int = 1, seed: int | None = 1234) -> None:
        d = self.docker
        d.source_combo.setCurrentIndex(d.source_combo.findData(source))
        d.canvas_check.setChecked(False)
        d.prompt_edit.setPlainText(prompt)
        d.preset_buttons["high"].click()
        d.strength_slider.setValue(100)
        d.steps_spin.setValue(steps)
        d.live_steps_spin.setValue(live_steps)
        d.seed_fixed_check.setChecked(seed is not None)
        d.seed_edit.setText(str(seed or 0))

    def generate(self, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        """Click Generate and wait for the result (or an error)."""
        self.docker.generate_button.click()
        finished = wait_until(lambda: not self.state.running, timeout)
        return {
            "finished": finished,
            "ready": self.state.result_ready,
            "error": self.state.error,
            "seed": self.state.seed,
        }


def names(doc: Any) -> list[str]:
    return [n.name() for n in doc.topLevelNodes()]


def layer(doc: Any, name: str) -> Any:
    return next(n for n in doc.topLevelNodes() if n.name() == name)


def pixels(node: Any, doc: Any) -> bytes:
    return bytes(node.pixelData(0, 0, doc.width(), doc.height()))


def select(doc: Any, mask: bytes) -> None:
    selection = Selection()
    selection.setPixelData(QByteArray(mask), 0, 0, doc.width(), doc.height())
    doc.setSelection(selection)
    pump(50)


def feathered_box(width: int, height: int, box: tuple[int, int, int, int], feather: int) -> bytes:
    """255 inside ``box`` (x0, y0, x1, y1), falling to 0 over ``feather`` pixels outside it."""
    x0, y0, x1, y1 = box
    out = bytearray(width * height)
    for y in range(height):
        for x in range(width):
            distance = max(x0 - x, x - x1 + 1, y0 - y, y - y1 + 1, 0)
            out[y * width + x] = 0 if distance >= feather else 255 - distance * 255 // feather
    return bytes(out)


def compare(source: bytes, result: bytes, mask: bytes, pixel: int) -> dict[str, int]:
    """Counts, per mask class, of result pixels equal to / differing from the source (transparent = not written)."""
    counts = {"kept_same": 0, "kept_changed": 0, "kept_empty": 0, "regen_same": 0, "regen_changed": 0}
    for i, m in enumerate(mask):
        a, b = source[i * pixel : (i + 1) * pixel], result[i * pixel : (i + 1) * pixel]
        if m == 0:
            key = "kept_empty" if not any(b) else ("kept_same" if a == b else "kept_changed")
        elif m == 255:
            key = "regen_same" if a == b else "regen_changed"
        else:
            continue
        counts[key] += 1
    return counts


# --- scenarios ------------------------------------------------------------------------------


def scenario_whole_layer(run: Run) -> dict[str, Any]:
    doc = run.document("u8.png")
    source = doc.activeNode()
    before, bounds = pixels(source, doc), source.bounds()
    out: dict[str, Any] = {"doc": [doc.width(), doc.height(), doc.colorDepth(), doc.colorProfile()]}
    run.configure(source="selection", prompt="no selection yet")
    run.docker.generate_button.click()
    out["no_selection_error"] = run.state.error
    run.configure(source="layer", prompt="e2e whole layer")
    history = run.history()
    out["job"] = run.generate()
    out["layers_with_preview"] = names(doc)
    out["history_with_preview"] = run.history() - history
    run.docker.apply_button.click()
    pump(100)
    out["layers"] = names(doc)
    out["history_after_apply"] = run.history() - history
    result = layer(doc, f"e2e whole layer (seed {out['job']['seed']})")
    rb = result.bounds()
    out["result_bounds"] = [rb.x(), rb.y(), rb.width(), rb.height()]
    out["source_bounds"] = [bounds.x(), bounds.y(), bounds.width(), bounds.height()]
    out["result_depth"] = result.colorDepth()
    out["result_differs"] = pixels(result, doc) != before
    out["source_untouched"] = pixels(source, doc) == before
    # Krita 6 runs undo and redo as strokes of their own: wait for each to show rather than for a fixed time
    result_name = result.name()
    run.app.action("edit_undo").trigger()
    wait_until(lambda: result_name not in names(doc), 10)
    out["layers_after_undo"] = names(doc)
    run.app.action("edit_redo").trigger()
    wait_until(lambda: result_name in names(doc), 10)
    out["layers_after_redo"] = names(doc)
    # discard leaves nothing behind
    run.docker.generate_button.click()
    wait_until(lambda: not run.state.running)
    run.docker.discard_button.click()
    pump(100)
    out["layers_after_discard"] = names(doc)
    return out


def scenario_selection(run: Run) -> dict[str, Any]:
    doc = run.document("u8.png")
    source = doc.activeNode()
    before = pixels(source, doc)
    mask = feathered_box(doc.width(), doc.height(), (30, 20, 60, 44), 8)
    select(doc, mask)
    read_back = bytes(doc.selection().pixelData(0, 0, doc.width(), doc.height()))
    out: dict[str, Any] = {"selection_read_back": read_back == mask, "selected_pixels": sum(1 for m in mask if m)}
    run.configure(source="selection", prompt="e2e selection")
    out["job"] = run.generate()
    run.docker.apply_button.click()
    pump(100)
    result = layer(doc, f"e2e selection (seed {out['job']['seed']})")
    rb = result.bounds()
    out["result_bounds"] = [rb.x(), rb.y(), rb.width(), rb.height()]
    out["counts"] = compare(before, pixels(result, doc), mask, 4)
    out["source_untouched"] = pixels(source, doc) == before
    return out


def scenario_background(run: Run) -> dict[str, Any]:
    doc = run.document("u8.png")
    source = doc.activeNode()
    before = pixels(source, doc)
    mask = feathered_box(doc.width(), doc.height(), (20, 16, 50, 40), 4)
    select(doc, mask)
    run.configure(source="background", prompt="e2e background")
    out: dict[str, Any] = {"job": run.generate()}
    run.docker.apply_button.click()
    pump(100)
    result = layer(doc, f"e2e background (seed {out['job']['seed']})")
    inverted = mask.translate(bytes(255 - i for i in range(256)))
    out["counts"] = compare(before, pixels(result, doc), inverted, 4)  # "kept" = the selected subject
    out["source_untouched"] = pixels(source, doc) == before
    run.app.action("deselect").trigger()
    pump(100)
    out["deselected"] = doc.selection() is None
    return out


def scenario_live(run: Run) -> dict[str, Any]:
    doc = run.document("u8.png")
    source = doc.activeNode()
    original = pixels(source, doc)
    controller = run.docker.controller
    run.configure(source="layer", prompt="e2e live")
    run.docker.live_canvas_check.setChecked(False)
    jobs_before = len(controller.live_jobs)
    run.docker.live_check.setChecked(True)
    out: dict[str, Any] = {"live_on": controller.live.state.value, "timer": run.docker.live_timer.isActive()}
    wait_until(lambda: controller.live.in_flight is not None, 10)
    edits = 6
    # successive strokes while the first frame is in flight, within one turn of Krita's event loop (the frame's end
    # cannot be seen before they are all in, however fast the bridge is): they come out as one job, the newest state
    for i in range(edits):
        patch = bytes([40 * i % 256, 200, 30 * i % 256, 255]) * (8 * 8)
        source.setPixelData(QByteArray(patch), 4 + 6 * i, 4, 8, 8)
        doc.refreshProjection()
    pump(60)
    final = pixels(source, doc)

    def final_rendered() -> bool:
        if controller.live.in_flight is not None or not controller.live_rendered:
            return False
        return controller.live_rendered[-1][0][1] == zlib.adler32(final)

    out["last_state_rendered"] = wait_until(final_rendered)
    out["edits"] = edits
    out["jobs"] = len(controller.live_jobs) - jobs_before
    out["view_shows_result"] = run.docker.live_view.pixmap() is not None and not run.docker.live_view.pixmap().isNull()
    out["apply_enabled"] = run.docker.apply_button.isEnabled()
    # one more stroke, then Live off while its job runs
    source.setPixelData(QByteArray(bytes([1, 2, 3, 255]) * 64), 70, 40, 8, 8)
    doc.refreshProjection()
    out["job_started"] = wait_until(lambda: controller.live.in_flight is not None, 10)
    job = controller.live.in_flight
    run.docker.live_check.setChecked(False)
    ends = ("JobCancelled", "JobResult", "JobFailed")
    out["job_ended"] = wait_until(lambda: any(type(u).__name__ in ends and u.job_id == job for u in run.updates))
    out["end"] = next((type(u).__name__ for u in run.updates if type(u).__name__ in ends and u.job_id == job), None)
    out["live_off"] = controller.live.state.value
    out["apply_enabled_after_off"] = run.docker.apply_button.isEnabled()
    layers_before_apply = names(doc)
    run.docker.apply_button.click()
    pump(100)
    out["layers_added_by_apply_after_off"] = len(names(doc)) - len(layers_before_apply)
    out["timer_after"] = run.docker.live_timer.isActive()
    jobs_after = len(controller.live_jobs)
    source.setPixelData(QByteArray(bytes([9, 9, 9, 255]) * 64), 80, 50, 8, 8)
    doc.refreshProjection()
    pump(1000)
    out["jobs_after_off"] = len(controller.live_jobs) - jobs_after
    source.setPixelData(QByteArray(original), 0, 0, doc.width(), doc.height())
    doc.refreshProjection()
    return out


def scenario_half_transparent(run: Run) -> dict[str, Any]:
    """The source layer at alpha 128: after Apply the result stands in its place, at its alpha, above earlier results.

    (Krita ignores ``setActiveNode`` under Xvfb, so the active layer itself is made see-through, then restored.)
    """
    doc = run.document("u8.png")
    source = doc.activeNode()
    width, height = doc.width(), doc.height()
    original = pixels(source, doc)
    shown = [(n, n.visible()) for n in doc.topLevelNodes()]
    half = bytearray(original)
    half[3::4] = bytes([128]) * (width * height)
    source.setPixelData(QByteArray(bytes(half)), 0, 0, width, height)
    doc.refreshProjection()
    pump(100)
    run.configure(source="layer", prompt="e2e half")
    out: dict[str, Any] = {"job": run.generate()}
    run.docker.apply_button.click()
    pump(100)
    doc.waitForDone()
    name = f"e2e half (seed {out['job']['seed']})"
    result = layer(doc, name)
    out["source"] = source.name()
    out["names"] = names(doc)
    out["visible"] = {n.name(): n.visible() for n in doc.topLevelNodes()}
    data = pixels(result, doc)
    out["result_alphas"] = sorted(set(data[3::4]))
    out["result_differs"] = data != bytes(half)
    run.app.action("edit_undo").trigger()
    pump(300)
    out["after_undo"] = {"names": names(doc), "source_visible": source.visible()}
    for leftover in [n for n in doc.topLevelNodes() if n.name() == name]:
        leftover.remove()
    source.setPixelData(QByteArray(original), 0, 0, width, height)
    for node, visible in shown:
        node.setVisible(visible)
    doc.refreshProjection()
    return out


def scenario_documents(run: Run) -> dict[str, Any]:
    """A result belongs to its document: another one shows none, applies none, and a refusal there drops it."""
    first = run.document("u8.png")
    run.configure(source="layer", prompt="e2e documents")
    out: dict[str, Any] = {"job": run.generate()}
    out["first"] = {"apply": run.docker.apply_button.isEnabled(), "seed": run.state.seed, "status": run.state.status}
    first_layers = names(first)
    second = run.document("deep.png")
    pump(200)
    second_layers = names(second)
    out["second"] = {
        "apply": run.docker.apply_button.isEnabled(),
        "seed": run.state.seed,
        "status": run.state.status,
        "live_image": run.state.live_image is not None,
    }
    run.app.action("deselect").trigger()
    pump(50)
    run.configure(source="selection", prompt="e2e refused")
    run.docker.generate_button.click()  # refused: nothing is selected
    pump(100)
    out["refused"] = {"error": run.state.error, "apply": run.docker.apply_button.isEnabled()}
    run.docker.apply_button.click()
    pump(100)
    out["second_layers_unchanged"] = names(second) == second_layers
    run.document("u8.png")
    pump(200)
    out["back"] = {"apply": run.docker.apply_button.isEnabled(), "seed": run.state.seed}
    out["first_layers"] = [first_layers, names(first)]
    return out


def scenario_variations(run: Run) -> dict[str, Any]:
    """Four variations in the strip; the third, picked, is shown and applied exactly; the strip survives a switch."""
    doc = run.document("u8.png")
    controller = run.docker.controller
    run.configure(source="layer", prompt="e2e variations", steps=3, seed=700)
    run.docker.count_spin.setValue(4)
    out: dict[str, Any] = {"job": run.generate(timeout=4 * JOB_TIMEOUT)}
    run.docker.count_spin.setValue(1)
    strip = run.docker.strip
    first_job = controller.state.strip[0]
    job_id = first_job[0].job_id
    out["first_job"] = [[item.index, item.done, item.thumbnail is not None] for item in first_job]
    out["strip_icons"] = [not strip.item(i).icon().isNull() for i in range(4)]
    out["previewed"] = sorted({u.index for u in run.updates if type(u).__name__ == "JobPreview" and u.job_id == job_id})
    strip.itemClicked.emit(strip.item(2))
    pump(100)
    entry = controller.history.get(job_id, 2)
    rect = entry.rect
    shown = layer(doc, "[Preview]")
    out["picked"] = list(controller.state.picked)
    out["shown_is_the_third"] = bytes(shown.pixelData(rect.x, rect.y, rect.width, rect.height)) == entry.pixels
    out["others_differ"] = [controller.history.get(job_id, i).pixels != entry.pixels for i in (0, 1, 3)]
    run.docker.apply_button.click()
    pump(100)
    name = f"e2e variations (seed {entry.settings.seed})"
    out["seed"], out["name_in_layers"] = entry.settings.seed, name in names(doc)
    applied = layer(doc, name)
    out["applied_is_the_third"] = bytes(applied.pixelData(rect.x, rect.y, rect.width, rect.height)) == entry.pixels
    table = json.loads(bytes(doc.annotation("img2img-bridge-settings")) or b"{}")
    out["annotation"] = table.get(applied.uniqueId().toString())
    keys = [[item.key for item in items] for items in controller.state.strip]
    run.document("deep.png")
    pump(200)
    out["other_document_first_job"] = [
        list(k) for k in ([item.key for item in controller.state.strip[0]] if controller.state.strip else [])
    ]
    run.document("u8.png")
    pump(200)
    out["strip_survives"] = [[item.key for item in items] for items in controller.state.strip] == keys
    out["this_job"] = [list(k) for k in keys[0]]
    return out


class LiveProbe:
    """Watches live mode from outside: submits, frames shown, and the plug-in's time on Krita's main thread.

    ``edit()`` marks a change made to the canvas; each frame's latency runs from the last edit made before
    its job was captured to the moment its result was handled (shown in the docker).
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        d = run.docker
        self.controller = c = d.controller
        self.edits: list[float] = []
        self.jobs: dict[str, int] = {}  # live job -> edits made before it was captured
        self.open: set[str] = set()
        self.max_in_flight = 0
        self.shown: list[tuple[float, str]] = []
        self.busy = 0.0
        self.captures: list[float] = []
        self._depth = 0
        submit, handle, capture = c._runner.submit, c.handle, c._canvas.capture

        def timed_submit(spec: Any) -> None:
            if spec.live:
                self.open.add(spec.job_id)
                self.max_in_flight = max(self.max_in_flight, len(self.open))
                self.jobs[spec.job_id] = len(self.edits)
            submit(spec)

        def timed_handle(updates: Any) -> None:
            batch = list(updates)
            for u in batch:
                if type(u).__name__ in ("JobResult", "JobFailed", "JobCancelled"):
                    self.open.discard(u.job_id)
            self._timed(handle, batch)
            now = time.perf_counter()
            self.shown += [(now, u.job_id) for u in batch if type(u).__name__ == "JobResult" and u.job_id in self.jobs]

        def timed_capture(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return capture(*args)
            finally:
                self.captures.append((time.perf_counter() - started) * 1000)

        c._runner.submit, c.handle, c._canvas.capture = timed_submit, timed_handle, timed_capture
        d.live_timer.timeout.disconnect()
        d.live_timer.timeout.connect(d._guarded(lambda: self._timed(c.tick)))

    def _timed(self, fn: Callable[..., None], *args: Any) -> None:
        if self._depth:
            fn(*args)
            return
        self._depth += 1
        started = time.perf_counter()
        try:
            fn(*args)
        finally:
            self.busy += time.perf_counter() - started
            self._depth -= 1

    def edit(self) -> None:
        self.edits.append(time.perf_counter())

    def latencies(self, since: float, until: float) -> list[float]:
        out = []
        for at, job in self.shown:
            made = self.jobs[job]
            if since <= at <= until and made > 0:
                out.append(at - self.edits[made - 1])
        return out

    def close(self) -> None:
        c, d = self.controller, self.run.docker
        c.__dict__.pop("handle", None)
        c._runner.__dict__.pop("submit", None)
        c._canvas.__dict__.pop("capture", None)
        d.live_timer.timeout.disconnect()
        d.live_timer.timeout.connect(d._guarded(c.tick))


def stroke(doc: Any, node: Any, probe: LiveProbe, edits: int, gap_ms: int, size: int = 8) -> tuple[float, float]:
    """A continuous scripted stroke: ``edits`` small dabs along a diagonal, ``gap_ms`` apart; returns its start and end."""
    width, height = doc.width(), doc.height()
    started = time.perf_counter()
    for i in range(edits):
        x = (i * (width - size)) // max(1, edits - 1)
        y = (i * (height - size)) // max(1, edits - 1)
        dab = bytes([(i * 37) % 256, (i * 11) % 256, 255 - (i * 5) % 256, 255]) * (size * size)
        node.setPixelData(QByteArray(dab), x, y, size, size)
        doc.refreshProjection()
        probe.edit()
        pump(gap_ms)
    return started, time.perf_counter()


def rendered(controller: Any, node: Any, doc: Any) -> Callable[[], bool]:
    final = zlib.adler32(pixels(node, doc))

    def check() -> bool:
        if controller.live.in_flight is not None or not controller.live_rendered:
            return False
        return bool(controller.live_rendered[-1][0][1] == final)

    return check


def scenario_live_stroke(run: Run) -> dict[str, Any]:
    """Many small edits in one continuous stroke: results show while it goes on, one job at a time, the end rendered."""
    doc = run.document("u8.png")
    source = doc.activeNode()
    original = pixels(source, doc)
    controller = run.docker.controller
    run.configure(source="layer", prompt="e2e stroke")
    run.docker.live_canvas_check.setChecked(False)
    probe = LiveProbe(run)
    try:
        run.docker.live_check.setChecked(True)
        wait_until(lambda: bool(probe.shown), 30)  # the first frame: the frame time is known from here on
        before = len(probe.shown)
        started, ended = stroke(doc, source, probe, edits=100, gap_ms=30)
        out: dict[str, Any] = {"edits": 100, "frames_during_stroke": sum(1 for at, _ in probe.shown[before:] if at < ended)}
        out["last_state_rendered"] = wait_until(rendered(controller, source, doc))
        out["max_in_flight"] = probe.max_in_flight
        out["jobs"] = len(probe.jobs)
        out["stats"] = run.docker.live_stats_label.text()
        out["pause_s"] = controller.live.pause
        out["stroke_s"] = round(ended - started, 2)
        run.docker.live_check.setChecked(False)
        wait_until(lambda: not probe.open, 30)
    finally:
        probe.close()
    source.setPixelData(QByteArray(original), 0, 0, doc.width(), doc.height())
    doc.refreshProjection()
    return out


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 2)


def reconnect(run: Run, url: str) -> bool:
    d = run.docker
    if d.url_edit.text() == url and run.state.connection.value == "online":
        return True
    n = len(run.updates)
    d.url_edit.setText(url)
    d.reconnect_button.click()
    return wait_until(lambda: any(type(u).__name__ == "Connected" for u in run.updates[n:]), 30)


def bench_one(run: Run, side: int, url: str, seconds: float = 3.0, gap_ms: int = 20) -> dict[str, Any]:
    out: dict[str, Any] = {"side": side, "connected": reconnect(run, url)}
    doc = run.document("u8.png")  # scaled up: under Xvfb only the documents on Krita's command line have an active layer
    doc.scaleImage(side, side, 72, 72, "Bicubic")
    doc.waitForDone()
    node = doc.activeNode()
    out["doc"] = [doc.width(), doc.height(), *node.bounds().getRect()]
    controller = run.docker.controller
    run.configure(source="layer", prompt="live bench")
    run.docker.live_canvas_check.setChecked(False)
    probe = LiveProbe(run)
    try:
        run.docker.live_check.setChecked(True)
        out["first_frame"] = wait_until(lambda: bool(probe.shown), 20)
        wait_until(lambda: controller.live.in_flight is None, 20)
        before, busy_before, captures_before = len(probe.shown), probe.busy, len(probe.captures)
        started, ended = stroke(doc, node, probe, edits=int(seconds * 1000 / (gap_ms + 5)), gap_ms=gap_ms, size=16)
        busy = probe.busy - busy_before
        during = [at for at, _ in probe.shown[before:] if at < ended]
        out["edits"] = len(probe.edits)
        out["stroke_s"] = round(ended - started, 2)
        out["frames_during_stroke"] = len(during)
        out["fps"] = round(len(during) / (ended - started), 1)
        out["main_ms_per_frame"] = round(busy * 1000 / len(during), 2) if during else None
        out["capture_ms"] = median(probe.captures[captures_before:])
        out["latency_ms"] = median([s * 1000 for s in probe.latencies(started, ended + 60)])
        out["final_rendered"] = wait_until(rendered(controller, node, doc), 30)
        out["max_in_flight"] = probe.max_in_flight
        out["stats"] = run.docker.live_stats_label.text()
        run.docker.live_check.setChecked(False)
        wait_until(lambda: not probe.open, 10)
    finally:
        probe.close()
    return out


def scenario_live_bench(run: Run) -> dict[str, Any]:
    """The live benchmark: a scripted stroke against the tiny model and an echo engine at each canvas size."""
    if not ECHO_URL:
        return {"skipped": "no echo bridge"}
    tiny_url = run.docker.url_edit.text()
    doc = run.document("u8.png")
    size = doc.width(), doc.height()
    rows = []
    for engine, url in (("echo", ECHO_URL), ("tiny", tiny_url)):
        for side in BENCH_SIDES:
            try:
                rows.append({"engine": engine, **bench_one(run, side, url)})
            except Exception:
                rows.append({"engine": engine, "side": side, "error": traceback.format_exc()})
            with open(RESULT + ".bench", "w") as fh:  # what was measured survives a run that is killed
                json.dump(rows, fh, indent=1)
    reconnect(run, tiny_url)
    doc.scaleImage(*size, 72, 72, "Bicubic")
    doc.waitForDone()
    return {"rows": rows}


def scenario_u16(run: Run) -> dict[str, Any]:
    doc = run.document("deep.png")
    doc.setColorSpace("RGBA", "U16", "sRGB-elle-V2-g10.icc")
    doc.waitForDone()
    source = doc.activeNode()
    width, height = doc.width(), doc.height()
    deep = [((x * 1361) % 65536, (y * 1597) % 65536, 40000 + x + y, 65535) for y in range(height) for x in range(width)]
    source.setPixelData(QByteArray(b"".join(struct.pack("=4H", *v) for v in deep)), 0, 0, width, height)
    doc.refreshProjection()
    before = pixels(source, doc)
    out: dict[str, Any] = {"doc": [doc.colorModel(), doc.colorDepth(), doc.colorProfile(), source.colorDepth()]}
    run.configure(source="layer", prompt="e2e sixteen")
    out["whole"] = run.generate()
    run.docker.apply_button.click()
    pump(100)
    whole = layer(doc, f"e2e sixteen (seed {out['whole']['seed']})")
    out["whole_depth"] = whole.colorDepth()
    out["whole_size"] = len(pixels(whole, doc)) == doc.width() * doc.height() * 8
    # two boxes: their bounding box, which the bridge sends back, holds unselected pixels between them
    first, second = (feathered_box(width, height, box, 3) for box in ((4, 4, 14, 14), (28, 20, 44, 36)))
    mask = bytes(max(a, b) for a, b in zip(first, second, strict=True))
    run.activate_bottom_layer(doc)  # the source again, not the result just applied
    select(doc, mask)
    run.configure(source="selection", prompt="e2e sixteen selection")
    out["selection"] = run.generate()
    run.docker.apply_button.click()
    pump(100)
    result = layer(doc, f"e2e sixteen selection (seed {out['selection']['seed']})")
    out["counts"] = compare(before, pixels(result, doc), mask, 8)
    out["source_untouched"] = pixels(source, doc) == before
    run.app.action("deselect").trigger()
    return out


def scenario_model_defaults(run: Run) -> dict[str, Any]:
    """Steps, guidance and strength set back to auto in the docker: nothing model-specific is sent. Runs last,
    so that Krita stores these settings on exit."""
    doc = run.document("u8.png")
    d = run.docker
    run.configure(source="layer", prompt="e2e defaults")
    d.preset_buttons["model"].click()
    d.steps_spin.setValue(d.steps_spin.minimum())
    d.guidance_spin.setValue(d.guidance_spin.minimum())
    d.live_steps_spin.setValue(d.live_steps_spin.minimum())
    recipe = run.state.recipe
    out: dict[str, Any] = {
        "recipe": None if recipe is None else recipe.to_wire(),
        "shown": [d.steps_spin.text(), d.guidance_spin.text(), d.strength_label.text(), d.live_steps_spin.text()],
    }
    submitted: list[Any] = []
    submit = d.runner.submit

    def record_submit(spec: Any) -> None:
        submitted.append(spec)
        submit(spec)

    d.runner.submit = record_submit
    try:
        out["job"] = run.generate()
    finally:
        del d.runner.submit
    (spec,) = submitted
    request = sys.modules["img2img_bridge.jobs"].build_request(spec, b"")
    out["sent"] = [request.steps, request.guidance, request.strength]
    result = next(u for u in run.updates if type(u).__name__ == "JobResult" and u.job_id == spec.job_id)
    out["used"] = [result.steps, result.guidance, result.strength]
    out["status"] = run.state.status
    d.discard_button.click()
    pump(100)
    out["layers"] = names(doc)
    return out


SCENARIOS = [
    scenario_whole_layer,
    scenario_selection,
    scenario_background,
    scenario_live,
    scenario_half_transparent,
    scenario_documents,
    scenario_variations,
    scenario_live_stroke,
    scenario_u16,
    scenario_live_bench,  # scales u8.png up: after every other scenario on it
    scenario_model_defaults,  # the settings it leaves are the ones test_settings_persist_in_kritarc reads
]


def run_all() -> None:
    results: dict[str, Any] = {}
    try:
        run = Run()
        results["connected"] = wait_until(lambda: run.state.connection.value == "online", 30)
        results["connection_text"] = run.state.connection_text
        results["binding"] = sys.modules["img2img_bridge.qt"].BINDING
        results["vendored"] = sys.modules["img2img_bridge._bridge._vendor.websockets"].__file__
        # every module loaded from our plug-in's folder, by its top-level name: ours must all be img2img_bridge.*
        ours = {name for name, module in list(sys.modules.items()) if "/pykrita/img2img_bridge/" in str(getattr(module, "__file__", ""))}
        results["our_top_level_names"] = sorted({name.split(".")[0] for name in ours})
        results["bridge_or_msgpack_modules"] = sorted(n for n in sys.modules if n.split(".")[0] in ("bridge", "msgpack"))
        websockets = sys.modules.get("websockets")
        frames = sys.modules.get("websockets.frames")
        results["top_level_websockets"] = websockets and {
            "file": websockets.__file__,
            "version": websockets.__version__,
            "apply_mask": frames and frames.apply_mask.__module__,
        }
        results["documents"] = [[d.fileName(), d.colorDepth()] for d in run.app.documents()]
        results["top_level_widgets"] = [type(w).__name__ + ":" + w.windowTitle() for w in QApplication.topLevelWidgets() if w.isVisible()]
        only = [name for name in os.environ.get("IMG2IMG_KRITA_ONLY", "").split(",") if name]
        for scenario in [s for s in SCENARIOS if not only or s.__name__ in only]:
            started = time.monotonic()
            try:
                results[scenario.__name__] = scenario(run)
            except Exception:
                results[scenario.__name__] = {"error": traceback.format_exc()}
            results[scenario.__name__]["seconds"] = round(time.monotonic() - started, 1)
            with open(RESULT + ".partial", "w") as fh:
                json.dump(results, fh, indent=1)
            if run.state.running:
                run.docker.cancel_button.click()
                wait_until(lambda: not run.state.running, 30)
        run.docker.prompt_edit.setPlainText("persisted prompt")
    except Exception:
        results["error"] = traceback.format_exc()
    app = Krita.instance()
    for doc in app.documents():
        doc.setModified(False)
    with open(RESULT + ".part", "w") as fh:
        json.dump(results, fh, indent=1)
    os.replace(RESULT + ".part", RESULT)
    app.action("file_quit").trigger()


def when_documents_open(count: int = 2, tries: int = 120) -> None:
    """Start the scenarios once Krita has opened the images on its command line (Krita 6 opens them after its window)."""
    if len(Krita.instance().documents()) >= count or tries == 0:
        run_all()
    else:
        QTimer.singleShot(500, lambda: when_documents_open(count, tries - 1))


class Scenarios(Extension):
    def setup(self) -> None:
        if RESULT:
            Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(500, when_documents_open))

    def createActions(self, window: Any) -> None:
        pass


Krita.instance().addExtension(Scenarios(Krita.instance()))
