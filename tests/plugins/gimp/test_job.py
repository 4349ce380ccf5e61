from __future__ import annotations

from dataclasses import replace

import pytest
from img2img_gimp.job import ImageJob, JobState
from img2img_gimp.request import build_request
from img2img_gimp.settings import JobSettings
from img2img_gimp.source import Source

from bridge.editor import protocol as p
from bridge.editor.client import Disconnected
from bridge.editor.history import ResultSettings
from bridge.editor.regions import Rect

from .fakes import FakeBridge, FakeCanvas, model_state, welcome

SETTINGS = JobSettings(prompt="a fox", negative_prompt="", strength=0.5, steps=4, guidance=None, seed=9, model="", url="ws://x/ws")
ORIGIN = Rect(10, 20, 8, 6)  # the sent area, in image coordinates
BOX = Rect(2, 1, 4, 4)  # where previews and the result land inside it


def make_job(mask: bytes | None = None) -> tuple[ImageJob, FakeCanvas, FakeBridge, list[str]]:
    rgba = bytes([50, 60, 70, 255]) * (ORIGIN.width * ORIGIN.height)
    source = Source(ORIGIN, rgba, mask)
    canvas, bridge, ended = FakeCanvas(), FakeBridge(), []
    job = ImageJob(build_request(SETTINGS, source, "job"), source, canvas, bridge, on_end=lambda: ended.append("end"))
    return job, canvas, bridge, ended


def preview(step: int, rect: Rect = BOX, size: int = 2) -> p.Preview:
    image = p.Image(size, size, bytes([step, 0, 0, 255]) * (size * size))
    return p.Preview("job", 0, step, 4, image, rect.x, rect.y, rect.width, rect.height)


def result(rect: Rect = BOX, seed: int = 9) -> p.Result:
    image = p.Image(rect.width, rect.height, bytes([200, 100, 0, 255]) * (rect.width * rect.height))
    return p.Result("job", 0, 1, image, rect.x, rect.y, seed)


def test_a_ready_bridge_gets_the_request_at_once() -> None:
    job, _canvas, bridge, _ = make_job()
    job.start(welcome())
    assert job.state is JobState.SUBMITTED
    assert [type(m) for m in bridge.sent] == [p.Generate]


def test_previews_then_result_make_one_result_layer_in_image_coordinates() -> None:
    job, canvas, _bridge, ended = make_job()
    job.start(welcome())
    for event in (p.Queued("job", 0), p.Progress("job", 0, 1, 4), preview(1), preview(2), preview(4), result()):
        job.handle(event)
    assert canvas.ops == ["freeze", "preview", "preview", "preview", "remove", "thaw", "result"]
    rect, rgba, name = canvas.results[0]
    assert rect == Rect(12, 21, 4, 4)
    assert rgba[:4] == bytes([200, 100, 0, 255])
    assert name == "a fox (seed 9)"
    assert (job.state, job.seed, job.result_rect, job.previews) == (JobState.FINISHED, 9, rect, 3)
    assert ended == ["end"]


def test_a_preview_is_scaled_up_to_its_rectangle() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(preview(3, Rect(0, 0, 8, 6), size=2))
    assert canvas.preview is not None
    rect, rgba = canvas.preview
    assert rect == ORIGIN
    assert len(rgba) == 8 * 6 * 4 and rgba[:4] == bytes([3, 0, 0, 255])


def test_with_a_mask_previews_show_only_the_selection_and_the_result_goes_only_where_it_is_selected() -> None:
    mask = bytearray(ORIGIN.width * ORIGIN.height)
    mask[1 * ORIGIN.width + 2] = 255  # area pixel (2, 1): the result's top-left
    mask[2 * ORIGIN.width + 3] = 100  # feathered
    job, canvas, _, _ = make_job(bytes(mask))
    job.start(welcome())
    job.handle(preview(1))
    assert canvas.preview is not None
    alphas = canvas.preview[1][3::4]
    assert alphas[0] == 255 and alphas[4 + 1] == 100 and alphas.count(0) == 14
    job.handle(result())
    rgba, written = canvas.results[0][1], canvas.result_masks[0]
    assert rgba[0:4] == bytes([200, 100, 0, 255])
    assert written is not None and len(written) == BOX.width * BOX.height
    assert (written[0], written[4 + 1], written.count(0)) == (255, 100, 14)  # the selection over the result's area


def test_a_result_without_previews_never_touches_history() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(result())
    assert canvas.ops == ["result"]


def test_events_of_other_jobs_are_ignored() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(p.Result("other", 0, 1, p.Image(1, 1, bytes(4)), 0, 0, 1))
    job.handle(p.Cancelled("other"))
    assert job.state is JobState.SUBMITTED and canvas.ops == []


def test_an_error_for_the_job_removes_the_preview_and_reports() -> None:
    job, canvas, bridge, ended = make_job()
    job.start(welcome())
    job.handle(preview(1))
    job.handle(p.Error(code=p.ErrorCode.OUT_OF_MEMORY, message="CUDA out of memory", job_id="job"))
    assert canvas.ops == ["freeze", "preview", "remove", "thaw"]
    assert job.state is JobState.FAILED and job.error is not None and "smaller region" in job.error
    assert not any(isinstance(m, p.Cancel) for m in bridge.sent)
    assert ended == ["end"]


def test_a_disconnect_ends_the_job_cleanly() -> None:
    job, canvas, _, ended = make_job()
    job.start(welcome())
    job.handle(preview(1))
    job.handle(Disconnected("lost the connection to the bridge (EOF)"))
    assert canvas.ops[-2:] == ["remove", "thaw"] and not canvas.frozen
    assert job.state is JobState.FAILED and "Lost the bridge" in (job.error or "")
    job.handle(result())
    assert canvas.results == [] and ended == ["end"]


def test_cancelled_by_the_bridge() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(preview(1))
    job.handle(p.Cancelled("job"))
    assert job.state is JobState.CANCELLED and canvas.ops[-2:] == ["remove", "thaw"]


def test_no_model_fails_before_sending_anything() -> None:
    job, _, bridge, ended = make_job()
    job.start(welcome(model_state(None, p.ModelStatus.NO_MODEL)))
    assert job.state is JobState.FAILED and bridge.sent == []
    assert "no model loaded" in (job.error or "") and "--model" in (job.error or "")
    assert ended == ["end"]


def test_a_failed_model_is_reported_with_its_reason() -> None:
    job, _, _, _ = make_job()
    job.start(welcome(model_state("big", p.ModelStatus.ERROR, "file not found")))
    assert job.state is JobState.FAILED and "file not found" in (job.error or "")


def test_another_model_is_loaded_first_then_the_job_is_sent() -> None:
    job, canvas, bridge, _ = make_job()
    job.start(welcome(), model="other")
    assert job.state is JobState.LOADING_MODEL and bridge.sent == [p.LoadModel("other")]
    job.handle(p.ModelStatusEvent(p.ModelState("other", p.ModelStatus.LOADING, progress=0.5)))
    assert canvas.progress[-1][0] == 0.5
    job.handle(p.ModelStatusEvent(model_state("tiny")))  # someone else's model: keep waiting
    assert job.state is JobState.LOADING_MODEL
    job.handle(p.ModelStatusEvent(model_state("other")))
    assert job.state is JobState.SUBMITTED and isinstance(bridge.sent[-1], p.Generate)


def test_the_loaded_model_is_not_loaded_again() -> None:
    job, _, bridge, _ = make_job()
    job.start(welcome(), model="tiny")
    assert [type(m) for m in bridge.sent] == [p.Generate]


def test_a_model_that_fails_to_load_ends_the_job() -> None:
    job, _, _, _ = make_job()
    job.start(welcome(), model="other")
    job.handle(p.Error(code=p.ErrorCode.UNKNOWN_MODEL, message="no model named 'other'"))
    assert job.state is JobState.FAILED and "Model list" in (job.error or "")


def test_a_bridge_that_is_loading_is_waited_for() -> None:
    job, _, bridge, _ = make_job()
    job.start(welcome(model_state("tiny", p.ModelStatus.LOADING)))
    assert job.state is JobState.LOADING_MODEL and bridge.sent == []
    job.handle(p.ModelStatusEvent(model_state("tiny")))
    assert job.state is JobState.SUBMITTED


def test_a_download_shows_its_bytes() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome(), model="other")
    state = p.ModelState("other", p.ModelStatus.LOADING, downloaded=1_200_000_000, download_size=2_400_000_000)
    job.handle(p.ModelStatusEvent(state))
    assert canvas.progress[-1] == (0.5, "Img2Img: Downloading other: 1.2 GB of 2.4 GB\u2026")


def test_too_large_an_area_is_refused_before_sending() -> None:
    job, _, bridge, _ = make_job()
    job.start(welcome(limits=p.Limits(max_pixels=16, max_side=4)))
    assert job.state is JobState.FAILED and bridge.sent == [] and "8x6" in (job.error or "")


def test_a_broken_connection_when_sending_fails_the_job() -> None:
    job, _, bridge, _ = make_job()
    bridge.broken = True
    job.start(welcome())
    assert job.state is JobState.FAILED and "closed" in (job.error or "")


def test_a_preview_gimp_refuses_cancels_the_job_and_thaws() -> None:
    job, canvas, bridge, _ = make_job()
    canvas.fail_on = "preview"
    job.start(welcome())
    job.handle(preview(1))
    assert job.state is JobState.FAILED and "GIMP could not show the preview" in (job.error or "")
    assert isinstance(bridge.sent[-1], p.Cancel) and not canvas.frozen


def test_a_result_gimp_refuses_is_reported() -> None:
    job, canvas, _, _ = make_job()
    canvas.fail_on = "result"
    job.start(welcome())
    job.handle(result())
    assert job.state is JobState.FAILED and "result layer" in (job.error or "")


def test_a_result_outside_the_sent_area_is_refused() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(result(Rect(6, 4, 4, 4)))
    assert job.state is JobState.FAILED and canvas.results == []


def test_a_preview_outside_the_sent_area_is_skipped() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(preview(1, Rect(6, 4, 4, 4)))
    assert canvas.ops == [] and not job.ended


def test_a_preview_rectangle_change_is_passed_on() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(preview(1, Rect(0, 0, 4, 4)))
    job.handle(preview(2, Rect(0, 0, 8, 6)))
    assert canvas.preview is not None and canvas.preview[0] == ORIGIN
    assert canvas.ops == ["freeze", "preview", "preview"]


def test_abort_cancels_on_the_bridge() -> None:
    job, canvas, bridge, _ = make_job()
    job.start(welcome())
    job.handle(preview(1))
    job.abort("stopped")
    assert job.error == "stopped" and isinstance(bridge.sent[-1], p.Cancel) and not canvas.frozen


def test_start_twice_is_a_bug() -> None:
    job, _, _, _ = make_job()
    job.start(welcome())
    with pytest.raises(RuntimeError, match="already started"):
        job.start(welcome())


def test_progress_follows_the_steps() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(p.Progress("job", 0, 2, 4))
    assert canvas.progress[-1] == (0.5, "Img2Img: step 2 of 4")


def variation(index: int, count: int, seed: int, rect: Rect = BOX) -> p.Result:
    image = p.Image(rect.width, rect.height, bytes([index * 40, 100, 0, 255]) * (rect.width * rect.height))
    return p.Result("job", index, count, image, rect.x, rect.y, seed, steps=4, guidance=0.0, strength=0.5)


def test_variations_go_in_together_as_one_group_after_the_last_with_their_settings() -> None:
    job, canvas, _bridge, ended = make_job()
    job.start(welcome())
    for event in (preview(1), variation(0, 3, 9), replace(preview(2), index=1), variation(1, 3, 10)):
        job.handle(event)
    assert canvas.results == [] and canvas.preview is not None, "nothing is added before the last variation"
    job.handle(variation(2, 3, 11))
    assert canvas.ops == ["freeze", "preview", "preview", "remove", "thaw", "result"], "one add: one undo step"
    assert canvas.groups == ["a fox (3 variations)"]
    assert [name for _, _, name in canvas.results] == ["a fox (seed 9)", "a fox (seed 10)", "a fox (seed 11)"]
    assert [rgba[0] for _, rgba, _ in canvas.results] == [0, 40, 80]
    settings = [ResultSettings.from_text(text) for text in canvas.result_settings]
    assert [s.seed for s in settings] == [9, 10, 11]
    assert settings[0] == ResultSettings("a fox", "", 0.5, 4, 0.0, 9, "tiny")
    assert (job.state, job.seed, job.seeds, ended) == (JobState.FINISHED, 9, [9, 10, 11], ["end"])


def test_variations_cut_short_by_an_error_add_nothing() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    job.handle(variation(0, 2, 9))
    job.handle(p.Error(code=p.ErrorCode.OUT_OF_MEMORY, message="CUDA out of memory", job_id="job"))
    assert canvas.results == [] and job.state is JobState.FAILED


def test_the_preview_layer_follows_the_first_variation_still_being_made() -> None:
    job, canvas, _, _ = make_job()
    job.start(welcome())
    first, second = preview(1), replace(preview(2), index=1)
    job.handle(first)
    job.handle(second)
    assert canvas.preview is not None and canvas.preview[1][:4] == bytes([1, 0, 0, 255])
    job.handle(variation(0, 2, 9))
    job.handle(replace(preview(3), index=1))
    assert canvas.preview is not None and canvas.preview[1][:4] == bytes([3, 0, 0, 255])
