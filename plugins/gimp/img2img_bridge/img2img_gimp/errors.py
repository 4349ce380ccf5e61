"""What the user reads when a run fails: every failure becomes one sentence that says what to do next."""

from __future__ import annotations

from bridge.editor import protocol as p
from bridge.editor.client import START_HINT, ClientError, sentence

MODEL_HINT = "choose a model in the Img2Img dialog, or start the bridge with: img2img-bridge serve --model NAME"


class PluginError(Exception):
    """A failure to show the user; ``message`` is the sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def describe_error(error: p.Error) -> str:
    """The user's sentence for an error event from the bridge."""
    code, detail = error.code, error.message.rstrip(".")
    if code is p.ErrorCode.NO_MODEL:
        return f"The bridge has no model loaded: {MODEL_HINT}."
    if code is p.ErrorCode.MODEL_LOADING:
        return "The bridge is still loading its model; run Img2Img again in a moment."
    if code is p.ErrorCode.MODEL_LOAD_FAILED:
        return f"The bridge could not load the model ({detail}): {MODEL_HINT}."
    if code is p.ErrorCode.UNKNOWN_MODEL:
        return f"The bridge does not know that model ({detail}): pick one from the Model list."
    if code is p.ErrorCode.OUT_OF_MEMORY:
        return f"The bridge ran out of memory ({detail}): select a smaller region or scale the image down."
    if code is p.ErrorCode.TOO_LARGE:
        return f"The region is too large for the bridge ({detail}): select a smaller region."
    if code is p.ErrorCode.QUEUE_FULL:
        return f"The bridge is busy ({detail}): wait for its other jobs, then run Img2Img again."
    if code is p.ErrorCode.UNAUTHORIZED:
        return f"The bridge refused the connection ({detail}): check its token."
    if code is p.ErrorCode.CONNECTION:
        return f"Lost the bridge: {detail}."
    return f"The bridge could not run the job: {detail}."


def describe_client_error(exc: ClientError) -> str:
    """The user's sentence for a failure to connect or send."""
    message = exc.message.rstrip(".")
    if exc.code is p.ErrorCode.CONNECTION and START_HINT not in message:
        message = f"{message}; {START_HINT}"
    return sentence(message)


def describe_disconnect(reason: str) -> str:
    reason = reason.rstrip(".")
    if START_HINT not in reason:
        reason = f"{reason}; {START_HINT}"
    return f"Lost the bridge before the job ended: {reason}."
