"""The protocol's own msgpack codec, checked against msgpack itself (runs under Python 3.10 too)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from bridge.editor import protocol as p
from bridge.editor import wire
from bridge.editor.client import fast_apply_mask

VALUES: list[Any] = [
    None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
    0.0, -1.5, 3.141592653589793, 1e300,
    "", "a", "x" * 31, "x" * 32, "é" * 200, "y" * 70000,
    b"", b"\x00", b"z" * 255, b"z" * 256, b"z" * (wire.LIFT_BYTES - 1), b"z" * wire.LIFT_BYTES, b"z" * 70000,
    [], [1] * 15, [1] * 16, list(range(70000)), {}, {str(i): i for i in range(15)}, {str(i): i for i in range(16)},
    {"nested": [{"a": b"\x01" * 100_000, "b": [None, 1.5]}], "after": "tail"},
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_pack_parts_joins_to_msgpacks_bytes_and_unpacks(value: Any) -> None:
    packed = msgpack.packb(value, use_bin_type=True)
    assert b"".join(wire.pack_parts(value)) == packed
    assert wire.unpack(packed) == value


def test_large_bins_are_not_copied() -> None:
    pixels = bytearray(b"\x07" * (wire.LIFT_BYTES * 2))
    parts = wire.pack_parts({"data": memoryview(pixels), "width": 1})
    lifted = [part for part in parts if isinstance(part, memoryview)]
    assert len(lifted) == 1 and lifted[0].obj is pixels


def test_tuples_pack_as_arrays() -> None:
    assert b"".join(wire.pack_parts((1, 2))) == msgpack.packb([1, 2])


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x92\x01", b"\xc4\x05abc", b"\xd9\x05ab", b"\x01\x02", b"\xc7\x01\x00\x00", b"\xc1", b"\x81\x90\x01"],
    ids=["empty", "short array", "short bin", "short str", "extra bytes", "ext type", "never used", "unhashable key"],
)
def test_malformed_frames_raise_value_error(frame: bytes) -> None:
    with pytest.raises(ValueError):
        wire.unpack(frame)


def test_unpackable_objects_are_refused() -> None:
    with pytest.raises(TypeError):
        wire.pack_parts({"a": object()})


def test_encode_matches_msgpack_for_a_message() -> None:
    message = p.Result(
        job_id="j", index=0, count=1, image=p.Image(300, 300, b"\x01" * 360_000), x=1, y=2, seed=3, timings={"total_ms": 1.0}
    )
    assert p.encode(message) == msgpack.packb(message.to_wire(), use_bin_type=True)
    assert p.decode_server_message(b"".join(p.encode_parts(message))) == message


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 65535, 65536, 65537, 131072 + 7, 1 << 20])
def test_fast_mask_matches_websockets(size: int) -> None:
    from websockets.utils import apply_mask

    data = bytes((i * 31 + 7) % 256 for i in range(size))
    for mask in (b"\x00\x00\x00\x00", b"\x12\x34\x56\x78", b"\xff\xfe\xfd\xfc"):
        assert bytes(fast_apply_mask(data, mask)) == apply_mask(data, mask)
    with pytest.raises(ValueError):
        fast_apply_mask(data, b"\x01")
