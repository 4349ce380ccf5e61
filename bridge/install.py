"""``img2img-bridge install-plugins`` / ``package-plugins``: put the plug-ins, with what they need, where the editors look.

The editors' Pythons have no pip, so each plug-in carries the editor side of the
bridge: the ``bridge/editor`` package, copied whole (every module in it is
editor-side) under the plug-in's private name ``_bridge``, with pure-Python
copies of websockets and msgpack in ``_bridge/_vendor/``. Nothing becomes a
top-level module in the editor's interpreter, which Krita shares between plug-ins.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path

PLUGIN_NAME = "img2img_bridge"
#: the editor package's name inside each plug-in: ``img2img_bridge._bridge`` (Krita), ``img2img_gimp._bridge`` (GIMP)
PRIVATE_PACKAGE = "_bridge"
EDITOR_PACKAGE = Path(__file__).resolve().parent / "editor"


@dataclass(frozen=True)
class Vendored:
    """A pure-Python package the plug-ins carry: its exact version, and the folders and modules the client never loads."""

    name: str
    version: str
    unused: tuple[str, ...] = ()


# exact versions, so that every install carries the code the tests ran; pyproject.toml pins the same ones
VENDORED = (
    Vendored(
        "websockets",
        "16.1.1",
        unused=("asyncio", "legacy", "__main__.py", "cli.py", "auth.py", "connection.py", "server.py", "sync/server.py", "sync/router.py"),
    ),
    Vendored("msgpack", "1.2.4"),
)
_COMPILED = (".so", ".pyd", ".dll", ".dylib", ".c", ".pyx", ".h", ".pyc")


class InstallError(Exception):
    pass


@dataclass(frozen=True)
class Installed:
    host: str
    path: Path
    enabled: bool = False
    kritarc: Path | None = None


def plugins_source() -> Path:
    """The plug-ins' sources: ``bridge/plugins`` in an installed wheel, ``plugins/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for source in (here / "plugins", here.parent / "plugins"):
        if (source / "gimp").is_dir() and (source / "krita").is_dir():
            return source
    raise InstallError(f"the plug-in sources are in neither {here / 'plugins'} nor {here.parent / 'plugins'}; reinstall img2img-bridge")


def gimp_plugins_dir(home: Path | None = None) -> Path:
    """GIMP 3's user plug-in folder for this platform (Flatpak when only that one exists).

    Each GIMP 3 minor release has its own configuration folder (``GIMP/3.0``, ``GIMP/3.2``) and copies the newest
    older one only on its first start: the plug-in goes into that of the newest GIMP that has run (3.0's when none has).
    """
    home = home or Path.home()
    if sys.platform == "win32":
        return _newest_gimp_config(Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "GIMP") / "plug-ins"
    if sys.platform == "darwin":
        return _newest_gimp_config(home / "Library" / "Application Support" / "GIMP") / "plug-ins"
    native = _newest_gimp_config(Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "GIMP")
    flatpak = _newest_gimp_config(home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP")
    if flatpak.is_dir() and not native.is_dir():
        return flatpak / "plug-ins"
    return native / "plug-ins"


def _newest_gimp_config(parent: Path) -> Path:
    minors = [int(d.name[2:]) for d in parent.glob("3.*") if d.name[2:].isdigit() and d.is_dir()]
    return parent / f"3.{max(minors, default=0)}"


_KRITA_FLATPAK = Path(".var") / "app" / "org.kde.krita"


def krita_pykrita_dir(home: Path | None = None) -> Path:
    """Krita's user pykrita folder for this platform (Flatpak when only that one exists)."""
    home = home or Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "krita" / "pykrita"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "krita" / "pykrita"
    native = Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share")) / "krita"
    flatpak = home / _KRITA_FLATPAK / "data" / "krita"
    if flatpak.is_dir() and not native.is_dir():
        return flatpak / "pykrita"
    return native / "pykrita"


def kritarc_path(home: Path | None = None, pykrita: Path | None = None) -> Path:
    """The kritarc of the Krita that reads ``pykrita``: a Flatpak Krita keeps its own under ``~/.var/app``."""
    home = home or Path.home()
    pykrita = pykrita or krita_pykrita_dir(home)
    parts = pykrita.parts
    for index in range(len(parts) - 2):
        if parts[index : index + 3] == _KRITA_FLATPAK.parts:
            return Path(*parts[: index + 3]) / "config" / "kritarc"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local")) / "kritarc"
    if sys.platform == "darwin":
        return home / "Library" / "Preferences" / "kritarc"
    return Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "kritarc"


def write_editor_package(dest: Path) -> None:
    """Copy ``bridge/editor`` whole to the package folder ``dest``, with its pinned websockets and msgpack in ``_vendor/``."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(EDITOR_PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_vendor"))
    for package in VENDORED:
        _copy_vendored(package, dest / "_vendor" / package.name)
    (dest / "_vendor" / "__init__.py").write_text(
        '"""Pinned pure-Python websockets and msgpack: see ``dependencies``."""\n', encoding="utf-8"
    )


def _copy_vendored(package: Vendored, dest: Path) -> None:
    try:
        found = metadata.version(package.name)
    except metadata.PackageNotFoundError:
        found = None
    if found != package.version:
        raise InstallError(
            f"the plug-ins carry {package.name} {package.version}, but this environment has {found or 'none'}: "
            f"pip install '{package.name}=={package.version}'"
        )
    source = Path(import_module(package.name).__file__ or "").parent
    unused = {source / name for name in package.unused}

    def skip(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__" or n.endswith(_COMPILED) or Path(folder) / n in unused}

    shutil.copytree(source, dest, ignore=skip)


def install_gimp(dest: Path | None = None) -> Installed:
    """Copy the GIMP plug-in folder into GIMP's plug-ins folder, the editor package inside it."""
    target = (dest or gimp_plugins_dir()) / PLUGIN_NAME
    write_gimp_plugin(target)
    return Installed("GIMP", target)


def write_gimp_plugin(target: Path) -> None:
    _copy_plugin(plugins_source() / "gimp" / PLUGIN_NAME, target)
    write_editor_package(target / "img2img_gimp" / PRIVATE_PACKAGE)
    (target / f"{PLUGIN_NAME}.py").chmod(0o755)


def install_krita(dest: Path | None = None, *, enable: bool = False, kritarc: Path | None = None) -> Installed:
    """Copy the pykrita plug-in (``.desktop`` + package, the editor package inside); optionally enable it in kritarc."""
    pykrita = dest or krita_pykrita_dir()
    write_krita_plugin(pykrita)
    rc = kritarc or kritarc_path(pykrita=pykrita)
    if enable:
        enable_in_kritarc(rc)
    return Installed("Krita", pykrita / PLUGIN_NAME, enabled=enable, kritarc=rc if enable else None)


def write_krita_plugin(pykrita: Path) -> None:
    source = plugins_source() / "krita"
    pykrita.mkdir(parents=True, exist_ok=True)
    desktop = source / f"{PLUGIN_NAME}.desktop"
    if not desktop.is_file():
        raise InstallError(f"plug-in source {desktop} is missing")
    shutil.copy2(desktop, pykrita / desktop.name)
    _copy_plugin(source / PLUGIN_NAME, pykrita / PLUGIN_NAME)
    write_editor_package(pykrita / PLUGIN_NAME / PRIVATE_PACKAGE)


def package_plugins(dest: Path) -> list[Path]:
    """Write ``img2img_bridge-krita.zip`` (for Tools ▸ Scripts ▸ Import Python Plugin from File) and ``img2img_bridge-gimp.zip``.

    The Krita zip holds the ``.desktop`` file and the package folder at its root, as Krita's importer wants; the
    GIMP zip holds the ``img2img_bridge`` folder, to unpack into GIMP's plug-ins folder.
    """
    from tempfile import TemporaryDirectory

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with TemporaryDirectory() as scratch:
        krita, gimp = Path(scratch) / "krita", Path(scratch) / "gimp"
        write_krita_plugin(krita)
        write_gimp_plugin(gimp / PLUGIN_NAME)
        for host, root in (("krita", krita), ("gimp", gimp)):
            archive = dest / f"{PLUGIN_NAME}-{host}.zip"
            _zip(root, archive)
            written.append(archive)
    return written


def _zip(root: Path, archive: Path) -> None:
    # folders get entries of their own: Krita's importer finds the package by its "img2img_bridge/" entry
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(root.rglob("*")):
            info = zipfile.ZipInfo.from_file(path, path.relative_to(root).as_posix())
            if path.is_dir():
                out.writestr(info, b"")
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(info, path.read_bytes())


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
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", PRIVATE_PACKAGE))
