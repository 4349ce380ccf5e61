from __future__ import annotations

import pytest
from img2img_gimp.errors import describe_client_error, describe_disconnect, describe_error

from bridge.editor import protocol as p
from bridge.editor.client import START_HINT, ClientError


@pytest.mark.parametrize("code", list(p.ErrorCode))
def test_every_error_code_gives_one_sentence(code: p.ErrorCode) -> None:
    text = describe_error(p.Error(code=code, message="detail from the bridge.", job_id="j"))
    assert text.endswith(".") and not text.endswith("..")
    assert "\n" not in text and "Traceback" not in text


def test_no_model_says_how_to_load_one() -> None:
    text = describe_error(p.Error(code=p.ErrorCode.NO_MODEL, message="no model"))
    assert "no model loaded" in text
    assert "img2img-bridge serve --model" in text


def test_out_of_memory_suggests_a_smaller_region() -> None:
    text = describe_error(p.Error(code=p.ErrorCode.OUT_OF_MEMORY, message="CUDA out of memory"))
    assert "CUDA out of memory" in text and "smaller region" in text


def test_unknown_codes_keep_the_bridge_message() -> None:
    assert "the step exploded" in describe_error(p.Error(code=p.ErrorCode.INTERNAL, message="the step exploded"))


def test_connection_failures_say_how_to_start_the_bridge() -> None:
    text = describe_client_error(ClientError(p.ErrorCode.CONNECTION, "could not reach the bridge at ws://x/ws"))
    assert text.startswith("Could not reach the bridge")
    assert START_HINT in text


def test_the_start_hint_is_not_repeated() -> None:
    message = f"could not reach the bridge at ws://x/ws (refused); {START_HINT}"
    assert describe_client_error(ClientError(p.ErrorCode.CONNECTION, message)).count(START_HINT) == 1
    assert describe_disconnect(f"lost it; {START_HINT}").count(START_HINT) == 1


def test_unauthorized_is_passed_through() -> None:
    text = describe_client_error(ClientError(p.ErrorCode.UNAUTHORIZED, "check the token (serve --token)"))
    assert text == "Check the token (serve --token)."


def test_a_disconnect_says_the_job_did_not_end() -> None:
    assert describe_disconnect("the bridge closed the connection").startswith("Lost the bridge before the job ended")
