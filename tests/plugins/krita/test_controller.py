"""The controller with a fake canvas and a fake worker: the docker's behaviour without Krita or a bridge."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from img2img_bridge import runner as r
from img2img_bridge.controller import Connection, Controller, ViewState
from img2img_bridge.jobs import JobSpec
from img2img_bridge.live import LiveScheduler, LiveState
from img2img_bridge.pixels import U8
from img2img_bridge.settings import Settings, Source
from img2img_bridge.sources import Capture, CaptureError

from bridge.editor import protocol as p
from bridge.editor.history import ResultSettings
from bridge.editor.regions import Rect

RECT = Rect(0, 0, 2, 2)


@dataclass(frozen=True)
class Place:
    document: str
    layer: str


@dataclass
class FakeCanvas:
    pixels: bytes = bytes(16)
    document: str | None = "doc"
    layer: str = "Background"
    error: str = ""
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    captures: int = 0
    also_open: tuple[str, ...] = ()  # documents open beside the active one
    applied_settings: list[ResultSettings | None] = field(default_factory=list)

    def active_document(self) -> object | None:
        return self.document

    def is_open(self, document: object) -> bool:
        return document == self.document or document in self.also_open

    def capture(self, source: Source, from_canvas: bool, document: object | None = None) -> Capture:
        self.captures += 1
        if self.error:
            raise CaptureError(self.error)
        return Capture(RECT, self.pixels, U8, None, target=Place(str(document or self.document), self.layer))

    def show_preview(self, target: object, rect: Rect, pixels: bytes) -> None:
        self.calls.append(("preview", target, rect, pixels))

    def clear_preview(self, target: object) -> None:
        self.calls.append(("clear", target))

    def apply_result(
        self, target: object, name: str, rect: Rect, pixels: bytes, *, from_preview: bool, settings: ResultSettings | None = None
    ) -> None:
        self.calls.append(("apply", target, name, rect, pixels, from_preview))
        self.applied_settings.append(settings)

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


@dataclass
class FakeRunner:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    specs: list[JobSpec] = field(default_factory=list)

    def connect(self, url: str, token: str = "") -> None:
        self.calls.append(("connect", url))

    def submit(self, spec: JobSpec) -> None:
        self.specs.append(spec)

    def cancel(self, job_id: str) -> None:
        self.calls.append(("cancel", job_id))

    def list_models(self) -> None:
        self.calls.append(("list_models",))

    def load_model(self, name: str) -> None:
        self.calls.append(("load_model", name))

    def close(self, timeout: float = 5.0) -> None:
        self.calls.append(("close",))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, settings: Settings | None = None) -> None:
        self.canvas = FakeCanvas()
        self.runner = FakeRunner()
        self.settings = settings or Settings(prompt="a fox")
        self.views: list[ViewState] = []
        self.clock = Clock()
        self.controller = Controller(self.canvas, self.runner, lambda: self.settings, self.views.append, live=LiveScheduler(self.clock))

    @property
    def state(self) -> ViewState:
        return self.controller.state

    def online(self) -> None:
        welcome = p.Welcome(
            1,
            "0.1.0",
            "cpu",
            p.ModelState("tiny", p.ModelStatus.READY),
            p.Limits(),
            (p.ModelInfo("tiny", "builtin"),),
            (),
        )
        self.controller.handle([r.Connected(welcome)])

    def result(self, job_id: str, seed: int = 9) -> r.JobResult:
        return r.JobResult(job_id, RECT, b"R" * 16, seed, b"V" * 16, (2, 2))


def test_connected_state_lists_the_models() -> None:
    h = Harness()
    h.controller.handle([r.Connecting("ws://x")])
    assert h.state.connection is Connection.CONNECTING
    h.online()
    assert h.state.connection is Connection.ONLINE
    assert h.state.models == ("tiny",) and h.state.model == "tiny"
    assert "cpu" in h.state.connection_text


def test_a_stored_model_choice_is_loaded_on_connect() -> None:
    h = Harness(Settings(model="tiny"))
    h.online()
    assert ("load_model", "tiny") not in h.runner.calls  # already loaded
    h.settings = Settings(model="other")
    h.online()
    assert ("load_model", "other") not in h.runner.calls  # the bridge does not have it
    h.controller.select_model("other")
    assert ("load_model", "other") in h.runner.calls


def test_connection_failure_is_shown() -> None:
    h = Harness()
    h.controller.handle([r.ConnectFailed("could not reach the bridge; start it with: img2img-bridge serve")])
    assert h.state.connection is Connection.OFFLINE
    assert "img2img-bridge serve" in h.state.error


def test_generate_streams_previews_and_waits_for_apply() -> None:
    h = Harness()
    h.online()
    h.controller.generate()
    assert h.state.running
    (spec,) = h.runner.specs
    assert spec.settings.prompt == "a fox" and not spec.live
    h.controller.handle([r.JobProgress(spec.job_id, 1, 2)])
    assert h.state.progress == 0.5 and h.state.status == "Generating: step 1 of 2"  # the steps that really run
    target = Place("doc", "Background")
    h.controller.handle([r.JobPreview(spec.job_id, RECT, b"1" * 16), r.JobPreview(spec.job_id, RECT, b"2" * 16)])
    assert h.canvas.calls == [("preview", target, RECT, b"2" * 16)]  # only the newest of a batch is drawn
    h.controller.handle([h.result(spec.job_id, seed=77)])
    assert not h.state.running and h.state.result_ready and h.state.seed == 77
    assert h.canvas.calls[-1] == ("preview", target, RECT, b"R" * 16)
    h.controller.apply()
    assert h.canvas.calls[-1] == ("apply", target, "a fox (seed 77)", RECT, b"R" * 16, True)
    assert not h.state.result_ready
    h.controller.apply()
    assert h.canvas.kinds().count("apply") == 1


def test_discard_removes_the_preview() -> None:
    h = Harness()
    h.online()
    h.controller.generate()
    job = h.runner.specs[0].job_id
    h.controller.handle([h.result(job)])
    h.controller.discard()
    assert h.canvas.calls[-1] == ("clear", Place("doc", "Background"))
    assert not h.state.result_ready


def test_generating_again_reuses_the_preview_layer_of_the_same_place() -> None:
    h = Harness()
    h.online()
    h.controller.generate()
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    h.controller.generate()
    assert "clear" not in h.canvas.kinds()
    h.controller.handle([h.result(h.runner.specs[1].job_id)])
    h.canvas.layer = "Other"
    h.controller.generate()
    assert h.canvas.calls[-1] == ("clear", Place("doc", "Background"))


def test_generating_from_the_canvas_removes_the_preview_first() -> None:
    h = Harness(Settings(from_canvas=True))
    h.online()
    h.controller.generate()
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    captures = h.canvas.captures
    h.controller.generate()
    assert h.canvas.kinds()[-1] == "clear" and h.canvas.captures == captures + 1


def test_cancel_sends_cancel_once_and_clears_on_cancelled() -> None:
    h = Harness()
    h.online()
    h.controller.generate()
    job = h.runner.specs[0].job_id
    h.controller.cancel()
    h.controller.cancel()
    assert h.runner.calls.count(("cancel", job)) == 1
    h.controller.handle([r.JobPreview(job, RECT, b"x" * 16)])  # late preview: not drawn
    h.controller.handle([r.JobCancelled(job)])
    assert h.canvas.kinds() == ["clear"]
    assert not h.state.running and h.state.status == "Cancelled"


def test_failures_show_the_bridges_message() -> None:
    h = Harness()
    h.online()
    h.controller.generate()
    h.controller.handle([r.JobFailed(h.runner.specs[0].job_id, "steps is 1000; it must be in [1, 100]")])
    assert h.state.error == "Steps is 1000; it must be in [1, 100]." and not h.state.running  # as a sentence


def test_capture_errors_are_shown_and_nothing_is_sent() -> None:
    h = Harness()
    h.online()
    h.canvas.error = "nothing is selected: select the part to regenerate first"
    h.controller.generate()
    assert h.runner.specs == []
    assert h.state.error.startswith("Nothing is selected")


def test_generate_connects_first_when_offline() -> None:
    h = Harness()
    h.controller.generate()
    assert h.runner.calls[0][0] == "connect" and len(h.runner.specs) == 1


def test_updates_of_unknown_jobs_are_ignored() -> None:
    h = Harness()
    h.online()
    h.controller.handle([h.result("nobody"), r.JobPreview("nobody", RECT, b"")])
    assert h.canvas.calls == [] and not h.state.result_ready


def live_harness(**settings: Any) -> Harness:
    h = Harness(Settings(prompt="live", **settings))
    h.online()
    h.controller.set_live(True)
    assert h.state.live is LiveState.IDLE
    return h


def test_live_sends_the_newest_state_as_soon_as_the_frame_is_back() -> None:
    h = live_harness()
    h.controller.tick()
    (first,) = h.runner.specs
    assert first.live and first.settings.fixed_seed  # one seed for the whole live session
    assert h.state.live is LiveState.RUNNING
    for value in (1, 2, 3):  # three edits while the job runs
        h.canvas.pixels = bytes([value]) * 16
        h.clock.now += 0.01
        h.controller.tick()
    assert len(h.runner.specs) == 1 and h.controller.capture_ms is not None
    assert h.canvas.captures == 1  # nothing can go out while the frame is in flight: no capture either
    h.clock.now += 0.01
    h.controller.handle([h.result(first.job_id)])  # no tick needed: the frame's return sends the newest state
    assert len(h.runner.specs) == 2 and h.canvas.captures == 2
    last = h.runner.specs[-1]
    assert last.capture.pixels == bytes([3]) * 16 and last.settings.seed == first.settings.seed
    assert h.state.live_stats.latency_s == pytest.approx(0.04) and h.state.live_stats.pause_s == 0.0
    h.clock.now += 0.02
    h.controller.handle([h.result(last.job_id)])
    assert len(h.runner.specs) == 2  # nothing changed since
    assert h.controller.live_rendered[-1] == h.controller.live_jobs[last.job_id]
    assert h.state.live_image == (b"V" * 16, 2, 2) and h.state.result_ready
    assert h.state.live_stats.fps == pytest.approx(50.0)


def test_slow_live_frames_wait_for_the_canvas_to_be_still() -> None:
    h = live_harness()
    h.controller.tick()
    h.canvas.pixels = b"\x01" * 16
    h.clock.now += 0.8
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    assert len(h.runner.specs) == 1 and h.state.live_stats.pause_s == pytest.approx(0.8)
    h.clock.now += 0.79
    h.controller.tick()
    assert len(h.runner.specs) == 1
    h.clock.now += 0.02
    h.controller.tick()
    assert h.runner.specs[-1].capture.pixels == b"\x01" * 16


def test_live_results_stay_off_the_canvas_unless_asked() -> None:
    h = live_harness()
    h.controller.tick()
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    assert h.canvas.calls == []
    h2 = live_harness(live_on_canvas=True)
    h2.controller.tick()
    h2.controller.handle([h2.result(h2.runner.specs[0].job_id)])
    assert h2.canvas.kinds() == ["preview"]
    h2.controller.set_live(False)
    assert h2.canvas.kinds() == ["preview", "clear"]


def test_live_on_canvas_is_ignored_when_reading_the_canvas() -> None:
    h = live_harness(live_on_canvas=True, from_canvas=True)  # the preview would feed back into the source
    h.controller.tick()
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    assert h.canvas.calls == []


def test_live_apply_adds_a_new_layer_and_live_goes_on() -> None:
    h = live_harness(live_on_canvas=True)
    h.controller.tick()
    h.controller.handle([h.result(h.runner.specs[0].job_id, seed=5)])
    h.controller.apply()
    assert h.canvas.calls[-1] == ("apply", Place("doc", "Background"), "live (seed 5)", RECT, b"R" * 16, False)
    assert h.state.live is not LiveState.OFF


def test_a_settings_change_renders_again() -> None:
    h = live_harness()
    h.controller.tick()
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    h.settings = Settings(prompt="live, at night")
    h.controller.tick()
    assert [s.settings.prompt for s in h.runner.specs] == ["live", "live, at night"]


def test_turning_live_off_cancels_the_job_in_flight_and_stops_sending() -> None:
    h = live_harness()
    h.controller.tick()
    job = h.runner.specs[0].job_id
    h.controller.set_live(False)
    assert ("cancel", job) in h.runner.calls
    assert h.state.live is LiveState.OFF
    h.controller.handle([h.result(job)])  # arrives after live was turned off: not shown
    assert h.state.live_image is None
    h.canvas.pixels = b"\x01" * 16
    h.clock.now += 5
    h.controller.tick()
    assert len(h.runner.specs) == 1


def test_live_stops_when_its_image_closes() -> None:
    h = live_harness()
    h.canvas.document = None
    h.controller.tick()
    assert h.state.live is LiveState.OFF and "closed" in h.state.status


def test_live_needs_an_open_image() -> None:
    h = Harness()
    h.canvas.document = None
    h.controller.set_live(True)
    assert h.state.live is LiveState.OFF and h.state.error == "Open an image to use live mode."


def test_live_capture_errors_are_shown_once_and_cleared() -> None:
    h = live_harness()
    h.canvas.error = "nothing is selected"
    h.controller.tick()
    h.controller.tick()
    assert [v.error for v in h.views].count("Nothing is selected.") == 1
    h.canvas.error = ""
    h.controller.tick()
    assert h.state.error == "" and len(h.runner.specs) == 1


def test_generate_is_refused_while_live() -> None:
    h = live_harness()
    h.controller.generate()
    assert h.runner.specs == []


@pytest.mark.parametrize("running", [True, False])
def test_close_stops_everything(running: bool) -> None:
    h = live_harness()
    if running:
        h.controller.tick()
    h.controller.close()
    assert h.state.live is LiveState.OFF
    assert ("close",) in h.runner.calls
    assert [c[0] for c in h.runner.calls].count("cancel") == (1 if running else 0)


TURBO = p.Recipe(steps=2, guidance=0.0, strength=0.5, live_steps=1, live_strength=0.5, resolution=512, kind="sd-turbo")
SD15 = p.Recipe(steps=30, guidance=7.5, strength=0.6, live_steps=4, live_strength=0.5, resolution=512, kind="sd15")


def recipes_online(h: Harness) -> None:
    welcome = p.Welcome(
        1,
        "0.1.0",
        "cpu",
        p.ModelState("turbo", p.ModelStatus.READY, recipe=TURBO),
        p.Limits(),
        (p.ModelInfo("turbo", "hub"), p.ModelInfo("sd15", "folder", recipe=SD15), p.ModelInfo("new", "file")),
        (),
    )
    h.controller.handle([r.Connected(welcome)])


def test_the_loaded_models_recipe_is_shown_and_follows_a_model_switch() -> None:
    h = Harness()
    recipes_online(h)
    assert h.state.recipe == TURBO
    h.controller.select_model("sd15")
    assert ("load_model", "sd15") in h.runner.calls and h.state.recipe == SD15  # from the model list, before it loads
    h.controller.handle([r.ModelChanged(p.ModelState("new", p.ModelStatus.LOADING, progress=0.4))])
    assert h.state.recipe is None and h.state.status == "Model: Loading new: 40%"  # unknown until loaded
    h.controller.handle([r.ModelChanged(p.ModelState("new", p.ModelStatus.LOADING, downloaded=20_000_000, download_size=80_000_000))])
    assert h.state.status == "Model: Downloading new: 20 MB of 80 MB"
    loaded = replace(TURBO, steps=8, kind="sdxl-lightning")
    h.controller.handle([r.ModelChanged(p.ModelState("new", p.ModelStatus.READY, recipe=loaded))])
    assert h.state.recipe == loaded and h.state.model == "new"
    h.controller.handle([r.ModelsListed((p.ModelInfo("sd15", "folder", recipe=SD15),), p.ModelState("sd15", p.ModelStatus.LOADING))])
    assert h.state.recipe == SD15 and h.state.models == ("sd15",)


def test_a_result_says_what_it_ran_with() -> None:
    h = Harness()
    recipes_online(h)
    h.controller.generate()
    (spec,) = h.runner.specs
    assert (spec.settings.steps, spec.settings.guidance, spec.settings.strength) == (None, None, None)
    h.controller.handle([replace(h.result(spec.job_id), steps=2, guidance=0.0, strength=0.5)])
    assert h.state.status == "Done (2 steps, guidance off, strength 0.50): Apply keeps it as a new layer"


def test_live_jobs_leave_steps_to_the_live_recipe_and_a_guidance_change_renders_again() -> None:
    h = live_harness()
    h.controller.tick()
    (first,) = h.runner.specs
    assert first.live and (first.settings.live_steps, first.settings.strength, first.settings.guidance) == (None, None, None)
    h.controller.handle([h.result(first.job_id)])
    h.settings = replace(h.settings, guidance=3.0)
    h.controller.tick()
    h.clock.now += 0.3
    h.controller.tick()
    assert [s.settings.guidance for s in h.runner.specs] == [None, 3.0]


def test_after_live_off_apply_is_disabled_and_applies_nothing() -> None:
    h = live_harness()
    h.controller.tick()
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    assert h.state.result_ready
    h.controller.set_live(False)
    assert not h.state.result_ready
    h.controller.apply()
    assert "apply" not in h.canvas.kinds()


def test_a_refused_generate_in_another_image_drops_the_result_of_the_first() -> None:
    h = Harness()
    h.online()
    h.controller.generate()
    h.controller.handle([h.result(h.runner.specs[0].job_id)])
    assert h.state.result_ready
    h.canvas.document, h.canvas.error = "cmyk", "CMYK images are not supported"
    h.controller.document_changed()
    h.controller.generate()
    assert not h.state.result_ready and h.state.error.startswith("CMYK")
    h.controller.apply()
    assert "apply" not in h.canvas.kinds()
    h.canvas.document = "doc"
    h.controller.document_changed()
    assert not h.state.result_ready  # dropped, not applied later either


def test_seed_status_and_result_belong_to_their_document() -> None:
    h = Harness()
    h.online()
    h.controller.document_changed()
    h.controller.generate()
    h.controller.handle([h.result(h.runner.specs[0].job_id, seed=77)])
    assert (h.state.seed, h.state.result_ready, h.state.progress) == (77, True, None)  # the progress bar is reset
    first = h.state.status
    h.canvas.document, h.canvas.also_open = "other", ("doc",)
    h.controller.document_changed()
    assert (h.state.seed, h.state.result_ready, h.state.status, h.state.live_image) == (None, False, "", None)
    h.controller.apply()
    assert "apply" not in h.canvas.kinds()  # the result shown nowhere here is not applied here
    h.canvas.document, h.canvas.also_open = "doc", ("other",)
    h.controller.document_changed()
    assert (h.state.seed, h.state.result_ready, h.state.status) == (77, True, first)
    h.controller.apply()
    assert h.canvas.kinds()[-1] == "apply" and h.canvas.calls[-1][1] == Place("doc", "Background")


def test_a_result_that_arrives_while_another_image_is_shown_waits_for_its_own() -> None:
    h = Harness()
    h.online()
    h.controller.document_changed()
    h.controller.generate()
    h.canvas.document, h.canvas.also_open = "other", ("doc",)
    h.controller.document_changed()
    h.controller.handle([h.result(h.runner.specs[0].job_id, seed=5)])
    assert (h.state.seed, h.state.result_ready) == (None, False)
    h.canvas.document, h.canvas.also_open = "doc", ("other",)
    h.controller.document_changed()
    assert (h.state.seed, h.state.result_ready) == (5, True)


# --- variations and the history strip -------------------------------------------------------


def variation(job_id: str, index: int, count: int, seed: int) -> r.JobResult:
    pixels = bytes([index]) * 16
    return r.JobResult(job_id, RECT, pixels, seed, pixels, (2, 2), 4, 0.0, 0.5, index, count, (bytes([index]) * 4, 1, 1))


def test_variations_stream_into_the_strip_and_any_one_is_picked_and_applied_exactly() -> None:
    h = Harness(Settings(prompt="a fox", count=3))
    h.online()
    h.controller.generate()
    (spec,) = h.runner.specs
    job, target = spec.job_id, Place("doc", "Background")
    assert [item.done for item in h.state.strip[0]] == [False, False, False]
    previews = [r.JobPreview(job, RECT, bytes([10 + i]) * 16, i, (bytes([10 + i]) * 4, 1, 1)) for i in range(3)]
    h.controller.handle(previews)
    assert [item.thumbnail for item in h.state.strip[0]] == [(bytes([10 + i]) * 4, 1, 1) for i in range(3)]
    assert h.canvas.calls == [("preview", target, RECT, bytes([10]) * 16)], "the canvas follows the first variation"
    h.controller.handle([variation(job, 0, 3, 40), variation(job, 1, 3, 41)])
    assert h.state.running and h.state.picked == (job, 0) and h.state.seed == 40
    h.controller.handle([variation(job, 2, 3, 42)])
    assert not h.state.running and "pick another" in h.state.status
    strip = h.state.strip
    assert [[item.key for item in items] for items in strip] == [[(job, 0), (job, 1), (job, 2)]]
    assert all(item.done for item in strip[0]) and "seed 42, 4 steps, strength 0.50" in strip[0][2].tooltip
    h.controller.pick(job, 2)
    assert h.canvas.calls[-1] == ("preview", target, RECT, bytes([2]) * 16)
    assert (h.state.picked, h.state.seed, h.state.result_ready) == ((job, 2), 42, True)
    h.controller.apply()
    assert h.canvas.calls[-1] == ("apply", target, "a fox (seed 42)", RECT, bytes([2]) * 16, True)
    assert h.canvas.applied_settings[-1] == ResultSettings("a fox", "", 0.5, 4, 0.0, 42, "tiny")
    settings = h.controller.settings_of(job, 1)
    assert settings is not None and settings.seed == 41


def test_the_history_belongs_to_its_document_and_survives_a_switch() -> None:
    h = Harness(Settings(prompt="a fox", count=2))
    h.online()
    h.controller.document_changed()
    h.controller.generate()
    job = h.runner.specs[0].job_id
    h.controller.handle([variation(job, 0, 2, 5), variation(job, 1, 2, 6)])
    h.canvas.document, h.canvas.also_open = "other", ("doc",)
    h.controller.document_changed()
    assert h.state.strip == () and h.state.picked is None
    h.controller.pick(job, 1)
    assert h.state.picked is None, "a result of another document is not picked here"
    h.canvas.document, h.canvas.also_open = "doc", ("other",)
    h.controller.document_changed()
    assert [item.key for item in h.controller.state.strip[0]] == [(job, 0), (job, 1)] and h.state.picked == (job, 0)
    h.canvas.also_open = ()
    h.canvas.document = "third"
    h.controller.document_changed()
    assert len(h.controller.history) == 0, "a closed document's history is let go"


def test_a_new_job_goes_first_in_the_strip_and_one_job_is_one_group() -> None:
    h = Harness(Settings(prompt="a fox", count=1))
    h.online()
    for seed in (1, 2):
        h.controller.generate()
        h.controller.handle([variation(h.runner.specs[-1].job_id, 0, 1, seed)])
    first, second = (spec.job_id for spec in h.runner.specs)
    assert [[item.key for item in items] for items in h.state.strip] == [[(second, 0)], [(first, 0)]]
