"""Make the Krita plug-in's ``img2img_bridge`` package importable without Krita (its ``krita`` import is skipped)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLUGIN_DIR = ROOT / "plugins" / "krita"

# Prepended: the GIMP plug-in's folder (appended by its tests) holds a module of the same name.
for folder in (str(ROOT), str(PLUGIN_DIR)):
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


@pytest.fixture(scope="session")
def pykrita(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pykrita folder with the plug-in installed: its own copy of the editor package, pure-Python websockets and msgpack."""
    from bridge.install import write_krita_plugin

    folder = tmp_path_factory.mktemp("krita-plugin") / "pykrita"
    write_krita_plugin(folder)
    return folder


@pytest.fixture(scope="session")
def krita_bridge_url(request: pytest.FixtureRequest) -> str:
    """A real bridge: $IMG2IMG_TEST_BRIDGE_URL (for the Python 3.10 run), else the suite's tiny-model bridge."""
    return os.environ.get("IMG2IMG_TEST_BRIDGE_URL") or str(request.getfixturevalue("bridge_url"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
