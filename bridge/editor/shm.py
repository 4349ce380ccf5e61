"""The same-machine hand-off: pixels through memory-mapped files in a private folder, not through the socket.

A client on the bridge's machine writes a layer (and mask) into a segment of its
own, reused job after job, and names it in ``generate``; the segment is the
bridge's to read until the job's terminal event. The bridge writes each raw
result and preview into a new segment and names it in the event; the client maps
it, removes the file and hands the mapping on, so nothing is copied on the way in.

Segments live in one folder per user (mode 0700, files 0600, checked on every
use) and are named ``ROLE-PID-RANDOM``: whoever starts or connects next removes
those whose process has died, so a killed client or bridge leaves nothing behind.
Standard library only (the editors' plug-ins carry it); POSIX only: elsewhere the
websocket carries the pixels. No atexit hooks and no resource tracker: the owner
removes its files when it closes, the next start removes what a crash left.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import stat
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Callable

from . import protocol as p

_mmap: ModuleType | None
try:  # an editor's embedded Python may lack it: then the socket carries the pixels
    import mmap as _mmap
except ImportError:  # pragma: no cover
    _mmap = None

#: who made a segment: ``c`` a client's upload, ``s`` a bridge's result or preview, ``probe`` a bridge's probe
_NAME = re.compile(r"(c|s|probe)-([0-9]{1,10})-[0-9a-f]{16}\Z")
#: segments are reused only when the next request fits in one at most this many times its size
_REUSE_SLACK = 4


class ShmUnavailable(Exception):
    """The hand-off cannot be used here; ``reason`` says why (the websocket carries the pixels instead)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def supported() -> bool:
    """Whether this platform has what the hand-off needs (POSIX file modes, O_NOFOLLOW, mmap)."""
    return os.name == "posix" and hasattr(os, "O_NOFOLLOW") and hasattr(os, "getuid") and _mmap is not None


def default_folder() -> Path:
    """``/dev/shm/img2img-bridge-UID`` (memory, never the disk), else the same name in the temporary folder."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
    return base / f"img2img-bridge-{os.getuid()}"


def private_folder(path: Path, *, create: bool) -> Path:
    """``path`` once it is a real folder of this user's that nobody else may enter; raises ShmUnavailable."""
    if not supported():
        raise ShmUnavailable("shared memory is not supported on this platform")
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ShmUnavailable(f"cannot create the segment folder {path}: {exc.strerror}") from exc
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ShmUnavailable(f"cannot reach the segment folder {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ShmUnavailable(f"{path} is not a folder")
    if info.st_uid != os.getuid():
        raise ShmUnavailable(f"the segment folder {path} belongs to another user")
    if info.st_mode & 0o077:
        raise ShmUnavailable(f"the segment folder {path} is open to other users (mode {stat.S_IMODE(info.st_mode):o})")
    return path


def loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback interface."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_name(role: str) -> str:
    return f"{role}-{os.getpid()}-{secrets.token_hex(8)}"


def owner(name: str) -> int | None:
    """The pid in a segment's name; None for a name that is not a segment's."""
    found = _NAME.match(name)
    return int(found.group(2)) if found else None


def check_name(name: str, role: str) -> None:
    """Raise ValueError unless ``name`` is a segment name of ``role`` (never a path)."""
    found = _NAME.match(name)
    if found is None or found.group(1) != role:
        raise ValueError(f"{name[:80]!r} is not the name of a {role!r} segment")


def alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead for our purposes
        with open(f"/proc/{pid}/stat", "rb") as status:
            return status.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def sweep(folder: Path) -> list[str]:
    """Remove the segments in ``folder`` whose process has died; returns their names."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid = owner(name)
        if pid is not None and not alive(pid):
            remove(folder / name)
            removed.append(name)
    return removed


def remove(path: Path) -> None:
    """Remove a segment's file; one already gone (taken, swept) is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _create(folder: Path, name: str) -> int:
    # O_EXCL + O_NOFOLLOW: never write through a link someone planted; 0600 whatever the umask adds
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _open_checked(folder: Path, name: str, needed: int, flags: int) -> tuple[int, int]:
    """Open a segment of this user's holding at least ``needed`` bytes; returns the descriptor and its size."""
    fd = os.open(folder / name, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"segment {name} is not a private file of this user's")
        if info.st_size < needed:
            raise ValueError(f"segment {name} holds {info.st_size} bytes, {needed} are needed")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def write_new(folder: Path, role: str, data: p.wire.Piece) -> str:
    """A new segment holding ``data``; written with ``write`` so that a full /dev/shm is an OSError, never SIGBUS."""
    view = memoryview(data).cast("B")

    def fill(fd: int) -> None:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])

    return _new_segment(folder, role, fill)


def allocate(folder: Path, role: str, size: int) -> str:
    """A new segment of ``size`` bytes with its pages reserved (zeroed), to be written later with ``write_into``."""

    def fill(fd: int) -> None:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:
            os.ftruncate(fd, size)

    return _new_segment(folder, role, fill)


def _new_segment(folder: Path, role: str, fill: Callable[[int], None]) -> str:
    """A new segment of ours, its contents written by ``fill(fd)``; removed again when that fails."""
    name = new_name(role)
    fd = _create(folder, name)
    try:
        fill(fd)
    except BaseException:
        os.close(fd)
        os.unlink(folder / name)
        raise
    os.close(fd)
    return name


def write_into(folder: Path, name: str, data: p.wire.Piece) -> str:
    """Write ``data`` at the start of an existing segment of ours; returns its name."""
    view = memoryview(data).cast("B")
    fd = os.open(folder / name, os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], done)
    finally:
        os.close(fd)
    return name


def map_readonly(folder: Path, name: str, offset: int, size: int) -> memoryview:
    """Bytes ``offset`` to ``offset + size`` of a segment, mapped read-only (nothing copied)."""
    if offset < 0 or size < 0:
        raise ValueError("a segment's offset and size cannot be negative")
    fd, total = _open_checked(folder, name, offset + size, os.O_RDONLY)
    try:
        if total == 0:
            return memoryview(b"")
        assert _mmap is not None
        flags = _mmap.MAP_SHARED | getattr(_mmap, "MAP_POPULATE", 0)
        mapping = _mmap.mmap(fd, total, flags=flags, prot=_mmap.PROT_READ)
    finally:
        os.close(fd)
    return memoryview(mapping)[offset : offset + size]


def take(folder: Path, name: str, size: int) -> memoryview:
    """Map a segment the bridge wrote for us and remove its file: the mapping lives as long as the view."""
    check_name(name, "s")
    try:
        return map_readonly(folder, name, 0, size)
    finally:
        remove(folder / name)


class _Upload:
    """A client's own segment, mapped for writing and reused while it fits."""

    def __init__(self, folder: Path, size: int) -> None:
        # pages reserved now: a full /dev/shm is an error here, not SIGBUS on a later write
        self.name = allocate(folder, "c", size)
        self.path = folder / self.name
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
            try:
                assert _mmap is not None
                self.mapping = _mmap.mmap(fd, size)
            finally:
                os.close(fd)
        except BaseException:
            os.unlink(self.path)
            raise
        self.size = size

    def write(self, offset: int, data: p.wire.Piece) -> int:
        """Copy ``data`` in at ``offset``; returns its length."""
        view = memoryview(data).cast("B")
        self.mapping[offset : offset + len(view)] = view
        return len(view)

    def remove(self) -> None:
        remove(self.path)
        try:
            self.mapping.close()
        except BufferError:  # a view is still out; the mapping goes with it
            pass


class ClientHandoff:
    """The client's side of the hand-off, once the bridge's offer has been checked (``open``).

    ``outgoing`` moves a request's raw pixels into an upload segment; ``incoming``
    maps the segments the bridge names in its events and frees a job's upload
    segment when the job ends. Upload segments are bounded in number and bytes;
    a request that does not fit goes over the socket. Thread-safe.
    """

    def __init__(self, folder: Path, max_bytes: int, max_segments: int = 4) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.max_segments = max_segments
        self._free: list[_Upload] = []
        self._busy: dict[str, _Upload] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, offer: p.SharedMemoryOffer, max_bytes: int) -> ClientHandoff:
        """Check that the offered folder is ours and holds the bridge's probe; raises ShmUnavailable."""
        folder = private_folder(Path(offer.folder), create=False)
        try:
            check_name(offer.probe, "probe")
            fd, _ = _open_checked(folder, offer.probe, 0, os.O_RDONLY)
            try:
                found = os.read(fd, 256)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            raise ShmUnavailable(f"cannot read the bridge's probe in {folder}: {exc}") from exc
        if found != offer.token.encode():
            raise ShmUnavailable("the bridge's probe holds another token: the bridge runs on another machine or in another namespace")
        sweep(folder)
        return cls(folder, max_bytes)

    def outgoing(self, request: p.Generate) -> p.Generate:
        """``request`` with its raw pixels in an upload segment, asking for replies through segments."""
        image, mask = request.image, request.mask
        plain = image.encoding is p.Encoding.RAW and image.segment is None and (mask is None or mask.encoding is p.Encoding.RAW)
        size = len(memoryview(image.data).cast("B")) + (0 if mask is None else len(memoryview(mask.data).cast("B")))
        upload = self._lease(request.job_id, size) if plain and size else None
        if upload is None:
            return replace(request, shm=True)
        image_bytes = upload.write(0, image.data)
        moved_mask = None
        if mask is not None:
            upload.write(image_bytes, mask.data)
            moved_mask = replace(mask, data=b"", segment=upload.name, offset=image_bytes)
        return replace(request, image=replace(image, data=b"", segment=upload.name, offset=0), mask=moved_mask, shm=True)

    def incoming(self, event: p.Message) -> p.Message | None:
        """``event`` with the pixels of a segment it names mapped in; frees the upload of a job that ended.

        A preview whose segment cannot be read is dropped (None); such a result becomes the job's error.
        """
        if isinstance(event, (p.Preview, p.Result)) and event.image.segment is not None:
            image = event.image
            try:
                data = take(self.folder, image.segment, image.width * image.height * 4)  # type: ignore[arg-type]
            except (OSError, ValueError) as exc:
                lost = p.lost_pixels(event, p.ErrorCode.CONNECTION, f"could not read the result from shared memory: {exc}")
                if lost is None:
                    return None
                event = lost
            else:
                event = replace(event, image=replace(image, data=data, segment=None, offset=0))
        if p.is_job_end(event):
            self.release(getattr(event, "job_id", None))
        return event

    def release(self, job_id: str | None) -> None:
        """The bridge is done with ``job_id``'s upload segment (its job ended, or it was never sent)."""
        with self._lock:
            upload = self._busy.pop(job_id, None) if job_id is not None else None
            if upload is None:
                return
            if self._closed:
                upload.remove()
            else:
                self._free.append(upload)

    def close(self) -> None:
        """Remove every upload segment (the bridge may still read one it has mapped: unlinking leaves its mapping)."""
        with self._lock:
            self._closed = True
            uploads = self._free + list(self._busy.values())
            self._free.clear()
            self._busy.clear()
        for upload in uploads:
            upload.remove()

    @property
    def segments(self) -> list[str]:
        with self._lock:
            return [u.name for u in self._free + list(self._busy.values())]

    def _lease(self, job_id: str, size: int) -> _Upload | None:
        with self._lock:
            if self._closed or job_id in self._busy:
                return None
            fitting = [u for u in self._free if size <= u.size <= size * _REUSE_SLACK]
            if fitting:
                upload = min(fitting, key=lambda u: u.size)
                self._free.remove(upload)
            else:
                held = sum(u.size for u in self._free) + sum(u.size for u in self._busy.values())
                count = len(self._free) + len(self._busy)
                while self._free and (held + size > self.max_bytes or count >= self.max_segments):
                    idle = max(self._free, key=lambda u: u.size)  # make room by letting go of idle segments
                    self._free.remove(idle)
                    idle.remove()
                    held, count = held - idle.size, count - 1
                if held + size > self.max_bytes or count >= self.max_segments:
                    return None
                try:
                    upload = _Upload(self.folder, size)
                except OSError:
                    return None
            self._busy[job_id] = upload
            return upload
