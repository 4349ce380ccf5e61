"""Getting a Hub model into the local cache, with progress in bytes and plain-language failures.

Everything that touches the network goes through ``huggingface_hub`` here
(``HfApi.model_info`` for the file list and sizes, ``hf_hub_download`` per
file), so tests replace exactly that boundary.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from typing import Any, Callable

import huggingface_hub
from tqdm.auto import tqdm

# what a diffusers model needs: configs, tokenizers and safetensors weights (not fp16 copies, EMA or pickles)
ALLOW = ("*.json", "*.txt", "*.model", "*.safetensors")
IGNORE = ("*.fp16.*", "*ema*", "*.ckpt", "*.bin", "*.onnx*", "*.msgpack", "*.h5", "*.pb")

OnBytes = Callable[[int, int], None]  # (downloaded, total)


class DownloadError(Exception):
    """A download that failed; ``message`` says why in plain words and what to do."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.offline = offline


def cached(repo: str) -> str | None:
    """The local snapshot of ``repo`` when the cache has it whole, else None (no network)."""
    try:
        return str(huggingface_hub.snapshot_download(repo, local_files_only=True, allow_patterns=list(ALLOW), ignore_patterns=list(IGNORE)))
    except Exception:
        return None


def offline() -> bool:
    """Downloads are off, read as the Hub reads HF_HUB_OFFLINE: "0" or "false" is online."""
    return any(
        os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE") for var in ("HF_HUB_OFFLINE", "IMG2IMG_BRIDGE_OFFLINE")
    )


def wanted(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in ALLOW) and not any(fnmatch.fnmatch(name, p) for p in IGNORE)


def download(repo: str, on_bytes: OnBytes | None = None) -> str:
    """Download ``repo``'s model files into the Hugging Face cache, reporting bytes; returns the snapshot folder."""
    report = on_bytes or (lambda done, total: None)
    try:
        info = huggingface_hub.HfApi().model_info(repo, files_metadata=True)
    except Exception as exc:
        raise _explain(repo, exc) from exc
    files = [(s.rfilename, int(s.size or 0)) for s in info.siblings or [] if wanted(s.rfilename)]
    total = sum(size for _, size in files)
    progress = _Progress(total, report)
    folder: str | None = None
    with progress.bar:
        for name, _ in files:
            try:
                path = huggingface_hub.hf_hub_download(repo, name, revision=info.sha, tqdm_class=progress.file_bar_class())
            except Exception as exc:
                raise _explain(repo, exc) from exc
            folder = str(path)[: -len(name) - 1]
    if folder is None:
        raise DownloadError(f"model {repo} on the Hugging Face Hub has no diffusers files (model_index.json and safetensors weights)")
    report(total, total)
    return folder


class _Progress:
    """Sums the bytes of every file's download into one console bar and the ``on_bytes`` callback."""

    def __init__(self, total: int, report: OnBytes) -> None:
        self.total = total
        self.done = 0
        self.report = report
        self.lock = threading.Lock()
        self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="downloading")

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            self.bar.update(n)
            done = self.done
        self.report(done, self.total)

    def file_bar_class(self) -> type[tqdm]:
        progress = self

        class _FileBar(tqdm):
            """huggingface_hub's per-file bar: silent, its bytes go to the one bar."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = True
                initial = int(kwargs.get("initial") or 0)
                super().__init__(*args, **kwargs)
                if initial:
                    progress.add(initial)

            def update(self, n: float | None = 1) -> bool | None:
                progress.add(int(n or 0))
                return super().update(n)

        return _FileBar


def _explain(repo: str, exc: Exception) -> DownloadError:
    errors = huggingface_hub.errors
    if isinstance(exc, (errors.RepositoryNotFoundError, errors.GatedRepoError)):
        return DownloadError(
            f"model {repo} was not found on the Hugging Face Hub, or it needs a login: check the name, "
            "or accept its licence on its Hub page and run 'hf auth login'"
        )
    if isinstance(exc, errors.OfflineModeIsEnabled) or _is_network_failure(exc):
        return DownloadError(
            f"there is no network, and model {repo} is not in the Hugging Face cache. Fix: run 'img2img-bridge serve' once "
            "while online to download it, or copy its folder here and pass --model with the folder or a .safetensors file",
            offline=True,
        )
    return DownloadError(f"downloading model {repo} failed: {exc}")


def _is_network_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the HTTP client failing to reach the Hub: httpx, httpx2 and requests alike."""
    seen: BaseException | None = exc
    while seen is not None:
        names = {cls.__name__ for cls in type(seen).__mro__}
        if isinstance(seen, (ConnectionError, TimeoutError)) or names & _NETWORK_ERRORS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "NetworkError", "TimeoutException", "ConnectionError", "LocalEntryNotFoundError"}
