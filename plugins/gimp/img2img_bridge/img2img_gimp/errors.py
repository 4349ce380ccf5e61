"""What the user reads when a run fails: every failure becomes one sentence that says what to do next."""

from __future__ import annotations

from .bridge_package import describe_client_error, describe_disconnect, p
from .bridge_package import describe_error as shared_describe_error

__all__ = ["MODEL_HINT", "PluginError", "describe_client_error", "describe_disconnect", "describe_error"]

MODEL_HINT = "choose a model in the Img2Img dialog, or start the bridge with: img2img-bridge serve --model NAME"


class PluginError(Exception):
    """A failure to show the user; ``message`` is the sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def describe_error(error: p.Error) -> str:
    """The user's sentence for an error event from the bridge."""
    return shared_describe_error(error, choose_model="in the Img2Img dialog", run_again="run Img2Img again")
