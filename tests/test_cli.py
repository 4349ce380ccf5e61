"""``img2img-bridge`` from a shell, as a new user tries it: serve, run with a mask and previews, install-plugins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bridge.cli import TOKEN_ENV, read_token
from tests.served import ROOT, Served, serve


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve("--model", "tiny", log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def test_serve_announces_url_device_and_model(served: Served) -> None:
    log = served.log.read_text()
    assert f"ws://127.0.0.1:{served.port}/ws" in log
    assert "device: cpu" in log
    assert "test model" in log


def test_run_with_mask_and_previews(served: Served, tmp_path: Path) -> None:
    photo = Image.new("RGBA", (200, 150), (30, 120, 200, 255))
    ImageDraw.Draw(photo).ellipse((50, 30, 150, 120), fill=(250, 200, 0, 255))
    photo.save(tmp_path / "photo.png")
    mask = Image.new("L", (200, 150), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 199, 40), fill=255)
    mask.save(tmp_path / "mask.png")
    done = cli(
        "run", str(tmp_path / "photo.png"), "--prompt", "a stormy sky", "--mask", str(tmp_path / "mask.png"),
        "--previews", str(tmp_path / "previews"), "--out", str(tmp_path / "out.png"), "--url", served.url,
        "--steps", "6", "--strength", "0.8", "--seed", "42",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "seed 42" in done.stdout
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGBA"))
    source = np.asarray(photo)
    keep = np.asarray(mask) == 0
    assert out.shape == source.shape
    assert np.array_equal(out[keep], source[keep])
    assert not np.array_equal(out[~keep], source[~keep])
    assert sorted(path.name for path in (tmp_path / "previews").iterdir())[0] == "preview-00-001.png"


def test_run_reports_bad_input_clearly(served: Served, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    done = cli("run", str(tmp_path / "in.png"), "--prompt", "x", "--strength", "3", "--url", served.url)
    assert done.returncode == 1
    assert "strength" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_without_a_bridge_says_how_to_start_one(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    done = cli("run", str(tmp_path / "in.png"), "--prompt", "x", "--url", "127.0.0.1:9")
    assert done.returncode == 1
    assert "img2img-bridge serve" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_refuses_the_network_without_a_token() -> None:
    done = cli("serve", "--host", "0.0.0.0", "--model", "tiny")
    assert done.returncode == 2
    assert "--token" in done.stderr


def test_serve_refuses_an_unknown_model() -> None:
    done = cli("serve", "--model", "not a model")
    assert done.returncode == 2
    assert "repo id" in done.stderr


def test_install_plugins_into_a_folder(tmp_path: Path) -> None:
    done = cli("install-plugins", "--gimp", "--dest", str(tmp_path / "gimp"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gimp" / "img2img_bridge" / "img2img_bridge.py").exists()
    assert (tmp_path / "gimp" / "img2img_bridge" / "vendor" / "bridge" / "client.py").exists()
    assert "Filters > AI" in done.stdout
    assert cli("install-plugins", "--dest", str(tmp_path)).returncode == 2


def test_tokens_come_from_a_file_or_the_environment_not_the_command_line(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-from-file\n")
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    with serve("--model", "tiny", "--token-file", str(token_file), log_dir=tmp_path, token="s3cret-from-file") as served:
        assert "s3cret" not in " ".join(served.process.args)  # type: ignore[arg-type]
        base = ["run", str(tmp_path / "in.png"), "--prompt", "x", "--steps", "1", "--url", served.url, "--out", str(tmp_path / "o.png")]
        refused = cli(*base)
        assert refused.returncode == 1 and "token" in refused.stderr
        env = dict(os.environ, IMG2IMG_BRIDGE_TOKEN="s3cret-from-file", PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-m", "bridge", *base], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert cli(*base, "--token-file", str(token_file)).returncode == 0


def test_read_token_prefers_the_flag_then_the_file_then_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, " from-env ")
    (tmp_path / "t").write_text("from-file\nignored\n")
    assert read_token("flag", tmp_path / "t") == "flag"
    assert read_token(None, tmp_path / "t") == "from-file"
    assert read_token(None, None) == "from-env"
    monkeypatch.delenv(TOKEN_ENV)
    assert read_token(None, None) is None


def test_run_against_a_frozen_bridge_ends_with_an_error(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    with serve("--model", "tiny", log_dir=tmp_path) as frozen:
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            done = cli("run", str(tmp_path / "in.png"), "--prompt", "x", "--url", frozen.url, "--keepalive", "0.5", timeout=60)
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
    assert done.returncode == 1
    assert "could not reach" in done.stderr and "Traceback" not in done.stderr
