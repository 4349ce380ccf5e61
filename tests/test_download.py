"""Downloads through a fake Hub that stands in for huggingface_hub's network calls, and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest

from bridge import download
from bridge.editor import protocol as p
from bridge.editor.client import BridgeClient
from bridge.models import ModelError, load, resolve
from bridge.server import ServerConfig
from bridge.tiny_model import ensure_tiny_model
from tests.bridge_server import running_bridge
from tests.test_server import TIMEOUT, Events

CHUNK = 4096


class FakeHub:
    """``HfApi.model_info``, ``hf_hub_download`` and cache look-ups over repos held in local folders."""

    def __init__(self, cache: Path, repos: dict[str, Path]) -> None:
        self.cache = cache
        self.repos = repos
        self.fetched: list[str] = []

    def files(self, repo: str) -> list[Path]:
        root = self.repos[repo]
        return sorted(path for path in root.rglob("*") if path.is_file())

    def model_info(self, repo: str, files_metadata: bool = False) -> Any:
        if repo not in self.repos:
            missing = huggingface_hub.errors.RepositoryNotFoundError.__new__(huggingface_hub.errors.RepositoryNotFoundError)
            Exception.__init__(missing, f"404 Client Error: Repository Not Found for {repo}")  # no HTTP response object to give it
            raise missing
        siblings = [SimpleNamespace(rfilename=str(f.relative_to(self.repos[repo])), size=f.stat().st_size) for f in self.files(repo)]
        return SimpleNamespace(siblings=siblings, sha="abc123")

    def snapshot(self, repo: str) -> Path:
        return self.cache / repo.replace("/", "--") / "snapshots" / "abc123"

    def hf_hub_download(self, repo: str, filename: str, *, revision: str, tqdm_class: Any) -> str:
        source = self.repos[repo] / filename
        data = source.read_bytes()
        target = self.snapshot(repo) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm_class(total=len(data), initial=0, unit="B")
        with target.open("wb") as fh:
            for start in range(0, len(data), CHUNK):
                fh.write(data[start : start + CHUNK])
                bar.update(len(data[start : start + CHUNK]))
        bar.close()
        self.fetched.append(f"{repo}/{filename}")
        return str(target)

    def snapshot_download(self, repo: str, *, local_files_only: bool, **_: Any) -> str:
        assert local_files_only, "only cache look-ups go through snapshot_download"
        folder = self.snapshot(repo)
        if not (folder / ("model_index.json" if repo not in _TAESD else "config.json")).exists():
            raise huggingface_hub.errors.LocalEntryNotFoundError(f"{repo} is not cached")
        return str(folder)


_TAESD = ("madebyollin/taesd", "madebyollin/taesdxl")


def api_class(model_info: Any) -> type:
    """A stand-in for the ``HfApi`` class (a class: libraries imported later annotate with ``HfApi | None``)."""

    class FakeApi:
        def model_info(self, repo: str, files_metadata: bool = False) -> Any:
            return model_info(repo, files_metadata=files_metadata)

    return FakeApi


@pytest.fixture
def hub(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    tiny = ensure_tiny_model()
    model = tmp_path / "hub" / "tiny-turbo"
    shutil.copytree(tiny, model, ignore=shutil.ignore_patterns("taesd", "img2img_bridge.json"))
    fake = FakeHub(tmp_path / "hf-cache", {"test-org/tiny-turbo": model, "madebyollin/taesd": tiny / "taesd"})
    # modules that bind huggingface_hub's names at import are imported before the fakes, so they keep the real ones
    import diffusers
    import transformers.utils.hub  # noqa: F401

    _ = diffusers.AutoPipelineForImage2Image, diffusers.AutoencoderTiny, diffusers.StableDiffusionImg2ImgPipeline
    monkeypatch.setattr(huggingface_hub, "HfApi", api_class(fake.model_info))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("IMG2IMG_BRIDGE_OFFLINE")
    return fake


def test_a_download_reports_bytes_up_to_the_total(hub: FakeHub) -> None:
    reports: list[tuple[int, int]] = []
    folder = download.download("test-org/tiny-turbo", lambda done, total: reports.append((done, total)))
    total = sum(f.stat().st_size for f in hub.files("test-org/tiny-turbo") if download.wanted(f.name))
    assert (Path(folder) / "model_index.json").is_file()
    assert reports[-1] == (total, total)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert len(reports) > 10, "progress arrives while the files download"


def test_a_hub_model_downloads_with_its_tiny_autoencoder_and_loads(hub: FakeHub) -> None:
    model = load(resolve("test-org/tiny-turbo"), "cpu")
    assert "madebyollin/taesd/config.json" in hub.fetched
    assert model.tiny_vae is not None and model.state.message == ""
    assert model.recipe.kind == "sd-turbo", "named like a turbo model, classified as one"


def test_without_its_tiny_autoencoder_the_state_says_live_mode_is_slower(hub: FakeHub) -> None:
    del hub.repos["madebyollin/taesd"]
    model = load(resolve("test-org/tiny-turbo"), "cpu")
    assert model.tiny_vae is None
    assert "live mode runs on the full VAE, slower" in model.state.message


def transport_error() -> type[Exception]:
    """What the HTTP client under huggingface_hub raises when no network is there (httpx2, httpx or requests)."""
    import importlib

    for module in ("httpx2", "httpx", "requests"):
        try:
            return getattr(importlib.import_module(module), "ConnectError", None) or importlib.import_module(module).ConnectionError
        except ImportError:
            continue
    return ConnectionError


def test_without_network_the_message_says_so_and_how_to_get_the_model(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(repo: str, files_metadata: bool = False) -> Any:
        raise transport_error()("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "HfApi", api_class(unreachable))
    with pytest.raises(ModelError) as info:
        load(resolve("test-org/tiny-turbo"), "cpu")
    message = info.value.message
    assert message.startswith("there is no network, and model test-org/tiny-turbo is not in the Hugging Face cache")
    assert "while online" in message and "--model" in message
    assert "Error" not in message and "HfHub" not in message


def test_an_unknown_repo_is_named(hub: FakeHub) -> None:
    with pytest.raises(ModelError) as info:
        load(resolve("test-org/nothing-here"), "cpu")
    assert info.value.message.startswith("model test-org/nothing-here was not found on the Hugging Face Hub")


def test_clients_see_the_download_in_bytes_then_the_ready_model(hub: FakeHub) -> None:
    with running_bridge(ServerConfig(model="tiny", device="cpu", allow_hub=True)) as server:
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            client.load_model("test-org/tiny-turbo")
            states = []
            state = events.wait(p.ModelStatusEvent, timeout=TIMEOUT).model
            while state.status is p.ModelStatus.LOADING:
                states.append(state)
                state = events.wait(p.ModelStatusEvent, timeout=TIMEOUT).model
            assert (state.status, state.name) == (p.ModelStatus.READY, "test-org/tiny-turbo")
            assert state.recipe is not None and state.recipe.kind == "sd-turbo"
            sizes = [(s.downloaded, s.download_size) for s in states if s.downloaded is not None]
            assert sizes and sizes[-1][0] == sizes[-1][1] and sizes[-1][1] is not None and sizes[-1][1] > 0
            assert [done for done, _ in sizes] == sorted(done for done, _ in sizes)
            assert any(s.message.startswith("downloading test-org/tiny-turbo: ") for s in states)
            assert server.health()["recipe"]["kind"] == "sd-turbo"
