"""``img2img-bridge`` from a shell, as a new user tries it: serve, run with a mask and previews, install-plugins."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bridge.cli import TOKEN_ENV, read_token
from tests.served import ROOT, Served, serve


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


#: the bridge the tests share takes at most this many pixels, and this many a side
MAX_PIXELS, MAX_SIDE = 250_000, 2048


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    limits = ("--max-pixels", str(MAX_PIXELS), "--max-side", str(MAX_SIDE))
    with serve("--model", "tiny", *limits, log_dir=tmp_path_factory.mktemp("logs")) as running:
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
    assert (tmp_path / "gimp" / "img2img_bridge" / "img2img_gimp" / "_bridge" / "client.py").exists()
    assert "Filters > AI" in done.stdout
    assert cli("install-plugins", "--dest", str(tmp_path)).returncode == 2


def test_package_plugins_writes_both_zips(tmp_path: Path) -> None:
    done = cli("package-plugins", "--dest", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img2img_bridge-gimp.zip", "img2img_bridge-krita.zip"]
    assert "Import Python Plugin from File" in done.stdout


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


def recent_jobs(served: Served) -> list[dict[str, Any]]:
    jobs = served.health()["recent_jobs"]
    assert isinstance(jobs, list)
    return jobs


def run_cli(served: Served, tmp_path: Path, image: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = ("--out", str(tmp_path / "out.png")) if "--out" not in args else ()
    return cli("run", str(image), "--prompt", "x", "--steps", "2", "--url", served.url, *out, *args)


def corner_mask(tmp_path: Path, size: tuple[int, int]) -> Path:
    """White (regenerate) in a 16x16 top-left corner, black (keep) elsewhere."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 15, 15), fill=255)
    mask.save(tmp_path / "mask.png")
    return tmp_path / "mask.png"


def kept(out: Path, size: tuple[int, int]) -> np.ndarray:
    """The output's pixels outside the mask's corner."""
    pixels = np.asarray(Image.open(out).convert("RGBA")).copy()
    assert pixels.shape[:2] == (size[1], size[0])
    pixels[:16, :16] = 0
    return pixels


def test_a_16_bit_grayscale_png_is_converted_exactly(served: Served, tmp_path: Path) -> None:
    size = (64, 48)
    ramp = (np.arange(size[0] * size[1], dtype=np.uint32) * 65535 // (size[0] * size[1] - 1)).astype(np.uint16)
    Image.fromarray(ramp.reshape(size[1], size[0])).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")  # Pillow reads it back as 16-bit: the case that came out all white
    done = run_cli(served, tmp_path, tmp_path / "deep.png", "--mask", str(corner_mask(tmp_path, size)))
    assert done.returncode == 0, done.stderr
    gray = np.rint(ramp.reshape(size[1], size[0]) * (255 / 65535)).astype(np.uint8)
    expected = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    expected[:16, :16] = 0
    assert np.array_equal(kept(tmp_path / "out.png", size), expected)


def test_grayscale_with_alpha_keeps_gray_and_alpha(served: Served, tmp_path: Path) -> None:
    size = (40, 30)
    rng = np.random.default_rng(3)
    la = rng.integers(0, 256, (size[1], size[0], 2), dtype=np.uint8)
    Image.fromarray(la).save(tmp_path / "la.png")
    done = run_cli(served, tmp_path, tmp_path / "la.png", "--mask", str(corner_mask(tmp_path, size)))
    assert done.returncode == 0, done.stderr
    expected = np.dstack([la[..., 0], la[..., 0], la[..., 0], la[..., 1]])
    expected[:16, :16] = 0
    assert np.array_equal(kept(tmp_path / "out.png", size), expected)


def test_a_coloured_mask_is_refused_with_a_hint(served: Served, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "in.png")
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "red.png")
    done = run_cli(served, tmp_path, tmp_path / "in.png", "--mask", str(tmp_path / "red.png"))
    assert done.returncode == 2
    assert "coloured" in done.stderr and "grayscale" in done.stderr and "transparency" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_mask_with_transparency_uses_its_alpha(served: Served, tmp_path: Path) -> None:
    size = (48, 32)
    source = np.random.default_rng(4).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(source, "RGB").save(tmp_path / "in.png")
    mask = Image.new("RGBA", size, (200, 30, 30, 0))  # coloured, but its alpha says: keep all but the corner
    ImageDraw.Draw(mask).rectangle((0, 0, 15, 15), fill=(200, 30, 30, 255))
    mask.save(tmp_path / "mask.png")
    done = run_cli(served, tmp_path, tmp_path / "in.png", "--mask", str(tmp_path / "mask.png"))
    assert done.returncode == 0, done.stderr
    expected = np.dstack([source, np.full(source.shape[:2], 255, np.uint8)])
    expected[:16, :16] = 0
    assert np.array_equal(kept(tmp_path / "out.png", size), expected)


@pytest.mark.parametrize(("size", "limit"), [((600, 600), "megapixels"), ((MAX_SIDE + 1, 8), "a side")])
def test_images_beyond_the_bridges_limits_are_refused_before_sending(
    served: Served, tmp_path: Path, size: tuple[int, int], limit: str
) -> None:
    Image.new("RGB", size).save(tmp_path / "big.png")
    done = run_cli(served, tmp_path, tmp_path / "big.png")
    assert done.returncode == 2
    assert f"{size[0]}x{size[1]}" in done.stderr and limit in done.stderr and "serve --max-" in done.stderr
    assert "connection" not in done.stderr


@pytest.mark.parametrize(("out", "says"), [("x.xyz", "cannot write '.xyz' files"), ("missing/x.png", "does not exist"), ("x", "extension")])
def test_out_is_checked_before_the_job(served: Served, tmp_path: Path, out: str, says: str) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    before = [j["job_id"] for j in recent_jobs(served)]
    done = run_cli(served, tmp_path, tmp_path / "in.png", "--out", str(tmp_path / out))
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr
    assert [j["job_id"] for j in recent_jobs(served)] == before


def test_out_as_jpeg_is_written(served: Served, tmp_path: Path) -> None:
    Image.new("RGBA", (32, 32), (0, 0, 0, 128)).save(tmp_path / "in.png")
    done = run_cli(served, tmp_path, tmp_path / "in.png", "--out", str(tmp_path / "x.jpg"))
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "x.jpg") as written:
        assert written.format == "JPEG"


def test_count_shows_which_image_is_running(served: Served, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    done = run_cli(served, tmp_path, tmp_path / "in.png", "--count", "3")
    assert done.returncode == 0, done.stderr
    assert "image 2 of 3" in done.stdout and "image 3 of 3" in done.stdout
    assert (tmp_path / "out-2.png").exists()


def test_ctrl_c_cancels_the_job_and_exits_130_quietly(served: Served, tmp_path: Path) -> None:
    Image.new("RGB", (128, 128)).save(tmp_path / "in.png")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["run", str(tmp_path / "in.png"), "--prompt", "x", "--steps", "100", "--strength", "1", "--url", served.url]
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", *args, "--out", str(tmp_path / "out.png")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen = ""
    while "step " not in seen:  # the job is running
        char = process.stdout.read(1)
        assert char, "run ended before its first step"
        seen += char
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (tmp_path / "out.png").exists()
    deadline = time.monotonic() + 60
    while True:  # the bridge stops the job within a step
        jobs = [j for j in recent_jobs(served) if j["client"] == "img2img-bridge run"]
        if jobs and jobs[-1]["outcome"] == "cancelled" and jobs[-1]["steps"] < 100:
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.1)


def test_run_model_loads_an_offered_model_or_lists_them(served: Served, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    done = run_cli(served, tmp_path, tmp_path / "in.png", "--model", "tiny")
    assert done.returncode == 0, done.stderr
    refused = run_cli(served, tmp_path, tmp_path / "in.png", "--model", "other/model")
    assert refused.returncode == 1
    assert "does not offer 'other/model'" in refused.stderr and "offers: tiny" in refused.stderr


def test_every_option_has_help_and_the_commands_have_examples() -> None:
    from bridge.cli import build_parser

    parser = build_parser()
    assert parser._subparsers is not None
    commands: dict[str, argparse.ArgumentParser] = parser._subparsers._group_actions[0].choices  # type: ignore[assignment]
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    for name in ("serve", "run"):
        text = commands[name].format_help()
        assert "examples:" in text and "(default: " in text
    assert "(default: the model's recipe)" in commands["run"].format_help()


def test_models_dir_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    done = cli("serve", "--model", "tiny", "--models-dir", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert f"--models-dir {tmp_path / 'nope'}: no such folder" in done.stderr


def test_serve_on_a_taken_port_fails_before_loading(served: Served) -> None:
    done = cli("serve", "--model", "tiny", "--port", str(served.port), timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"could not listen on 127.0.0.1:{served.port}: Address already in use (is another bridge running? try --port)"
    ]
    assert "device:" not in done.stdout  # nothing was announced, nothing loaded


def test_a_wrong_token_is_never_echoed(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("the-right-token\n")
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    with serve("--token-file", str(tmp_path / "token"), log_dir=tmp_path) as locked:
        for how in (("--url", locked.url + "?token=WRONG-SECRET-1"), ("--url", locked.url, "--token", "WRONG-SECRET-1")):
            done = cli("run", str(tmp_path / "in.png"), "--prompt", "x", *how)
            assert done.returncode == 1
            assert "check the token" in done.stderr
            assert "WRONG-SECRET-1" not in done.stderr + done.stdout


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
