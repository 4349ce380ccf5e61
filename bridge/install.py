"""``img2img-bridge install-plugins``: copy the plug-ins and what they need into the editors' folders.

The editors' Pythons have no pip, so each plug-in gets a ``vendor/`` folder
holding the client library (``bridge/__init__.py``, ``protocol.py``, ``wire.py``, ``presets.py``,
``client.py``, ``regions.py``) and pure-Python copies of websockets and
msgpack, taken from this environment without their C speedups.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

PLUGIN_NAME = "img2img_bridge"
CLIENT_MODULES = ("__init__.py", "protocol.py", "wire.py", "client.py", "regions.py", "presets.py", "history.py")
VENDORED_PACKAGES = ("websockets", "msgpack")


class InstallError(Exception):
    pass


@dataclass(frozen=True)
class Installed:
    host: str
    path: Path
    enabled: bool = False


def plugins_source() -> Path:
    """The ``plugins/`` folder of this checkout."""
    source = Path(__file__).resolve().parent.parent / "plugins"
    if not (source / "gimp").is_dir() or not (source / "krita").is_dir():
        raise InstallError(f"the plug-in sources are not at {source}; install the bridge from a checkout (pip install -e .)")
    return source


def gimp_plugins_dir(home: Path | None = None) -> Path:
    """GIMP 3's user plug-in folder for this platform (Flatpak when only that one exists)."""
    home = home or Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "GIMP" / "3.0" / "plug-ins"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"
    native = Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "GIMP" / "3.0"
    flatpak = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"
    if flatpak.is_dir() and not native.is_dir():
        return flatpak / "plug-ins"
    return native / "plug-ins"


def krita_pykrita_dir(home: Path | None = None) -> Path:
    """Krita's user pykrita folder for this platform (Flatpak when only that one exists)."""
    home = home or Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "krita" / "pykrita"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "krita" / "pykrita"
    native = Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share")) / "krita"
    flatpak = home / ".var" / "app" / "org.kde.krita" / "data" / "krita"
    if flatpak.is_dir() and not native.is_dir():
        return flatpak / "pykrita"
    return native / "pykrita"


def kritarc_path(home: Path | None = None) -> Path:
    home = home or Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local")) / "kritarc"
    if sys.platform == "darwin":
        return home / "Library" / "Preferences" / "kritarc"
    return Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "kritarc"


def write_vendor(dest: Path) -> None:
    """Fill ``dest`` with the client library and pure-Python websockets and msgpack."""
    if dest.exists():
        shutil.rmtree(dest)
    bridge_dest = dest / "bridge"
    bridge_dest.mkdir(parents=True)
    here = Path(__file__).resolve().parent
    for name in CLIENT_MODULES:
        shutil.copy2(here / name, bridge_dest / name)
    for package in VENDORED_PACKAGES:
        module = __import__(package)
        source = Path(module.__file__ or "").parent
        shutil.copytree(source, dest / package, ignore=_skip_compiled)


def _skip_compiled(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith((".so", ".pyd", ".dll", ".dylib", ".c", ".pyx", ".h"))}


def install_gimp(dest: Path | None = None) -> Installed:
    """Copy ``plugins/gimp/img2img_bridge`` into GIMP's plug-in folder, with its vendor folder."""
    source = plugins_source() / "gimp" / PLUGIN_NAME
    target = (dest or gimp_plugins_dir()) / PLUGIN_NAME
    _copy_plugin(source, target)
    entry = target / f"{PLUGIN_NAME}.py"
    entry.chmod(0o755)
    return Installed("GIMP", target)


def install_krita(dest: Path | None = None, *, enable: bool = False, kritarc: Path | None = None) -> Installed:
    """Copy the pykrita plug-in (``.desktop`` + package) and its vendor folder; optionally enable it in kritarc."""
    source = plugins_source() / "krita"
    pykrita = dest or krita_pykrita_dir()
    pykrita.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / f"{PLUGIN_NAME}.desktop", pykrita / f"{PLUGIN_NAME}.desktop")
    _copy_plugin(source / PLUGIN_NAME, pykrita / PLUGIN_NAME)
    if enable:
        enable_in_kritarc(kritarc or kritarc_path())
    return Installed("Krita", pykrita / PLUGIN_NAME, enabled=enable)


def enable_in_kritarc(path: Path) -> None:
    """Set ``[python] enable_img2img_bridge=true``; Krita rewrites kritarc on exit, so do it while Krita is closed."""
    set_kritarc_value(path, "python", f"enable_{PLUGIN_NAME}", "true")


def set_kritarc_value(path: Path, group: str, key: str, value: str) -> None:
    """Set one key, line by line: Krita writes keys before the first group, which configparser refuses."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    header = f"[{group}]"
    if header not in lines:
        lines += ([""] if lines else []) + [header, f"{key}={value}"]
    else:
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        found = next((i for i in range(start, end) if lines[i].split("=", 1)[0].strip() == key), None)
        if found is None:
            lines.insert(start, f"{key}={value}")
        else:
            lines[found] = f"{key}={value}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _copy_plugin(source: Path, target: Path) -> None:
    if not source.is_dir():
        raise InstallError(f"plug-in source {source} is missing")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_vendor(target / "vendor")
