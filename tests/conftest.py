from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# set before anything imports huggingface_hub: no test may touch the network
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["IMG2IMG_BRIDGE_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from bridge.editor.client import BridgeClient

if TYPE_CHECKING:
    from tests.bridge_server import RunningBridge


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model is built once per test session, in a fresh cache."""
    cache = Path(os.environ.get("IMG2IMG_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["IMG2IMG_BRIDGE_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def device() -> str:
    """Where tests that take a device run: IMG2IMG_TEST_DEVICE, else ``cuda`` when PyTorch sees a GPU, else ``cpu``."""
    wanted = os.environ.get("IMG2IMG_TEST_DEVICE", "auto")
    if wanted != "auto":
        return wanted
    try:
        import torch
    except ImportError:  # the Python 3.10 run of the client and plug-in tests
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def cuda_device(device: str) -> str:
    """The device, for tests of what only happens on CUDA (fp16, pinned memory, CUDA graphs, real out-of-memory)."""
    if not device.startswith("cuda"):
        pytest.skip(f"needs a CUDA GPU: the tests run on {device} (IMG2IMG_TEST_DEVICE=cuda, or a GPU PyTorch sees)")
    return device


@pytest.fixture(scope="session")
def bridge(model_cache: Path, device: str) -> Iterator[RunningBridge]:
    """A real bridge with the tiny model on a loopback port, on the test device, shared by the tests that only talk to it."""
    from bridge.server import ServerConfig  # the server needs aiohttp and torch: import it only here
    from tests.bridge_server import running_bridge

    with running_bridge(ServerConfig(model="tiny", device=device)) as running:
        yield running


@pytest.fixture
def connect(bridge: RunningBridge) -> Iterator[Callable[..., BridgeClient]]:
    """Open real clients to the shared bridge; they are closed after the test."""
    clients: list[BridgeClient] = []

    def open_client(**kwargs: object) -> BridgeClient:
        client = BridgeClient(bridge.url, name="pytest", **kwargs)  # type: ignore[arg-type]
        client.connect()
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def bridge_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny-model bridge's websocket URL; processes in the e2e chroot reach it too (same loopback).

    Where the server's dependencies are missing (the Python 3.10 run of the client and plug-in tests),
    the bridge runs as a subprocess of the project's venv instead (IMG2IMG_SERVER_PYTHON).
    """
    try:
        import aiohttp  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        from tests.served import serve

        with serve("--model", "tiny", "--device", "cpu", log_dir=tmp_path_factory.mktemp("bridge-log")) as served:
            yield served.url
        return
    yield request.getfixturevalue("bridge").url
