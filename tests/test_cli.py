"""``img2img-bridge`` from a shell, as a new user tries it: serve, run with a mask and previews, install-plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

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


def test_run_left_to_the_recipe_prints_it_and_the_settings_that_ran(served: Served, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "in.png")
    done = cli("run", str(tmp_path / "in.png"), "--prompt", "a fox", "--out", str(tmp_path / "out.png"), "--url", served.url)
    assert done.returncode == 0, done.stderr
    # the tiny model stands in for sd-turbo: two steps at strength 0.5 run one, with guidance off
    assert "tiny: sd-turbo recipe: 2 steps, strength 0.5, guidance off, 128 px, EulerDiscreteScheduler" in done.stdout
    assert "step 1/1" in done.stdout
    assert "steps 2 x strength 0.5, guidance 0" in done.stdout


def test_run_help_says_unset_settings_come_from_the_recipe() -> None:
    done = cli("run", "--help")
    assert done.returncode == 0
    assert " ".join(done.stdout.split()).count("(default: the model's recipe)") == 3
