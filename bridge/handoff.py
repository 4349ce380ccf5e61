"""The bridge's side of the same-machine hand-off (``bridge.editor.shm``): the offer, segments read in place, results out."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from .editor import protocol as p
from .editor import shm

log = logging.getLogger("img2img_bridge")

_R = TypeVar("_R", p.Image, p.Mask)


#: the most bytes of spare segments a bridge keeps allocated for the next frames
SPARE_BYTES = 128 << 20


class SharedMemoryHost:
    """Offers the hand-off to loopback clients of this user, maps the segments they name, writes results into new ones.

    The segments it writes for a connection count against ``budget`` bytes until the client has taken
    them (removed their files); past it, events carry their pixels over the socket.

    Filling fresh memory costs several times what copying into memory already touched does, so after
    each hand-over a spare segment of that size is allocated in the background (at most
    ``spare_bytes`` of them, the least recently used let go first): the next frame of a live stroke
    is written into pages that are ready.
    """

    def __init__(self, folder: Path | None = None, spare_bytes: int = SPARE_BYTES) -> None:
        self.folder = shm.private_folder(folder or shm.default_folder(), create=True)
        swept = shm.sweep(self.folder)
        if swept:
            log.info("removed %d shared-memory segments left by processes that ended", len(swept))
        self.token = secrets.token_hex(16)
        self.probe = shm.write_new(self.folder, "probe", self.token.encode())
        self._sent: dict[Hashable, dict[str, int]] = {}
        self._lock = threading.Lock()
        self.spare_bytes = spare_bytes
        self._spares: OrderedDict[str, int] = OrderedDict()  # allocated, not yet written: name -> size
        self._spare_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-shm")
        self._closed = False

    @property
    def offer(self) -> p.SharedMemoryOffer:
        return p.SharedMemoryOffer(folder=str(self.folder), probe=self.probe, token=self.token)

    def attach(self, request: p.Generate) -> p.Generate:
        """``request`` with the pixels of the segments it names mapped in, read-only; raises ProtocolError."""
        image = _mapped(self.folder, request.image, "image", 4)
        mask = None if request.mask is None else _mapped(self.folder, request.mask, "mask", 1)
        return replace(request, image=image, mask=mask)

    def hand_over(self, owner: Hashable, image: p.Image, budget: int) -> p.Image:
        """``image`` (raw) moved into a new segment for ``owner``; unchanged when that would pass ``budget`` or fails."""
        if image.encoding is not p.Encoding.RAW or image.segment is not None:
            return image
        size = len(memoryview(image.data).cast("B"))
        with self._lock:
            sent = self._sent.setdefault(owner, {})
            for name in [n for n in sent if not os.path.exists(self.folder / n)]:
                del sent[name]  # taken by the client
            if sum(sent.values()) + size > budget:
                return image
            spare = next((n for n, s in self._spares.items() if s == size), None)
            if spare is not None:
                del self._spares[spare]
        try:
            name = shm.write_new(self.folder, "s", image.data) if spare is None else shm.write_into(self.folder, spare, image.data)
        except OSError as exc:  # /dev/shm full: the socket still works
            log.warning("could not write a segment (%s); sending over the socket", exc.strerror)
            return image
        with self._lock:
            sent[name] = size
            if not self._closed:
                self._spare_pool.submit(self._make_spare, size)
        return replace(image, data=b"", segment=name, offset=0)

    def _make_spare(self, size: int) -> None:
        with self._lock:
            if self._closed or size in self._spares.values() or size > self.spare_bytes:
                return
            while self._spares and sum(self._spares.values()) + size > self.spare_bytes:
                shm.remove(self.folder / self._spares.popitem(last=False)[0])
        try:
            name = shm.allocate(self.folder, "s", size)
        except OSError:
            return
        with self._lock:
            if self._closed:
                shm.remove(self.folder / name)
            else:
                self._spares[name] = size

    def discard(self, owner: Hashable, image: p.Image) -> None:
        """Remove the segment of an event that was not sent after all (a skipped preview)."""
        if image.segment is None:
            return
        with self._lock:
            self._sent.get(owner, {}).pop(image.segment, None)
        shm.remove(self.folder / image.segment)

    def forget(self, owner: Hashable) -> None:
        """``owner`` disconnected: remove what it never took, and the segments of clients that have died."""
        with self._lock:
            names = list(self._sent.pop(owner, {}))
        for name in names:
            shm.remove(self.folder / name)
        shm.sweep(self.folder)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._spare_pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            names = [n for sent in self._sent.values() for n in sent] + list(self._spares) + [self.probe]
            self._sent.clear()
            self._spares.clear()
        for name in names:
            shm.remove(self.folder / name)


def _mapped(folder: Path, raster: _R, name: str, channels: int) -> _R:
    if raster.segment is None:
        return raster
    field = f"{name}.segment"
    if raster.encoding is not p.Encoding.RAW:
        raise p.ProtocolError(p.ErrorCode.UNSUPPORTED_ENCODING, f"{name} in a segment must be raw", field=f"{name}.encoding")
    try:
        shm.check_name(raster.segment, "c")
        data = shm.map_readonly(folder, raster.segment, raster.offset, raster.width * raster.height * channels)
    except (OSError, ValueError, OverflowError) as exc:
        raise p.ProtocolError(p.ErrorCode.INVALID_FIELD, f"{field} cannot be read: {exc}", field=field) from exc
    return replace(raster, data=data)
