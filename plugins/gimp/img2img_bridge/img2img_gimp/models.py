"""What the dialog shows about the bridge: its models and its state, in words."""

from __future__ import annotations

from dataclasses import dataclass

from .bridge_package import BridgeClient, ClientError, auto_guidance, auto_steps, auto_strength, p, recipe_for
from .errors import PluginError, describe_client_error
from .settings import AUTO_STEPS, resolve_strength

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class BridgeInfo:
    """The model names to offer, the one to pre-select and a line about the bridge's state."""

    models: tuple[str, ...]
    selected: str
    status: str
    welcome: p.Welcome | None = None

    def recipe(self, model: str) -> p.Recipe | None:
        """The recipe of ``model`` ("" = the loaded one), when the bridge knows it."""
        if self.welcome is None:
            return None
        return recipe_for(model, self.welcome.models, self.welcome.model)


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
    return BridgeInfo(names, selected, f"Bridge on {welcome.device}: {state}.", welcome)


def describe_settings(recipe: p.Recipe | None, preset: str, strength: float, steps: int, guidance: float) -> str:
    """The dialog's line about what will be sent: ``"Steps: auto (2) · Guidance: auto (off) · Strength: 0.30"``.

    Arguments are the dialog's (``AUTO_*`` values mean the model's default); ``recipe`` fills in what auto means.
    """
    try:
        chosen = resolve_strength(preset, strength)
    except PluginError:
        chosen = None  # the run itself says what is wrong
    return " \u00b7 ".join(
        (
            f"Steps: {auto_steps(recipe) if steps == AUTO_STEPS else steps}",
            f"Guidance: {auto_guidance(recipe) if guidance < 0 else f'{guidance:g}'}",
            f"Strength: {auto_strength(recipe) if chosen is None else f'{chosen:.2f}'}",
        )
    )


def probe(url: str, remembered: str) -> BridgeInfo:
    """Connect briefly to list the bridge's models; never raises."""
    try:
        client = BridgeClient(url, name="gimp-img2img-dialog", timeout=PROBE_TIMEOUT)
        welcome = client.connect()
    except ClientError as exc:
        return bridge_info(None, remembered, describe_client_error(exc))
    client.close()
    return bridge_info(welcome, remembered)
