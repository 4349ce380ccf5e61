"""What the dialog shows about the bridge: its models and its state, in words."""

from __future__ import annotations

from dataclasses import dataclass

from bridge import protocol as p
from bridge.client import BridgeClient, ClientError

from .errors import describe_client_error

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class BridgeInfo:
    """The model names to offer, the one to pre-select and a line about the bridge's state."""

    models: tuple[str, ...]
    selected: str
    status: str


def bridge_info(welcome: p.Welcome | None, remembered: str, failure: str = "") -> BridgeInfo:
    """Offer the bridge's models, keeping the remembered choice first if the bridge does not list it."""
    if welcome is None:
        names: tuple[str, ...] = (remembered,) if remembered else ()
        return BridgeInfo(names, remembered, failure or "The bridge is not reachable.")
    names = tuple(m.name for m in welcome.models)
    current = welcome.model
    if remembered and remembered not in names:
        names = (remembered, *names)
    selected = remembered or current.name or (names[0] if names else "")
    if current.status is p.ModelStatus.READY:
        state = f"{current.name} is loaded"
    elif current.status is p.ModelStatus.LOADING:
        state = f"loading {current.name}"
    elif current.status is p.ModelStatus.NO_MODEL:
        state = "no model loaded: pick one"
    else:
        state = f"the model failed to load ({current.message})"
    return BridgeInfo(names, selected, f"Bridge on {welcome.device}: {state}.")


def probe(url: str, remembered: str) -> BridgeInfo:
    """Connect briefly to list the bridge's models; never raises."""
    try:
        client = BridgeClient(url, name="gimp-img2img-dialog", timeout=PROBE_TIMEOUT)
        welcome = client.connect()
    except ClientError as exc:
        return bridge_info(None, remembered, describe_client_error(exc))
    client.close()
    return bridge_info(welcome, remembered)
