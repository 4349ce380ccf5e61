from __future__ import annotations

import socket
from dataclasses import replace

from img2img_gimp.models import bridge_info, describe_settings, probe
from img2img_gimp.settings import AUTO_GUIDANCE, AUTO_STEPS, AUTO_STRENGTH, EXACT

from bridge.editor import protocol as p
from bridge.editor.client import START_HINT

from .fakes import model_state, welcome


def test_the_bridge_models_are_offered_and_the_loaded_one_selected() -> None:
    info = bridge_info(welcome(), "")
    assert info.models == ("tiny", "other") and info.selected == "tiny"
    assert info.status == "Bridge on cpu: tiny is loaded."


def test_a_remembered_model_stays_selected_even_when_not_listed() -> None:
    info = bridge_info(welcome(), "org/custom-model")
    assert info.models[0] == "org/custom-model" and info.selected == "org/custom-model"


def test_no_model_asks_to_pick_one() -> None:
    info = bridge_info(welcome(model_state(None, p.ModelStatus.NO_MODEL)), "")
    assert "pick one" in info.status and info.selected == "tiny"


def test_a_failed_model_shows_why() -> None:
    assert "out of disk" in bridge_info(welcome(model_state("big", p.ModelStatus.ERROR, "out of disk")), "").status


def test_unreachable_bridge_keeps_the_remembered_model_and_says_so() -> None:
    info = bridge_info(None, "tiny", "Could not reach the bridge.")
    assert info.models == ("tiny",) and info.selected == "tiny" and info.status == "Could not reach the bridge."


def test_probe_never_raises_and_says_how_to_start_the_bridge() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        info = probe(f"ws://127.0.0.1:{sock.getsockname()[1]}/ws", "")
    assert START_HINT in info.status and info.models == ()


def test_probe_of_a_bad_url_never_raises() -> None:
    assert "ftp" in probe("ftp://nowhere", "x").status


TURBO = p.Recipe(steps=2, guidance=0.0, strength=0.5, live_steps=1, live_strength=0.5, resolution=512, kind="sd-turbo")
SD15 = p.Recipe(steps=30, guidance=7.5, strength=0.6, live_steps=4, live_strength=0.5, resolution=512, kind="sd15")


def recipes_welcome() -> p.Welcome:
    loaded = p.ModelState("turbo", p.ModelStatus.READY, recipe=TURBO)
    models = (p.ModelInfo("turbo", "hub"), p.ModelInfo("sd15", "folder", recipe=SD15), p.ModelInfo("new", "file"))
    return replace(welcome(loaded), models=models)


def test_the_selected_models_recipe_comes_from_its_state_once_loaded_else_from_the_list() -> None:
    info = bridge_info(recipes_welcome(), "")
    assert info.recipe("") == TURBO and info.recipe("turbo") == TURBO
    assert info.recipe("sd15") == SD15
    assert info.recipe("new") is None and info.recipe("unlisted") is None
    assert bridge_info(None, "turbo").recipe("turbo") is None


def test_the_dialog_shows_auto_values_from_the_selected_models_recipe() -> None:
    info = bridge_info(recipes_welcome(), "")

    def auto(recipe: p.Recipe | None) -> str:
        return describe_settings(recipe, EXACT, AUTO_STRENGTH, AUTO_STEPS, AUTO_GUIDANCE)

    assert auto(info.recipe("turbo")) == "Steps: auto (2) \u00b7 Guidance: auto (off) \u00b7 Strength: auto (0.50)"
    assert auto(info.recipe("sd15")) == "Steps: auto (30) \u00b7 Guidance: auto (7.5) \u00b7 Strength: auto (0.60)"
    assert auto(info.recipe("new")) == "Steps: auto \u00b7 Guidance: auto \u00b7 Strength: auto"
    chosen = describe_settings(TURBO, preset="low", strength=AUTO_STRENGTH, steps=12, guidance=3.0)
    assert chosen == "Steps: 12 \u00b7 Guidance: 3 \u00b7 Strength: 0.30"
