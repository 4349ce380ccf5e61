from __future__ import annotations

from dataclasses import replace

from img2img_gimp.request import build_request
from img2img_gimp.settings import JobSettings
from img2img_gimp.source import Source

from bridge.editor import protocol as p
from bridge.editor.regions import Rect

RECIPE = p.Recipe(steps=60, guidance=7.5, strength=0.5, live_steps=4, live_strength=0.4, resolution=512)
SETTINGS = JobSettings(
    prompt="a fox", negative_prompt="blur", strength=0.3, steps=20, guidance=5.0, seed=42, model="", url="ws://127.0.0.1:1/ws"
)


def test_request_carries_the_pixels_and_settings_and_passes_validation() -> None:
    source = Source(Rect(5, 6, 3, 2), bytes(range(24)), bytes([0, 255, 128, 0, 0, 1]))
    request = build_request(SETTINGS, source, "job-1")
    assert (request.image.width, request.image.height, request.image.data) == (3, 2, source.rgba)
    assert request.mask is not None and request.mask.data == source.mask
    assert (request.prompt, request.negative_prompt, request.strength, request.steps, request.guidance, request.seed) == (
        "a fox",
        "blur",
        0.3,
        20,
        5.0,
        42,
    )
    assert request.count == 1
    assert build_request(replace(SETTINGS, count=4), source, "job-1").count == 4
    request.validate(p.Limits())
    assert p.decode_client_message(p.encode(request)) == request


def test_request_without_mask() -> None:
    request = build_request(SETTINGS, Source(Rect(0, 0, 1, 1), bytes(4), None), "job-2")
    assert request.mask is None and request.match_seams is None


def test_seam_matching_is_asked_for_selections_as_the_option_says() -> None:
    source = Source(Rect(0, 0, 2, 1), bytes(8), bytes([0, 255]))
    assert build_request(SETTINGS, source, "job-4").match_seams is True
    assert build_request(replace(SETTINGS, match_seams=False), source, "job-5").match_seams is False


def test_auto_settings_are_left_unset_for_the_models_recipe() -> None:
    auto = replace(SETTINGS, steps=None, guidance=None, strength=None)
    request = build_request(auto, Source(Rect(0, 0, 1, 1), bytes(4), None), "job-3", RECIPE)
    assert (request.steps, request.guidance, request.strength) == (None, None, None)
    request.validate(p.Limits())
    assert p.decode_client_message(p.encode(request)) == request


def test_previews_come_about_ten_times_a_job() -> None:
    assert build_request(replace(SETTINGS, steps=50, strength=0.4), Source(Rect(0, 0, 1, 1), bytes(4), None), "j").preview.every == 2
