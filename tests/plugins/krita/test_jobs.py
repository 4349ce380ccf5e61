from __future__ import annotations

from img2img_bridge.jobs import JobSpec, build_request
from img2img_bridge.pixels import U8
from img2img_bridge.settings import Settings
from img2img_bridge.sources import Capture

from bridge.editor import protocol as p
from bridge.editor.plugin import PREVIEW_SIZE
from bridge.editor.regions import Rect


def capture(mask: bytes | None = None) -> Capture:
    return Capture(Rect(10, 20, 2, 1), bytes(8), U8, mask)


def test_request_carries_the_settings_and_the_converted_pixels() -> None:
    settings = Settings(prompt="fox", negative_prompt="blur", strength=0.3, steps=9, guidance=4.5, fixed_seed=True, seed=5)
    spec = JobSpec.new(capture(), settings)
    request = build_request(spec, bytes(range(8)))
    assert request.job_id == spec.job_id
    assert (request.image.width, request.image.height, request.image.data) == (2, 1, bytes(range(8)))
    assert (request.prompt, request.negative_prompt, request.strength, request.steps, request.guidance, request.seed) == (
        "fox",
        "blur",
        0.3,
        9,
        4.5,
        5,
    )
    assert request.mask is None
    assert request.preview.every == 1 and request.preview.max_size == PREVIEW_SIZE
    assert request.live is False
    request.validate(p.Limits())
    assert p.decode_client_message(p.encode(request)) == request


def test_selection_jobs_send_their_mask() -> None:
    request = build_request(JobSpec.new(capture(bytes([0, 255])), Settings()), bytes(8))
    assert request.mask == p.Mask(2, 1, bytes([0, 255]))
    assert request.seed is None
    assert request.match_seams is True  # on by default for selection and background jobs


def test_seam_matching_follows_the_setting_and_is_not_sent_for_a_whole_layer() -> None:
    off = Settings(match_seams=False)
    assert build_request(JobSpec.new(capture(bytes([0, 255])), off), bytes(8)).match_seams is False
    assert build_request(JobSpec.new(capture(), Settings()), bytes(8)).match_seams is None


def test_default_settings_leave_steps_guidance_and_strength_to_the_models_recipe() -> None:
    for live in (False, True):
        request = build_request(JobSpec.new(capture(), Settings(), live=live), bytes(8))
        assert (request.steps, request.guidance, request.strength) == (None, None, None)
        request.validate(p.Limits())
        assert p.decode_client_message(p.encode(request)) == request


def test_live_jobs_use_live_steps_and_skip_previews() -> None:
    request = build_request(JobSpec.new(capture(), Settings(steps=30, live_steps=4), live=True), bytes(8))
    assert (request.live, request.steps, request.preview.every) == (True, 4, 0)


def test_live_jobs_leave_steps_to_the_live_recipe_unless_live_steps_are_set() -> None:
    request = build_request(JobSpec.new(capture(), Settings(steps=30, strength=0.8), live=True), bytes(8))
    assert (request.steps, request.strength) == (None, 0.8)  # the artist's strength holds in live mode too


def test_each_job_gets_its_own_id() -> None:
    assert JobSpec.new(capture(), Settings()).job_id != JobSpec.new(capture(), Settings()).job_id
