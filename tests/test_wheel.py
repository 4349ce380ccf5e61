"""The built wheel, installed into a fresh venv outside the checkout, installs and packages both plug-ins."""

from __future__ import annotations

import filecmp
import zipfile
from pathlib import Path

import pytest

from bridge import install
from tests.wheel_install import ROOT, WheelInstall, build_and_install


@pytest.fixture(scope="module")
def from_wheel(tmp_path_factory: pytest.TempPathFactory) -> WheelInstall:
    scratch = tmp_path_factory.mktemp("wheel")
    assert not scratch.resolve().is_relative_to(ROOT)
    return build_and_install(scratch)


def same_tree(left: Path, right: Path) -> list[str]:
    """The files that differ or exist on one side only."""
    compared = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [*compared.left_only, *compared.right_only, *compared.diff_files]
    return found + [f"{name}/{inner}" for name, sub in compared.subdirs.items() for inner in same_tree(left / name, right / name)]


def test_the_wheel_carries_the_plugins_and_the_whole_editor_package(from_wheel: WheelInstall) -> None:
    with zipfile.ZipFile(from_wheel.wheel) as wheel:
        names = set(wheel.namelist())
    assert "bridge/plugins/krita/img2img_bridge.desktop" in names
    assert "bridge/plugins/gimp/img2img_bridge/img2img_bridge.py" in names
    assert {f"bridge/editor/{p.name}" for p in install.EDITOR_PACKAGE.glob("*.py")} <= names
    assert not any("stubs/" in name for name in names)


def test_install_plugins_from_the_wheel_matches_an_install_from_the_checkout(from_wheel: WheelInstall, tmp_path: Path) -> None:
    for host in ("gimp", "krita"):
        done = from_wheel.run("install-plugins", f"--{host}", "--dest", str(tmp_path / "wheel" / host), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert "installed the Krita plug-in" in done.stdout
    install.install_gimp(tmp_path / "checkout" / "gimp")
    install.install_krita(tmp_path / "checkout" / "krita")
    assert same_tree(tmp_path / "wheel", tmp_path / "checkout") == []
    assert (tmp_path / "wheel" / "krita" / "img2img_bridge" / "_bridge" / "_vendor" / "websockets" / "sync" / "client.py").is_file()


def test_package_plugins_from_the_wheel(from_wheel: WheelInstall, tmp_path: Path) -> None:
    done = from_wheel.run("package-plugins", "--dest", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(tmp_path / "img2img_bridge-krita.zip") as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"img2img_bridge.desktop", "img2img_bridge"}
    assert (tmp_path / "img2img_bridge-gimp.zip").is_file()
