"""The runner against a real bridge (tiny model) on loopback: real client, real threads, a fake canvas."""

from __future__ import annotations

import socket
import threading

import pytest
from img2img_gimp.errors import PluginError
from img2img_gimp.job import JobState
from img2img_gimp.runner import run_job
from img2img_gimp.settings import JobSettings
from img2img_gimp.source import Source

from bridge.editor.client import START_HINT, BridgeClient
from bridge.editor.regions import Rect, crop

from .fakes import FakeCanvas, QueueLoop

AREA = Rect(30, 40, 64, 48)  # the sent area, in image coordinates
RGBA = bytes([90, 140, 200, 255]) * (AREA.width * AREA.height)


def settings(url: str, **changes: object) -> JobSettings:
    values: dict[str, object] = dict(prompt="a fox", negative_prompt="", strength=1.0, steps=4, guidance=None, seed=11, model="", url=url)
    values.update(changes)
    return JobSettings(**values)  # type: ignore[arg-type]


def test_whole_area_job_streams_previews_then_adds_one_layer(bridge_url: str) -> None:
    canvas, loop = FakeCanvas(), QueueLoop()
    job = run_job(settings(bridge_url), Source(AREA, RGBA, None), canvas, loop)
    assert job.state is JobState.FINISHED, job.error
    assert job.seed == 11 and job.previews >= 1
    assert canvas.ops[0] == "freeze" and canvas.ops[-3:] == ["remove", "thaw", "result"]
    rect, rgba, name = canvas.results[0]
    assert rect == AREA and len(rgba) == AREA.width * AREA.height * 4
    assert rgba != RGBA  # the tiny model's output is noise, not the input
    assert name == "a fox (seed 11)"
    assert loop.ran_on == {threading.current_thread().name}
    assert threading.current_thread().name not in loop.posted_from  # events came from the client's thread


def test_masked_job_returns_the_mask_box_and_nothing_outside_the_mask(bridge_url: str) -> None:
    mask = bytearray(AREA.width * AREA.height)
    for y in range(10, 30):
        for x in range(20, 44):
            mask[y * AREA.width + x] = 255 if 12 <= y < 28 else 80
    canvas = FakeCanvas()
    job = run_job(settings(bridge_url), Source(AREA, RGBA, bytes(mask)), canvas, QueueLoop())
    assert job.state is JobState.FINISHED, job.error
    rect, rgba, _ = canvas.results[0]
    assert rect == Rect(AREA.x + 20, AREA.y + 10, 24, 20)
    alphas = rgba[3::4]
    assert alphas.count(0) == 0  # every pixel of the box is selected here
    assert rgba != RGBA[: len(rgba)]


def test_a_masked_job_writes_its_result_exactly_where_the_selection_is(bridge_url: str) -> None:
    mask = bytearray(AREA.width * AREA.height)
    for y in range(8, 24):  # a diamond: its box has unselected corners
        for x in range(8, 24):
            if abs(x - 15.5) + abs(y - 15.5) < 8:
                mask[y * AREA.width + x] = 255
    canvas = FakeCanvas()
    job = run_job(settings(bridge_url), Source(AREA, RGBA, bytes(mask)), canvas, QueueLoop())
    assert job.state is JobState.FINISHED, job.error
    rect, written = canvas.results[0][0], canvas.result_masks[0]
    local = Rect(rect.x - AREA.x, rect.y - AREA.y, rect.width, rect.height)
    assert written == crop(bytes(mask), AREA.width, local, 1)


def test_an_unreachable_bridge_is_a_plugin_error_with_advice() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
        with pytest.raises(PluginError) as info:
            run_job(settings(url), Source(AREA, RGBA, None), FakeCanvas(), QueueLoop())
    assert START_HINT in info.value.message and url in info.value.message


def test_an_unknown_model_fails_the_job_with_a_message(bridge_url: str) -> None:
    canvas = FakeCanvas()
    job = run_job(settings(bridge_url, model="no-such-model"), Source(AREA, RGBA, None), canvas, QueueLoop())
    assert job.state is JobState.FAILED
    assert job.error and "no-such-model" in job.error
    assert canvas.results == []


def test_a_job_left_at_auto_sends_no_model_settings_and_gets_the_models_recipe(bridge_url: str) -> None:
    client = BridgeClient(bridge_url, name="test-recipe")
    recipe = client.connect().model.recipe
    client.close()
    assert recipe is not None
    job = run_job(settings(bridge_url, steps=None, guidance=None, strength=None), Source(AREA, RGBA, None), FakeCanvas(), QueueLoop())
    assert job.state is JobState.FINISHED, job.error
    assert (job.request.steps, job.request.guidance, job.request.strength) == (None, None, None)
    assert job.used == recipe.settings(live=False)


def test_a_value_the_artist_set_is_sent_and_runs(bridge_url: str) -> None:
    job = run_job(settings(bridge_url, steps=3, guidance=2.5, strength=0.9), Source(AREA, RGBA, None), FakeCanvas(), QueueLoop())
    assert job.state is JobState.FINISHED, job.error
    assert (job.request.steps, job.request.guidance, job.request.strength) == (3, 2.5, 0.9)
    assert job.used == (3, 2.5, 0.9)
