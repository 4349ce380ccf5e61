from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import msgpack
import pytest

from bridge import install

BRIDGE_SOURCE = Path(install.__file__).resolve().parent
COMPILED_SUFFIXES = (".so", ".pyd", ".dll", ".dylib", ".pyc")

# what the editors' Python 3.10 runs: nothing from site-packages, only the plug-in's vendor folder
VENDOR_CHECK = """
import json, sys
vendor = sys.argv[1]
sys.path[:] = [p for p in sys.path if "site-packages" not in p and "dist-packages" not in p]
sys.path.insert(0, vendor)
import bridge.client
import bridge.protocol as p
import msgpack
import websockets.sync.client
frame = p.encode(p.Queued(job_id="j", position=3))
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "files": [m.__file__ for m in (bridge.client, msgpack, websockets.sync.client)],
    "msgpack_version": list(msgpack.version),
    "packer_module": msgpack.Packer.__module__,
    "round_trip": p.decode_server_message(frame) == p.Queued(job_id="j", position=3),
}))
"""


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plug-ins tree with placeholder files, so these tests do not depend on the real plug-ins' contents."""
    root = tmp_path / "plugins"
    gimp = root / "gimp" / install.PLUGIN_NAME
    (gimp / "img2img_gimp" / "__pycache__").mkdir(parents=True)
    (gimp / f"{install.PLUGIN_NAME}.py").write_text("#!/usr/bin/env python3\n", encoding="utf-8")
    (gimp / f"{install.PLUGIN_NAME}.py").chmod(0o644)
    (gimp / "img2img_gimp" / "__init__.py").write_text("", encoding="utf-8")
    (gimp / "img2img_gimp" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"stale")
    krita = root / "krita"
    (krita / install.PLUGIN_NAME).mkdir(parents=True)
    (krita / f"{install.PLUGIN_NAME}.desktop").write_text("[Desktop Entry]\nX-KDE-Library=img2img_bridge\n", encoding="utf-8")
    (krita / install.PLUGIN_NAME / "__init__.py").write_text("", encoding="utf-8")
    (krita / install.PLUGIN_NAME / "docker.py").write_text("", encoding="utf-8")
    monkeypatch.setattr(install, "plugins_source", lambda: root)
    return root


def check_vendor(vendor: Path) -> None:
    bridge = vendor / "bridge"
    assert sorted(p.name for p in bridge.iterdir()) == sorted(install.CLIENT_MODULES)
    for name in install.CLIENT_MODULES:
        assert (bridge / name).read_bytes() == (BRIDGE_SOURCE / name).read_bytes()
    for package in install.VENDORED_PACKAGES:
        assert (vendor / package / "__init__.py").is_file()
    compiled = [p for p in vendor.rglob("*") if p.name == "__pycache__" or p.suffix in COMPILED_SUFFIXES]
    assert compiled == []
    assert (vendor / "msgpack" / "fallback.py").is_file()
    assert (vendor / "websockets" / "sync" / "client.py").is_file()


def test_install_gimp_copies_the_plugin_and_makes_its_entry_executable(fake_plugins: Path, tmp_path: Path) -> None:
    dest = tmp_path / "gimp-plug-ins"
    installed = install.install_gimp(dest)
    target = dest / install.PLUGIN_NAME
    assert (installed.host, installed.path, installed.enabled) == ("GIMP", target, False)
    entry = target / f"{install.PLUGIN_NAME}.py"
    assert entry.is_file()
    assert entry.stat().st_mode & stat.S_IXUSR
    assert os.access(entry, os.X_OK)
    assert (target / "img2img_gimp" / "__init__.py").is_file()
    assert not (target / "img2img_gimp" / "__pycache__").exists()
    check_vendor(target / "vendor")


def test_gimp_plugins_go_to_the_newest_gimp_3_configuration_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.sys, "platform", "linux")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert install.gimp_plugins_dir(tmp_path) == tmp_path / ".config/GIMP/3.0/plug-ins"  # no GIMP has run yet
    for name in ("2.10", "3.0", "3.2", "3.10-old"):
        (tmp_path / ".config/GIMP" / name).mkdir(parents=True)
    assert install.gimp_plugins_dir(tmp_path) == tmp_path / ".config/GIMP/3.2/plug-ins"  # GIMP 3.2 reads only its own


def test_install_krita_copies_the_desktop_file_and_the_package(fake_plugins: Path, tmp_path: Path) -> None:
    pykrita = tmp_path / "share" / "krita" / "pykrita"
    kritarc = tmp_path / "kritarc"
    installed = install.install_krita(pykrita, kritarc=kritarc)
    assert (installed.host, installed.path, installed.enabled) == ("Krita", pykrita / install.PLUGIN_NAME, False)
    assert (pykrita / f"{install.PLUGIN_NAME}.desktop").read_text(encoding="utf-8").startswith("[Desktop Entry]")
    assert (pykrita / install.PLUGIN_NAME / "docker.py").is_file()
    check_vendor(pykrita / install.PLUGIN_NAME / "vendor")
    assert not kritarc.exists()


def test_install_krita_can_enable_the_plugin(fake_plugins: Path, tmp_path: Path) -> None:
    kritarc = tmp_path / "config" / "kritarc"
    installed = install.install_krita(tmp_path / "pykrita", enable=True, kritarc=kritarc)
    assert installed.enabled
    assert "enable_img2img_bridge=true" in kritarc.read_text(encoding="utf-8")


def test_reinstalling_replaces_the_old_copy(fake_plugins: Path, tmp_path: Path) -> None:
    dest = tmp_path / "plug-ins"
    install.install_gimp(dest)
    stale = dest / install.PLUGIN_NAME / "removed_in_this_version.py"
    stale.write_text("", encoding="utf-8")
    (dest / install.PLUGIN_NAME / "vendor" / "msgpack" / "_cmsgpack.so").write_bytes(b"\x7fELF")
    install.install_gimp(dest)
    assert not stale.exists()
    check_vendor(dest / install.PLUGIN_NAME / "vendor")


def test_a_missing_plugin_source_is_an_install_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "plugins"
    (empty / "gimp").mkdir(parents=True)
    (empty / "krita").mkdir()
    monkeypatch.setattr(install, "plugins_source", lambda: empty)
    with pytest.raises(install.InstallError, match="missing"):
        install.install_gimp(tmp_path / "dest")


def test_the_checkout_holds_both_plugins() -> None:
    source = install.plugins_source()
    assert (source / "gimp" / install.PLUGIN_NAME / f"{install.PLUGIN_NAME}.py").is_file()
    assert (source / "krita" / f"{install.PLUGIN_NAME}.desktop").is_file()
    assert (source / "krita" / install.PLUGIN_NAME / "__init__.py").is_file()


def test_the_vendor_folder_imports_in_python_3_10_without_site_packages(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYENV_VERSION"] = "3.10.13"
    python = shutil.which("python3.10", path=env.get("PATH"))
    if python is None or subprocess.run([python, "--version"], env=env, capture_output=True).returncode != 0:
        pytest.skip("python3.10 (pyenv 3.10.13) is not installed")
    vendor = tmp_path / "vendor"
    install.write_vendor(vendor)
    done = subprocess.run([python, "-I", "-c", VENDOR_CHECK, str(vendor)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["python"] == [3, 10]
    assert all(path.startswith(str(vendor)) for path in report["files"])
    assert report["msgpack_version"] == list(msgpack.version)
    assert report["packer_module"] == "msgpack.fallback"
    assert report["round_trip"] is True


def test_enable_in_kritarc_keeps_what_is_there(tmp_path: Path) -> None:
    kritarc = tmp_path / "kritarc"
    kritarc.write_text(
        "[General]\nLastPreferenceSection=7\nShowRootLayer=false\ncolorsettings=%23ff0000\n\n"
        "[python]\nenable_assignprofiledialog=true\n\n"
        "[MainWindow]\nState=@ByteArray(AAA:BBB=)\n",
        encoding="utf-8",
    )
    install.enable_in_kritarc(kritarc)
    config = configparser.RawConfigParser(interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign]
    config.read(kritarc, encoding="utf-8")
    assert config.sections() == ["General", "python", "MainWindow"]
    assert dict(config["General"]) == {"LastPreferenceSection": "7", "ShowRootLayer": "false", "colorsettings": "%23ff0000"}
    assert dict(config["python"]) == {"enable_assignprofiledialog": "true", "enable_img2img_bridge": "true"}
    assert config["MainWindow"]["State"] == "@ByteArray(AAA:BBB=)"
    assert "enable_img2img_bridge=true" in kritarc.read_text(encoding="utf-8").splitlines()


def test_enable_in_kritarc_creates_the_file_and_is_idempotent(tmp_path: Path) -> None:
    kritarc = tmp_path / "new" / "kritarc"
    install.enable_in_kritarc(kritarc)
    install.enable_in_kritarc(kritarc)
    assert kritarc.read_text(encoding="utf-8").split() == ["[python]", "enable_img2img_bridge=true"]


def test_enable_in_a_kritarc_that_krita_already_wrote(tmp_path: Path) -> None:
    # Krita writes keys before its first group, which configparser refuses
    kritarc = tmp_path / "kritarc"
    kritarc.write_text("ArtColorSel.Angle=0\nBackgroundColorForNewImage=255,255,255\n\n[python]\nenable_other=true\n")
    install.enable_in_kritarc(kritarc)
    install.enable_in_kritarc(kritarc)
    lines = kritarc.read_text().splitlines()
    assert lines[:2] == ["ArtColorSel.Angle=0", "BackgroundColorForNewImage=255,255,255"]
    assert lines.count("enable_img2img_bridge=true") == 1
    assert "enable_other=true" in lines
