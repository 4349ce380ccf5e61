"""The server's bounds on what clients may make it hold: connections, time, queued and outgoing bytes.

Pixel limits travel in the welcome (``protocol.Limits``); these stay on the server.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

_MIB = 1 << 20


@dataclass(frozen=True)
class ServerBounds:
    """Every wait and buffer the bridge keeps for its clients has a limit here (``serve`` flags set them)."""

    #: open websockets, greeted or not; one more is answered HTTP 503
    max_connections: int = 32
    #: seconds a TCP connection may take to send its HTTP request (the websocket upgrade)
    handshake_timeout: float = 10.0
    #: seconds between the websocket opening and the client's ``hello``
    hello_timeout: float = 10.0
    #: seconds the binary frames that carry a message's pixels (raw frames) may take to follow it
    frame_timeout: float = 60.0
    #: seconds between the server's pings; a client that has not answered one by the next is closed
    ping_interval: float = 20.0
    #: decoded input bytes one client may have waiting (queued or being decoded)
    client_queued_bytes: int = 256 * _MIB
    #: decoded input bytes all clients together may have waiting
    total_queued_bytes: int = 768 * _MIB
    #: bytes queued for one client and not yet written to its socket; beyond it previews are dropped,
    #: and a client that still does not read is disconnected
    outbox_bytes: int = 256 * _MIB
    #: a client's name as shown in logs and /health
    max_name_chars: int = 64
    #: the longest model name ``load_model`` considers
    max_model_chars: int = 1024

    def check(self, max_message_bytes: int) -> None:
        """Raise ValueError naming the bound that cannot hold even one largest message."""
        if self.outbox_bytes < max_message_bytes:
            raise ValueError(f"the outgoing budget ({self.outbox_bytes} bytes) is smaller than one largest result ({max_message_bytes})")
        if self.client_queued_bytes > self.total_queued_bytes:
            raise ValueError("a client's queue budget is larger than the whole queue budget")


def input_bytes(width: int, height: int, encoded: int, masked: bool) -> int:
    """What a job's inputs hold while they wait: the encoded data plus the decoded RGBA (and mask)."""
    return encoded + width * height * (5 if masked else 4)


class ByteBudget:
    """Bytes reserved per owner against a per-owner and an overall limit (event-loop thread only)."""

    def __init__(self, per_owner: int, total: int) -> None:
        self.per_owner = per_owner
        self.total = total
        self._held: dict[Hashable, int] = {}
        self._sum = 0

    @property
    def used(self) -> int:
        return self._sum

    def held(self, owner: Hashable) -> int:
        return self._held.get(owner, 0)

    def reserve(self, owner: Hashable, size: int) -> str | None:
        """Reserve ``size`` bytes; returns None, or a sentence saying which limit refused it."""
        mine = self._held.get(owner, 0)
        if mine + size > self.per_owner:
            return f"this client already has {mine >> 20} MiB of inputs waiting (at most {self.per_owner >> 20} MiB)"
        if self._sum + size > self.total:
            return f"the bridge already holds {self._sum >> 20} MiB of waiting inputs (at most {self.total >> 20} MiB)"
        self._held[owner] = mine + size
        self._sum += size
        return None

    def release(self, owner: Hashable, size: int) -> None:
        left = self._held.get(owner, 0) - size
        if left > 0:
            self._held[owner] = left
        else:
            self._held.pop(owner, None)
        self._sum -= size
