from __future__ import annotations

import socket

from img2img_gimp.models import bridge_info, probe

from bridge import protocol as p
from bridge.client import START_HINT

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
