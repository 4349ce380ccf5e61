"""Prototype changes to the client's side of the transport, switchable so each is measured beside the shipped code.

Standard library and the client library only: the client worker applies them
to whichever websockets and msgpack it runs with (pure-Python copies or not).

- ``zero-mask``: a lower bound, not a proposal: frames masked with a zero key,
  which skips the XOR but breaks RFC 6455's rule that the key be unpredictable;
  it measures what masking still costs the pure-Python client.
- ``socket``: the client declines the same-machine hand-off (``shared_memory=False``),
  so the pixels travel through the websocket as they do to a remote bridge.
- ``msgpack-pixels``: the client does not ask for raw frames (``raw_frames=False``), so
  on the websocket the pixels travel inside the msgpack message, as before raw frames.
- ``stock-reader``: the pure-Python client reads frames with websockets' own stream reader
  instead of ``client.LargeFrameReader`` (connections opened under the patch).

The earlier prototypes (chunked mask, fragments, pieces, 1 MiB reads, the
protocol's own decoder, releasing frames) shipped in commit 125bcd2; their
measurements against the code before it are in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Callable

from bridge.editor.dependencies import websockets_frames, websockets_protocol, websockets_streams

PATCHES = ("zero-mask", "socket", "msgpack-pixels", "stock-reader")
#: the variant that keeps pixels on the websocket
SOCKET = "socket"
#: the variant that keeps pixels inside msgpack
MSGPACK_PIXELS = "msgpack-pixels"


class _ZeroKey:
    @staticmethod
    def token_bytes(n: int) -> bytes:
        return bytes(n)


def _skip_zero_mask(apply_mask: Callable[[Any, bytes], Any]) -> Callable[[Any, bytes], Any]:
    def patched(data: Any, mask: bytes) -> Any:
        return data if mask == b"\0\0\0\0" else apply_mask(data, mask)

    return patched


@contextmanager
def patched(names: tuple[str, ...] | list[str]) -> Iterator[None]:
    """Apply the named patches for the duration of the block."""
    unknown = set(names) - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown client patches {sorted(unknown)}; known: {', '.join(PATCHES)}")
    with ExitStack() as stack:

        def put(obj: Any, name: str, value: Any) -> None:
            stack.callback(setattr, obj, name, getattr(obj, name))
            setattr(obj, name, value)

        if "zero-mask" in names:
            put(websockets_frames, "secrets", _ZeroKey)
            put(websockets_frames, "apply_mask", _skip_zero_mask(websockets_frames.apply_mask))
        if "stock-reader" in names:
            put(websockets_protocol, "StreamReader", websockets_streams.StreamReader)
        yield


def shares_memory(names: tuple[str, ...] | list[str]) -> bool:
    """Whether a client made under these patches takes the same-machine hand-off."""
    return SOCKET not in names


def raw_frames(names: tuple[str, ...] | list[str]) -> bool:
    """Whether a client made under these patches asks for raw frames."""
    return MSGPACK_PIXELS not in names


def parse_variant(variant: str) -> tuple[str, ...]:
    """``shipped`` or patch names joined by ``+``."""
    return () if variant == "shipped" else tuple(variant.split("+"))
