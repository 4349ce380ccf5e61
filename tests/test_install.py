from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import msgpack
import pytest

from bridge import install

EDITOR_SOURCE = install.EDITOR_PACKAGE
COMPILED_SUFFIXES = (".so", ".pyd", ".dll", ".dylib", ".pyc")

# what Krita's Python 3.10 runs: nothing from site-packages, the pykrita folder on the path, the plug-in imported
VENDOR_CHECK = """
import json, sys
sys.path[:] = [p for p in sys.path if "site-packages" not in p and "dist-packages" not in p] + [sys.argv[1]]
before = set(sys.modules)
import img2img_bridge.runner
from img2img_bridge._bridge import client, dependencies, protocol as p
frame = p.encode(p.Queued(job_id="j", position=3))
client._speed_up_pure_websockets()
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "files": [m.__file__ for m in (client, dependencies.msgpack, dependencies.websockets_client)],
    "names": [m.__name__ for m in (dependencies.msgpack, dependencies.websockets_client)],
    "top_level": sorted({name.split(".")[0] for name in set(sys.modules) - before} - set(sys.stdlib_module_names)),
    "msgpack_version": list(dependencies.msgpack.version),
    "packer_module": dependencies.msgpack.Packer.__module__,
    "apply_mask": dependencies.websockets_frames.apply_mask.__module__,
    "stream_reader": dependencies.websockets_protocol.StreamReader.__module__,
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


def check_editor_package(package: Path) -> None:
    """``package`` is the whole of bridge/editor, with pinned pure-Python websockets and msgpack in ``_vendor``."""
    modules = sorted(p.name for p in EDITOR_SOURCE.glob("*.py"))
    assert sorted(p.name for p in package.glob("*.py")) == modules
    assert "protocol.py" in modules and "client.py" in modules
    for name in modules:
        assert (package / name).read_bytes() == (EDITOR_SOURCE / name).read_bytes()
    vendor = package / "_vendor"
    assert sorted(p.name for p in vendor.iterdir() if p.is_dir()) == sorted(v.name for v in install.VENDORED)
    compiled = [p for p in package.rglob("*") if p.name == "__pycache__" or p.suffix in COMPILED_SUFFIXES]
    assert compiled == []
    assert (vendor / "msgpack" / "fallback.py").is_file()
    assert (vendor / "websockets" / "sync" / "client.py").is_file()
    # only what the client loads: no servers, no asyncio or legacy implementations
    assert not (vendor / "websockets" / "asyncio").exists()
    assert not (vendor / "websockets" / "legacy").exists()
    assert not (vendor / "websockets" / "sync" / "server.py").exists()


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
    check_editor_package(target / "img2img_gimp" / install.PRIVATE_PACKAGE)


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
    check_editor_package(pykrita / install.PLUGIN_NAME / install.PRIVATE_PACKAGE)
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
    package = dest / install.PLUGIN_NAME / "img2img_gimp" / install.PRIVATE_PACKAGE
    (package / "_vendor" / "msgpack" / "_cmsgpack.so").write_bytes(b"\x7fELF")
    install.install_gimp(dest)
    assert not stale.exists()
    check_editor_package(package)


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


def test_the_installed_plugin_imports_its_own_copies_in_python_3_10_and_adds_no_top_level_name(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYENV_VERSION"] = "3.10.13"
    python = shutil.which("python3.10", path=env.get("PATH"))
    if python is None or subprocess.run([python, "--version"], env=env, capture_output=True).returncode != 0:
        pytest.skip("python3.10 (pyenv 3.10.13) is not installed")
    pykrita = tmp_path / "pykrita"
    install.write_krita_plugin(pykrita)
    done = subprocess.run([python, "-I", "-c", VENDOR_CHECK, str(pykrita)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["python"] == [3, 10]
    assert all(path.startswith(str(pykrita / install.PLUGIN_NAME / install.PRIVATE_PACKAGE)) for path in report["files"])
    assert report["names"] == ["img2img_bridge._bridge._vendor.msgpack", "img2img_bridge._bridge._vendor.websockets.sync.client"]
    assert report["top_level"] == ["img2img_bridge"]
    assert report["msgpack_version"] == list(msgpack.version)
    assert report["packer_module"] == "img2img_bridge._bridge._vendor.msgpack.fallback"
    # the faster mask and frame reader went into the private copy only
    assert report["apply_mask"] == report["stream_reader"] == "img2img_bridge._bridge.client"
    assert report["round_trip"] is True


def test_the_environments_websockets_is_never_patched() -> None:
    import websockets.frames
    import websockets.protocol

    from bridge.editor import client

    before = websockets.frames.apply_mask, websockets.protocol.StreamReader
    client._speed_up_pure_websockets()
    assert (websockets.frames.apply_mask, websockets.protocol.StreamReader) == before


def test_a_vendored_package_of_another_version_is_an_install_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "VENDORED", (install.Vendored("msgpack", "0.0.1"),))
    with pytest.raises(install.InstallError, match=r"msgpack 0\.0\.1.*pip install 'msgpack==0\.0\.1'"):
        install.write_editor_package(tmp_path / "_bridge")


def test_the_pins_match_pyproject() -> None:
    import tomllib

    pyproject = tomllib.loads((EDITOR_SOURCE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    for package in install.VENDORED:
        assert f"{package.name}=={package.version}" in pyproject["project"]["dependencies"]


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


def test_a_flatpak_kritas_kritarc_is_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.sys, "platform", "linux")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    flatpak = tmp_path / ".var" / "app" / "org.kde.krita"
    (flatpak / "data" / "krita").mkdir(parents=True)
    assert install.krita_pykrita_dir(tmp_path) == flatpak / "data" / "krita" / "pykrita"
    assert install.kritarc_path(tmp_path) == flatpak / "config" / "kritarc"
    assert install.kritarc_path(tmp_path, pykrita=tmp_path / ".local" / "share" / "krita" / "pykrita") == tmp_path / ".config" / "kritarc"


def test_enable_edits_the_kritarc_of_the_krita_it_installed_into(fake_plugins: Path, tmp_path: Path) -> None:
    pykrita = tmp_path / ".var" / "app" / "org.kde.krita" / "data" / "krita" / "pykrita"
    installed = install.install_krita(pykrita, enable=True)
    kritarc = tmp_path / ".var" / "app" / "org.kde.krita" / "config" / "kritarc"
    assert installed.kritarc == kritarc
    assert "enable_img2img_bridge=true" in kritarc.read_text(encoding="utf-8").splitlines()


def test_package_plugins_writes_a_krita_zip_with_the_desktop_file_and_package_at_its_root(tmp_path: Path) -> None:
    krita_zip, gimp_zip = install.package_plugins(tmp_path / "dist")
    with zipfile.ZipFile(krita_zip) as archive:
        names = archive.namelist()
    roots = {name.split("/")[0] for name in names}
    assert roots == {f"{install.PLUGIN_NAME}.desktop", install.PLUGIN_NAME}
    # what Krita's importer looks for: the .desktop's X-KDE-Library, a folder entry of that name, its __init__.py
    assert f"{install.PLUGIN_NAME}/" in names
    assert f"{install.PLUGIN_NAME}/__init__.py" in names
    assert f"{install.PLUGIN_NAME}/{install.PRIVATE_PACKAGE}/_vendor/websockets/sync/client.py" in names
    with zipfile.ZipFile(gimp_zip) as archive:
        entry = archive.getinfo(f"{install.PLUGIN_NAME}/{install.PLUGIN_NAME}.py")
        names = archive.namelist()
    assert entry.external_attr >> 16 & stat.S_IXUSR
    assert f"{install.PLUGIN_NAME}/img2img_gimp/{install.PRIVATE_PACKAGE}/protocol.py" in names
