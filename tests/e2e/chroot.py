"""Debian chroots with real GIMP and Krita for end-to-end tests, one per set of editor versions.

``VARIANTS``: trixie (GIMP 3.0.4, Krita 5.2.9), sid (GIMP 3.2.6, Krita 5.3.4) and
experimental (Krita 6.0.4 on PyQt6, over a sid base); ``EDITORS`` is the test
matrix drawn from them.  Each chroot is built once with ``debootstrap`` +
``apt-get``, packed into a zstd tarball in a cache directory outside the
repository and unpacked next to it.  Later sessions reuse the unpacked tree, or
restore it from the tarball.  ``python3 tests/e2e/chroot.py build [VARIANT...]``
builds them ahead of a test run.

Everything here needs root (``chroot``, ``mount``); :func:`skip_reason` tells
why the harness cannot run on this machine.  See ``docs/e2e.md``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.editor.shm import alive
from bridge.install import set_kritarc_value

# Packages installed (with --no-install-recommends) on top of minbase.
# Deliberately absent: python3-websockets, python3-msgpack,
# python3-pyqt5.qtwebsockets -- the plug-ins must work without them.
PACKAGES: tuple[str, ...] = (
    "gimp",
    "python3",
    "krita",
    "python3-pyqt5",
    "xvfb",
    "xauth",
)
# Bump when the build steps change so that old caches are not reused.
RECIPE_VERSION = 1
# sid's and experimental's Release files, as reached from here, carry an expired Valid-Until
NO_VALID_UNTIL = ("Acquire::Check-Valid-Until=false",)


@dataclass(frozen=True)
class Variant:
    """One cached chroot: a Debian suite, optionally a second suite apt prefers, and the packages installed.

    ``editors`` maps each editor package to the upstream version the suite is known to hold; the tests assert
    it (``installed_versions``), so a suite that moved on fails loudly instead of testing something else.
    """

    name: str
    suite: str
    packages: tuple[str, ...]
    editors: tuple[tuple[str, str], ...]
    prefer: str | None = None  # added to sources.list; its packages win (apt-get -t)
    apt_options: tuple[str, ...] = ()

    def key_spec(self) -> dict[str, object]:
        spec: dict[str, object] = {
            "suite": self.suite,
            "variant": "minbase",
            "packages": sorted(self.packages),
            "recipe": RECIPE_VERSION,
        }
        # only where set, so that the trixie chroot keeps the key (and the cache) it had before variants
        if self.prefer:
            spec["prefer"] = self.prefer
        if self.apt_options:
            spec["apt_options"] = list(self.apt_options)
        return spec


TRIXIE = Variant("trixie", "trixie", PACKAGES, (("gimp", "3.0.4"), ("krita", "5.2.9")))
SID = Variant(
    "sid",
    "sid",
    ("gimp", "python3", "krita", "python3-pyqt5", "xvfb", "xauth"),
    (("gimp", "3.2.6"), ("krita", "5.3.4")),
    apt_options=NO_VALID_UNTIL,
)
# Krita 6 (Qt 6, PyQt6) is only in experimental; no GIMP there (sid's is the one tested)
EXPERIMENTAL = Variant(
    "experimental",
    "sid",
    ("python3", "krita", "python3-pyqt6", "xvfb", "xauth"),
    (("krita", "6.0.4"),),
    prefer="experimental",
    apt_options=NO_VALID_UNTIL,
)
VARIANTS: tuple[Variant, ...] = (TRIXIE, SID, EXPERIMENTAL)


@dataclass(frozen=True)
class Editor:
    """One editor version of the matrix and the chroot it runs in."""

    app: str  # "gimp" or "krita", the Debian package
    version: str  # upstream version, e.g. "3.0.4"
    variant: Variant

    @property
    def id(self) -> str:
        return f"{self.app}-{self.version}"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def matches(self, found: str | None) -> bool:
        """Whether a version the editor or dpkg reports is this one (a re-spin such as 5.3.4.1 is 5.3.4)."""
        return found is not None and (found == self.version or found.startswith(self.version + "."))


EDITORS: tuple[Editor, ...] = tuple(Editor(app, version, v) for v in VARIANTS for app, version in v.editors)


def editors(app: str) -> list[Editor]:
    return [e for e in EDITORS if e.app == app]


CACHE_ENV = "IMG2IMG_E2E_CACHE"
MIRROR_ENV = "IMG2IMG_E2E_MIRROR"  # optional Debian mirror URL for debootstrap
DEFAULT_CACHE = Path("/var/cache/img2img-bridge-e2e")

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_MARKER = ".img2img-e2e-ready"
_STATE_DIR = ".img2img-e2e"  # mount bookkeeping inside the chroot (not packed)

GIMP_CONSOLE = "gimp-console-3"  # gimp-console-3.0 in GIMP 3.0, gimp-console-3.2 in 3.2
PYKRITA_DIR = ".local/share/krita/pykrita"  # relative to HOME


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not after fork
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when we die (PR_SET_PDEATHSIG).

    Otherwise a tar or apt-get orphaned by a killed pytest keeps writing into
    a directory that the next run is about to remove.
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _log(msg: str) -> None:
    print(f"[e2e-chroot] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# cache location and key


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def cache_key(variant: Variant = TRIXIE) -> str:
    return hashlib.sha256(json.dumps(variant.key_spec(), sort_keys=True).encode()).hexdigest()[:16]


def chroot_dir(variant: Variant = TRIXIE) -> Path:
    """Where the ready (unpacked) chroot lives."""
    return cache_dir() / f"root-{variant.name}-{cache_key(variant)}"


def tarball_path(variant: Variant = TRIXIE) -> Path:
    return cache_dir() / f"{variant.name}-{cache_key(variant)}.tar.zst"


def _base_key(suite: str) -> str:
    spec = {"suite": suite, "variant": "minbase", "recipe": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def base_tarball_path(suite: str) -> Path:
    """The packed debootstrap of ``suite``, shared by the variants built on it."""
    return cache_dir() / f"base-{suite}-{_base_key(suite)}.tar.zst"


def _shares_base(variant: Variant) -> bool:
    return sum(v.suite == variant.suite for v in VARIANTS) > 1


def _is_ready(root: Path, variant: Variant = TRIXIE) -> bool:
    try:
        return (root / READY_MARKER).read_text().strip() == cache_key(variant)
    except OSError:
        return False


def is_ready(variant: Variant) -> bool:
    """Whether the variant's chroot is unpacked and complete (nothing to build or restore)."""
    return _is_ready(chroot_dir(variant), variant)


def host_path(root: Path, inside: str) -> Path:
    """Host path of the absolute path ``inside`` of the chroot."""
    if not inside.startswith("/"):
        raise ValueError(f"not an absolute chroot path: {inside!r}")
    return root / inside.lstrip("/")


# --------------------------------------------------------------------------
# skip logic


def skip_reason(variant: Variant = TRIXIE) -> str | None:
    """Why the e2e harness cannot run here (for ``variant``), or None when it can."""
    if not sys.platform.startswith("linux"):
        return "e2e chroot needs Linux"
    if os.geteuid() != 0:
        return "e2e chroot needs root (chroot, mount)"
    for tool in ("chroot", "mount", "umount", "tar"):
        if shutil.which(tool) is None:
            return f"e2e chroot needs {tool!r} on the host"
    if _is_ready(chroot_dir(variant), variant):
        return None
    if shutil.which("zstd") is None:
        return "e2e chroot needs zstd on the host (cache tarball)"
    if tarball_path(variant).is_file():
        return None
    if shutil.which("debootstrap") is None:
        return f"no debootstrap on the host and no cached chroot in {cache_dir()}"
    return None


# --------------------------------------------------------------------------
# locking and safe removal


@contextlib.contextmanager
def _flock(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for {what} lock {path} (held by another process)")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _unescape_mountinfo(field: str) -> str:
    for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(esc, ch)
    return field


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    base = os.path.realpath(root)
    found: list[str] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = _unescape_mountinfo(line.split()[4])
            if mp == base or mp.startswith(base.rstrip("/") + "/"):
                found.append(mp)
    # unmount children before parents; later (stacked) mounts first
    order = sorted(enumerate(found), key=lambda t: (t[1].count("/"), t[0]), reverse=True)
    return [mp for _, mp in order]


def _umount_all(root: Path) -> None:
    for _ in range(8):
        mps = mounts_under(root)
        if not mps:
            return
        for mp in mps:
            if subprocess.run(["umount", mp], check=False, capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
    left = mounts_under(root)
    if left:
        raise RuntimeError(f"cannot unmount {left}")


def safe_rmtree(path: Path) -> None:
    """rm -rf that never descends into a mount (e.g. a bound host /dev)."""
    if not path.exists():
        return
    _kill_processes_in(path)
    _umount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def _kill_processes_in(root: Path) -> None:
    """SIGKILL every process whose root directory is ``root``."""
    target = os.path.realpath(root)
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.readlink(f"/proc/{entry}/root") == target:
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            continue


# --------------------------------------------------------------------------
# mounts


_mount_guard = threading.Lock()
_mount_depth: dict[str, int] = {}


def _live_users(users: Path) -> list[int]:
    live: list[int] = []
    for f in users.glob("*"):
        try:
            pid = int(f.name)
        except ValueError:
            continue
        if pid != os.getpid() and alive(pid):
            live.append(pid)
        elif pid != os.getpid():
            f.unlink(missing_ok=True)
    return live


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)} failed: {proc.stderr.strip()}")


def _do_mount(root: Path) -> None:
    (root / "tmp").mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    _mount("-t", "proc", "proc", str(root / "proc"))
    # Private right away, so nothing mounted/unmounted below propagates
    # back to the host's /dev on hosts with shared mount propagation.
    _mount("--bind", "/dev", str(root / "dev"))
    _mount("--make-private", str(root / "dev"))
    _mount("--bind", "/dev/pts", str(root / "dev/pts"))
    _mount("--make-private", str(root / "dev/pts"))
    # A fresh tmpfs rather than the host's /dev/shm (POSIX shm for Qt/X).
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", str(root / "dev/shm"))


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[Path]:
    """Mount /proc, /dev, /dev/pts and a /dev/shm tmpfs into ``root``.

    Re-entrant within a process (only the outermost level mounts) and shared
    between processes: a per-chroot registry of user pids decides who mounts
    and who unmounts.  Mounts left by a killed run (no live user) are
    removed before mounting again.  Always unmounts on exit, including on
    KeyboardInterrupt.
    """
    root = Path(os.path.realpath(root))
    key = str(root)
    state = root / _STATE_DIR
    users = state / "users"
    me = users / str(os.getpid())
    with _mount_guard:
        depth = _mount_depth.get(key, 0)
        if depth == 0:
            users.mkdir(parents=True, exist_ok=True)
            with _flock(state / "mount.lock", "mount"):
                if not _live_users(users):
                    # leftovers of a killed run: its processes, its mounts
                    _kill_processes_in(root)
                    _umount_all(root)
                    try:
                        _do_mount(root)
                    except BaseException:
                        _umount_all(root)
                        raise
                me.touch()
        _mount_depth[key] = depth + 1
    try:
        yield root
    finally:
        with _mount_guard:
            depth = _mount_depth[key] - 1
            _mount_depth[key] = depth
            if depth == 0:
                del _mount_depth[key]
                with _flock(state / "mount.lock", "mount"):
                    me.unlink(missing_ok=True)
                    if not _live_users(users):
                        _kill_processes_in(root)
                        _umount_all(root)


# --------------------------------------------------------------------------
# running things


class ChrootResult(subprocess.CompletedProcess[str]):
    """A CompletedProcess that also says whether it was killed on timeout."""

    def __init__(
        self,
        args: Sequence[str],
        returncode: int,
        stdout: str,
        stderr: str,
        timed_out: bool,
    ) -> None:
        super().__init__(list(args), returncode, stdout, stderr)
        self.timed_out = timed_out

    def describe(self) -> str:
        """Exit status plus output, for assertion messages."""
        return (
            f"argv={self.args!r} rc={self.returncode} timed_out={self.timed_out}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure the rest of the group is too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def _spawn(
    cmd: Sequence[str],
    *,
    timeout: float,
    done_file: Path | None = None,
    grace: float = 20.0,
) -> ChrootResult:
    """Run ``cmd`` in its own process group, output going to temp files.

    Temp files (not pipes) so that a stray grandchild holding stdout open
    cannot hang us.  With ``done_file``, once that file appears the process
    gets ``grace`` seconds to exit by itself before it is killed.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        timed_out = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                try:
                    proc.wait(timeout=min(left, 0.2) if done_file else left)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if done_file is not None and done_file.exists():
                    deadline = min(deadline, time.monotonic() + grace)
                    done_file = None
        finally:
            # also on KeyboardInterrupt; harmless when already exited
            _kill_group(proc)
        rc = proc.wait()
        out.seek(0)
        err.seek(0)
        return ChrootResult(
            cmd,
            rc,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            timed_out,
        )


def ensure_home(root: Path, home: str) -> Path:
    """Create ``home`` (a chroot path), its XDG_RUNTIME_DIR and TMPDIR.

    Returns the host path of ``home``.
    """
    h = host_path(root, home)
    h.mkdir(parents=True, exist_ok=True)
    for sub in (".xdg-runtime", ".tmp"):
        (h / sub).mkdir(mode=0o700, exist_ok=True)
        os.chmod(h / sub, 0o700)
    return h


def base_env(home: str) -> dict[str, str]:
    """The clean environment every chroot command starts from."""
    h = home.rstrip("/")
    return {
        "HOME": home,
        "PATH": CHROOT_PATH,
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": f"{h}/.xdg-runtime",
        # GIMP/Qt/xvfb-run temp files stay in this HOME, not the shared /tmp
        "TMPDIR": f"{h}/.tmp",
    }


def run_in_chroot(
    root: Path,
    argv: Sequence[str],
    *,
    home: str,
    env: Mapping[str, str] | None = None,
    timeout: float,
    cwd: str | None = None,
    done_file: str | None = None,
    grace: float = 20.0,
) -> ChrootResult:
    """Run ``argv`` inside the chroot with a clean environment.

    The environment is :func:`base_env` (HOME, PATH, LANG=C.UTF-8,
    XDG_RUNTIME_DIR, TMPDIR) updated with ``env``.
    ``home`` and ``cwd`` (default: ``home``) are chroot paths.  On timeout the
    whole process group is killed and ``timed_out`` is set on the result.
    With ``done_file`` (chroot path), once that file exists the process gets
    ``grace`` more seconds to exit by itself before it is killed.
    """
    ensure_home(root, home)
    full_env = base_env(home)
    full_env.update(env or {})
    for k in full_env:
        if not k or "=" in k:
            raise ValueError(f"bad environment variable name {k!r}")
    cmd = [
        "chroot",
        str(root),
        "/usr/bin/env",
        "-i",
        f"--chdir={cwd or home}",
        *(f"{k}={v}" for k, v in full_env.items()),
        *argv,
    ]
    done = host_path(root, done_file) if done_file else None
    with mounted(root):
        return _spawn(cmd, timeout=timeout, done_file=done, grace=grace)


def gimp_batch(
    root: Path,
    script: str,
    *,
    home: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    display: bool = False,
) -> ChrootResult:
    """Run the Python file ``script`` (chroot path) in headless GIMP (``gimp-console-3``, any 3.x).

    The script runs in python-fu-eval's globals (Gimp, Gegl, Babl, GLib, Gio,
    GObject in scope).  An uncaught exception makes GIMP exit non-zero (64)
    with the traceback (with the script's file name) on stderr.
    With ``display``, GIMP runs under Xvfb, so plug-ins can open their dialogs.
    """
    code = f"exec(compile(open({script!r}).read(), {script!r}, 'exec'))"
    argv = [
        *(xvfb(root) if display else ()),
        GIMP_CONSOLE,
        "-i",
        "--batch-interpreter",
        "python-fu-eval",
        "-b",
        code,
        "--quit",
    ]
    return run_in_chroot(root, argv, home=home, env=env, timeout=timeout)


# Krita's ``krita`` package does ``import excepthook; excepthook.install()``,
# whose hook shows a *modal dialog* for every uncaught Python exception (in a
# slot, in Extension.setup(), ...) and prints nothing: a headless run just
# hangs.  This sitecustomize (found via PYTHONPATH) pre-registers a stand-in
# ``excepthook`` module that prints the traceback to stderr and appends it to
# $E2E_PY_ERRORS instead.
_KRITA_HOOK = """\
import os, sys, traceback, types


def on_error(exc_type, exc, tb):
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write("E2E-PYTHON-ERROR\\n" + text)
    sys.stderr.flush()
    path = os.environ.get("E2E_PY_ERRORS")
    if path:
        with open(path, "a") as fh:
            fh.write(text + "\\n")


def show_current_error(title=None):
    on_error(*sys.exc_info())


_mod = types.ModuleType("excepthook")
_mod.on_error = on_error
_mod.show_current_error = show_current_error
_mod.install = lambda: setattr(sys, "excepthook", on_error)
_mod.uninstall = lambda: setattr(sys, "excepthook", sys.__excepthook__)
sys.modules["excepthook"] = _mod
"""
KRITA_HOOK_DIR = ".e2e-krita-hook"  # relative to HOME
KRITA_ERRORS = ".e2e-python-errors.log"  # relative to HOME


def krita_gui(
    root: Path,
    *,
    home: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    done_file: str | None = None,
    grace: float = 20.0,
    files: Sequence[str] = (),
) -> ChrootResult:
    """Run the Krita GUI under Xvfb until it quits (or is killed on timeout).

    ``files`` (chroot paths) are opened on Krita's command line: under Xvfb only
    documents opened that way get an active layer.

    Krita's exit code is not a verdict: have a pykrita extension write a
    result file and quit.  With ``done_file`` (chroot path), Krita gets
    ``grace`` seconds after that file appears before it is killed.
    Uncaught Python exceptions are printed to stderr (after a line
    ``E2E-PYTHON-ERROR``) and collected for :func:`krita_python_errors`,
    instead of Krita's blocking error dialog.
    """
    h = ensure_home(root, home)
    hook = h / KRITA_HOOK_DIR
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(_KRITA_HOOK)
    (h / KRITA_ERRORS).unlink(missing_ok=True)
    full_env = {
        "PYTHONPATH": f"{home.rstrip('/')}/{KRITA_HOOK_DIR}",
        "E2E_PY_ERRORS": f"{home.rstrip('/')}/{KRITA_ERRORS}",
    }
    full_env.update(env or {})
    argv = [*xvfb(root), "krita", "--nosplash", *files]
    return run_in_chroot(
        root,
        argv,
        home=home,
        env=full_env,
        timeout=timeout,
        done_file=done_file,
        grace=grace,
    )


def xvfb(root: Path) -> list[str]:
    """The command prefix that runs a program under its own Xvfb (1280x1024, 24 bits)."""
    # xvfb-run -a only looks at lock files inside the chroot; X servers bind abstract sockets shared with the
    # host, and killed runs leave lock files behind: pick a display that is free on both sides
    return ["xvfb-run", "-n", str(free_display(root)), "-s", "-screen 0 1280x1024x24"]


def free_display(root: Path, first: int = 120, last: int = 999) -> int:
    """An X display number with no lock file (in the chroot or the host) and no bound socket."""
    try:
        sockets = Path("/proc/net/unix").read_text()
    except OSError:
        sockets = ""
    for number in range(first + os.getpid() % 200, last):
        locked = (root / "tmp" / f".X{number}-lock").exists() or Path(f"/tmp/.X{number}-lock").exists()
        if not locked and f"/tmp/.X11-unix/X{number}\n" not in sockets:
            return number
    raise RuntimeError("no free X display number")


def krita_python_errors(root: Path, home: str) -> str:
    """Tracebacks of uncaught Python exceptions in the last :func:`krita_gui`."""
    try:
        return (host_path(root, home) / KRITA_ERRORS).read_text()
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------
# installing plug-ins into a chroot HOME


def gimp_plugin_dir(root: Path) -> str:
    """GIMP's user plug-in folder relative to HOME: each minor release has its own (``.config/GIMP/3.2/plug-ins``)."""
    version = installed_versions(root, ["gimp"])["gimp"]
    if version is None:
        raise RuntimeError(f"no GIMP in {root}")
    return ".config/GIMP/{}.{}/plug-ins".format(*version.split(".")[:2])


def install_gimp_plugin(root: Path, *, home: str, name: str, source: Path) -> str:
    """Install the Python file ``source`` as GIMP plug-in ``name``.

    GIMP 3 wants ``~/.config/GIMP/3.N/plug-ins/NAME/NAME.py``, executable.
    Returns the chroot path of the installed file.
    """
    plugins = gimp_plugin_dir(root)
    dest_dir = ensure_home(root, home) / plugins / name
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{name}.py"
    shutil.copyfile(source, dest)
    dest.chmod(0o755)
    return f"{home.rstrip('/')}/{plugins}/{name}/{name}.py"


def install_pykrita_plugin(
    root: Path,
    *,
    home: str,
    name: str,
    package: Path,
    title: str | None = None,
) -> None:
    """Install the package directory ``package`` as pykrita plug-in ``name``.

    Writes ``NAME.desktop`` + ``NAME/`` under ``~/.local/share/krita/pykrita``
    and sets ``enable_NAME=true`` in the ``[python]`` group of ``~/.config/kritarc``.
    """
    h = ensure_home(root, home)
    pyk = h / PYKRITA_DIR
    pyk.mkdir(parents=True, exist_ok=True)
    dest = pyk / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(package, dest, ignore=shutil.ignore_patterns("__pycache__"))
    (pyk / f"{name}.desktop").write_text(
        "[Desktop Entry]\n"
        "Type=Service\n"
        "ServiceTypes=Krita/PythonPlugin\n"
        f"X-KDE-Library={name}\n"
        "X-Python-2-Compatible=false\n"
        f"Name={title or name}\n"
        f"Comment={title or name} (e2e)\n"
    )
    set_kritarc_value(h / ".config/kritarc", "python", f"enable_{name}", "true")


# --------------------------------------------------------------------------
# building / restoring


def _check(cmd: Sequence[str], what: str, log: Path, env: Mapping[str, str] | None = None) -> None:
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(
            cmd,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"{what} failed (rc={proc.returncode}); log {log}:\n" + "\n".join(tail))


def _chroot_sh(root: Path, script: str, what: str, log: Path) -> None:
    env = {
        "PATH": CHROOT_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy"):
        if var in os.environ:
            env[var] = os.environ[var]
    cmd = [
        "chroot",
        str(root),
        "/usr/bin/env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        "sh",
        "-ec",
        script,
    ]
    _check(cmd, what, log)


def _debootstrap(suite: str, root: Path, log: Path) -> None:
    t0 = time.monotonic()
    cmd = ["debootstrap", "--variant=minbase", suite, str(root)]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        cmd.append(mirror)
    _log(f"debootstrap --variant=minbase {suite} (about 20-60 s; log: {log})")
    _check(cmd, "debootstrap", log)
    _log(f"debootstrap {suite} done in {time.monotonic() - t0:.0f} s")


def _base(variant: Variant, root: Path, log: Path) -> None:
    """Fill the empty ``root`` with a minbase debootstrap of the variant's suite.

    Variants on the same suite share it: the first packs it, the others (also concurrent ones) unpack that.
    """
    if not _shares_base(variant):
        _debootstrap(variant.suite, root, log)
        return
    tarball = base_tarball_path(variant.suite)
    with _flock(cache_dir() / f"base-{variant.suite}.lock", f"{variant.suite} base"):
        if not tarball.is_file():
            _debootstrap(variant.suite, root, log)
            _pack(root, tarball, log)
            return
    _restore(tarball, root, log)


def _sources_line(root: Path, suite: str) -> str:
    """The ``deb`` line debootstrap wrote for its suite, for ``suite`` instead."""
    for line in (root / "etc/apt/sources.list").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "deb":
            return " ".join([fields[0], fields[1], suite, *fields[3:]])
    raise RuntimeError(f"no deb line in {root / 'etc/apt/sources.list'}")


def _build(variant: Variant, root: Path, log: Path) -> None:
    _base(variant, root, log)
    if Path("/etc/resolv.conf").exists():
        dest = root / "etc/resolv.conf"
        if dest.is_symlink():  # never write through a link to a host path
            dest.unlink()
        shutil.copyfile("/etc/resolv.conf", dest)
    # no daemons started by maintainer scripts; faster dpkg
    rc = root / "usr/sbin/policy-rc.d"
    rc.write_text("#!/bin/sh\nexit 101\n")
    rc.chmod(0o755)
    (root / "etc/dpkg/dpkg.cfg.d/e2e-unsafe-io").write_text("force-unsafe-io\n")
    if variant.apt_options:
        conf = "".join(f'{k} "{v}";\n' for k, v in (opt.split("=", 1) for opt in variant.apt_options))
        (root / "etc/apt/apt.conf.d/99img2img-e2e").write_text(conf)
    packages = list(variant.packages)
    if variant.prefer:
        with open(root / "etc/apt/sources.list", "a") as fh:
            fh.write(_sources_line(root, variant.prefer) + "\n")
        # only the editors come from there (with what they need that the base suite lacks)
        wanted = {app for app, _ in variant.editors}
        packages = [f"{name}/{variant.prefer}" if name in wanted else name for name in packages]
    t1 = time.monotonic()
    _log(f"{variant.name}: apt-get install {' '.join(packages)} (about 40-90 s)")
    with mounted(root):
        _chroot_sh(
            root,
            "apt-get -q -o Acquire::Retries=3 update\n"
            "apt-get -q -y -o Acquire::Retries=3 install --no-install-recommends " + " ".join(packages) + "\n"
            "apt-get clean\n"
            "rm -rf /var/lib/apt/lists/*\n"
            # Krita's bundled pykrita plug-ins are not byte-compiled by the
            # package; doing it now avoids SyntaxWarnings and writes at run time.
            "python3 -m compileall -q /usr/share/krita/pykrita >/dev/null 2>&1 || true\n",
            "apt-get install",
            log,
        )
    (root / "etc/dpkg/dpkg.cfg.d/e2e-unsafe-io").unlink()
    safe_rmtree(root / _STATE_DIR)
    found = installed_versions(root, [app for app, _ in variant.editors])
    _log(f"{variant.name}: packages installed in {time.monotonic() - t1:.0f} s; editors {found}")


def installed_versions(root: Path, packages: Sequence[str]) -> dict[str, str | None]:
    """The upstream version of each installed package (None when not installed), from dpkg's status file."""
    found: dict[str, str | None] = dict.fromkeys(packages)
    status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    for paragraph in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and not line.startswith(" "))
        name = fields.get("Package")
        if name in found and fields.get("Status", "").endswith(" installed"):
            found[name] = upstream_version(fields.get("Version", ""))
    return found


def upstream_version(debian: str) -> str:
    """``1:6.0.4+dfsg-1`` -> ``6.0.4``; a version it cannot read plainly (``6.0.4~rc1-1``) comes back whole."""
    match = re.match(r"(?:\d+:)?(\d+(?:\.\d+)*)(?=[-+]|$)", debian)
    return match.group(1) if match else debian


def _pack(root: Path, tarball: Path, log: Path) -> None:
    t0 = time.monotonic()
    _log(f"packing {tarball}")
    tmp = tarball.with_name(tarball.name + ".part")
    _check(
        [
            "tar",
            "--numeric-owner",
            "--one-file-system",
            f"--exclude=./{_STATE_DIR}",
            "-I",
            "zstd -T0 -3 -q",
            "-C",
            str(root),
            "-cf",
            str(tmp),
            ".",
        ],
        "packing the chroot",
        log,
    )
    os.replace(tmp, tarball)
    size = tarball.stat().st_size / 2**20
    _log(f"packed {size:.0f} MiB in {time.monotonic() - t0:.0f} s")


def _restore(tarball: Path, root: Path, log: Path) -> None:
    t0 = time.monotonic()
    _log(f"restoring chroot from {tarball}")
    _check(
        [
            "tar",
            "--numeric-owner",
            "-I",
            "zstd -d -q",
            "-C",
            str(root),
            "-xf",
            str(tarball),
        ],
        "restoring the chroot",
        log,
    )
    _log(f"restored in {time.monotonic() - t0:.1f} s")


def ensure_chroot(variant: Variant = TRIXIE) -> Path:
    """Return a ready chroot: reuse, restore from the cache tarball, or build.

    Building/restoring happens in a temporary directory that is renamed into
    place only when complete, under a per-variant lock file, so concurrent
    callers wait for each other (and builds of different variants run side by
    side) and an interrupted run never leaves a chroot that looks ready.
    """
    reason = skip_reason(variant)
    if reason:
        raise RuntimeError(reason)
    cache = cache_dir()
    root = chroot_dir(variant)
    if _is_ready(root, variant):
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with _flock(cache / f"build-{variant.name}.lock", f"{variant.name} chroot build"):
        if _is_ready(root, variant):
            return root
        # leftovers of interrupted runs of this variant (we hold its lock: nobody uses them)
        for stale in [*cache.glob(f"tmp-{variant.name}-*"), root]:
            if stale.is_dir():
                _log(f"removing stale {stale}")
                safe_rmtree(stale)
        tarball = tarball_path(variant)
        for part in cache.glob(f"{variant.name}-*.part"):
            part.unlink()
        log = cache / f"build-{variant.name}.log"
        log.write_text("")
        tmp = Path(tempfile.mkdtemp(prefix=f"tmp-{variant.name}-", dir=cache))
        os.chmod(tmp, 0o755)
        t0 = time.monotonic()
        try:
            restored = False
            if tarball.is_file():
                try:
                    _restore(tarball, tmp, log)
                    restored = True
                except RuntimeError as exc:
                    _log(f"restore failed, rebuilding: {exc}")
                    tarball.unlink()
                    safe_rmtree(tmp)
                    tmp.mkdir(mode=0o755)
            if not restored:
                _build(variant, tmp, log)
                _pack(tmp, tarball, log)
            (tmp / READY_MARKER).write_text(cache_key(variant) + "\n")
            os.rename(tmp, root)
        except BaseException:
            safe_rmtree(tmp)
            raise
        _log(f"{variant.name} chroot ready at {root} after {time.monotonic() - t0:.0f} s")
    return root


def build_in_background(variant: Variant) -> subprocess.Popen[bytes]:
    """Start ``ensure_chroot(variant)`` in a child process (output in the cache's ``background-NAME.log``).

    The child holds the variant's build lock, so a later ``ensure_chroot`` in this process waits for it (or, if
    it failed, tries again and reports why).  It dies with this process.
    """
    cache_dir().mkdir(parents=True, exist_ok=True)
    log = cache_dir() / f"background-{variant.name}.log"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, __file__, "build", variant.name],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )


def variant_named(name: str) -> Variant:
    for variant in VARIANTS:
        if variant.name == name:
            return variant
    raise SystemExit(f"no chroot variant {name!r}; there are {', '.join(v.name for v in VARIANTS)}")


def main(argv: Sequence[str]) -> int:
    """``python3 tests/e2e/chroot.py build [VARIANT...]``: build (or restore) chroots side by side, all by default."""
    if not argv or argv[0] != "build":
        print(main.__doc__, file=sys.stderr)
        return 2
    variants = [variant_named(name) for name in argv[1:]] or list(VARIANTS)
    # each build waits on the network and dpkg in turn: side by side they take about as long as the longest
    with concurrent.futures.ThreadPoolExecutor(len(variants)) as pool:
        roots = list(pool.map(ensure_chroot, variants))
    for variant, root in zip(variants, roots, strict=True):
        _log(f"{variant.name}: {root} {installed_versions(root, [app for app, _ in variant.editors])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
