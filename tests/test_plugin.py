from __future__ import annotations

import pytest

from bridge.editor import plugin
from bridge.editor import protocol as p
from bridge.editor.client import START_HINT, ClientError
from bridge.editor.regions import Rect

RECIPE = p.Recipe(steps=60, guidance=7.5, strength=0.5, live_steps=4, live_strength=0.4, resolution=512)


def image(width: int, height: int) -> bytes:
    return bytes(v for y in range(height) for x in range(width) for v in (x, y, 100, 255))


def pixel(rgba: bytes, width: int, x: int, y: int) -> tuple[int, ...]:
    start = (y * width + x) * 4
    return tuple(rgba[start : start + 4])


def request(mask: bytes | None = None, **settings: object) -> p.Generate:
    values: dict = dict(
        prompt="a fox", negative_prompt="blur", strength=0.3, steps=20, guidance=5.0, seed=42, match_seams=True, preview_every=2
    )
    return plugin.generate_request("job-1", bytes(range(24)), Rect(5, 6, 3, 2), mask, **{**values, **settings})


def test_the_request_carries_pixels_settings_and_small_previews_and_passes_validation() -> None:
    generate = request(bytes([0, 255, 128, 0, 0, 1]))
    assert (generate.image.width, generate.image.height, generate.image.data) == (3, 2, bytes(range(24)))
    assert generate.mask is not None and generate.mask.data == bytes([0, 255, 128, 0, 0, 1])
    assert (generate.prompt, generate.negative_prompt, generate.strength, generate.steps, generate.guidance, generate.seed) == (
        "a fox",
        "blur",
        0.3,
        20,
        5.0,
        42,
    )
    assert generate.preview == p.PreviewSettings(every=2, max_size=plugin.PREVIEW_SIZE)
    assert generate.match_seams is True and generate.live is False
    assert p.decode_client_message(p.encode(generate)) == generate


def test_seam_matching_is_only_asked_for_a_selection() -> None:
    assert request(None).match_seams is None
    assert request(bytes(6), match_seams=False).match_seams is False


def test_about_ten_previews_of_the_steps_that_run() -> None:
    assert plugin.preview_every(20, 0.2, None) == 1
    assert plugin.preview_every(50, 0.4, None) == 2
    assert plugin.preview_every(100, 1.0, None) == 10
    assert plugin.preview_every(None, None, RECIPE) == 3  # the recipe's 60 steps × 0.5
    assert plugin.preview_every(None, 0.5, None) == 1  # unknown: every step


def test_layer_name_holds_prompt_and_seed() -> None:
    assert plugin.result_layer_name("a red  fox\nin snow", 7) == "a red fox in snow (seed 7)"
    assert plugin.result_layer_name("", 7) == "Img2Img (seed 7)"
    long = plugin.result_layer_name("word " * 30, 1)
    assert long.endswith("\u2026 (seed 1)") and len(long) < 60


def test_scale_nearest_doubles_each_pixel() -> None:
    big = plugin.scale_nearest(image(2, 2), 2, 2, 4, 4)
    assert len(big) == 4 * 4 * 4
    assert [pixel(big, 4, x, 0)[0] for x in range(4)] == [0, 0, 1, 1]
    assert [pixel(big, 4, 0, y)[1] for y in range(4)] == [0, 0, 1, 1]


def test_scale_nearest_to_an_odd_size_keeps_the_corners() -> None:
    big = plugin.scale_nearest(image(3, 2), 3, 2, 7, 5)
    assert len(big) == 7 * 5 * 4
    assert pixel(big, 7, 0, 0) == (0, 0, 100, 255)
    assert pixel(big, 7, 6, 4) == (2, 1, 100, 255)


def test_scale_nearest_same_size_is_identity_and_a_wrong_buffer_is_refused() -> None:
    data = image(3, 3)
    assert plugin.scale_nearest(data, 3, 3, 3, 3) is data
    with pytest.raises(ValueError):
        plugin.scale_nearest(b"\0" * 5, 2, 2, 4, 4)


def test_alpha_from_mask_replaces_only_alpha() -> None:
    assert plugin.alpha_from_mask(bytes([1, 2, 3, 255, 4, 5, 6, 255]), bytes([0, 128])) == bytes([1, 2, 3, 0, 4, 5, 6, 128])
    with pytest.raises(ValueError):
        plugin.alpha_from_mask(b"\0" * 8, b"\0" * 3)


def test_a_preview_is_blown_up_to_its_region_and_masked_by_the_selection() -> None:
    preview = p.Preview(job_id="j", index=0, step=1, steps=2, image=p.Image(1, 1, bytes([9, 8, 7, 255])), x=0, y=0, width=2, height=1)
    assert plugin.preview_pixels(preview, None) == bytes([9, 8, 7, 255] * 2)
    assert plugin.preview_pixels(preview, bytes([0, 200])) == bytes([9, 8, 7, 0, 9, 8, 7, 200])


def test_error_sentences_say_what_to_do_in_the_hosts_words() -> None:
    no_model = p.Error(code=p.ErrorCode.NO_MODEL, message="no model")
    text = plugin.describe_error(no_model, choose_model="in the docker", run_again="press Generate again")
    assert text.startswith("The bridge has no model loaded: choose a model in the docker")
    busy = p.Error(code=p.ErrorCode.QUEUE_FULL, message="3 jobs queued.")
    assert plugin.describe_error(busy, choose_model="x", run_again="press Generate again") == (
        "The bridge is busy (3 jobs queued): wait for its other jobs, then press Generate again."
    )
    refused = plugin.describe_client_error(ClientError(p.ErrorCode.CONNECTION, "could not connect to the bridge."))
    assert refused == f"Could not connect to the bridge; {START_HINT}."
    assert plugin.describe_disconnect(f"gone; {START_HINT}") == f"Lost the bridge before the job ended: gone; {START_HINT}."
