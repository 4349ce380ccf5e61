"""A pure-Python msgpack codec for the subset the protocol uses, built to keep pixels out of copies.

``pack_parts`` gives a message's msgpack bytes as a list of pieces in which
large binary values are the caller's own buffers, so a layer is never copied
to be framed. ``unpack`` reads a frame copying each binary value once, where
msgpack's pure-Python fallback (what the editors' plug-ins run) copies it
three times. Types: nil, bool, int, float, str, bin, array, map; no ext types.
Standard library only: the plug-ins carry a copy of it.
"""

from __future__ import annotations

import struct
from typing import Any, Union

Piece = Union[bytes, bytearray, memoryview]

#: binary values from this size on stay separate pieces instead of being copied into the message
LIFT_BYTES = 1 << 16


def pack_parts(obj: Any) -> list[Piece]:
    """msgpack bytes of ``obj`` as pieces whose join equals ``msgpack.packb(obj, use_bin_type=True)``."""
    parts: list[Piece] = []
    head = bytearray()
    _pack(obj, head, parts)
    if head:
        parts.append(bytes(head))
    return parts


def _pack(obj: Any, head: bytearray, parts: list[Piece]) -> None:
    if obj is None:
        head.append(0xC0)
    elif obj is True:
        head.append(0xC3)
    elif obj is False:
        head.append(0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, head)
    elif isinstance(obj, float):
        head += struct.pack(">Bd", 0xCB, obj)
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        n = len(data)
        if n < 32:
            head.append(0xA0 | n)
        elif n < 1 << 8:
            head += struct.pack(">BB", 0xD9, n)
        elif n < 1 << 16:
            head += struct.pack(">BH", 0xDA, n)
        else:
            head += struct.pack(">BI", 0xDB, n)
        head += data
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        view = memoryview(obj).cast("B")
        n = len(view)
        if n < 1 << 8:
            head += struct.pack(">BB", 0xC4, n)
        elif n < 1 << 16:
            head += struct.pack(">BH", 0xC5, n)
        else:
            head += struct.pack(">BI", 0xC6, n)
        if n >= LIFT_BYTES:
            parts.append(bytes(head))
            head.clear()
            parts.append(view)
        else:
            head += view
    elif isinstance(obj, (list, tuple)):
        _pack_header(len(obj), 0x90, 0xDC, 0xDD, head)
        for item in obj:
            _pack(item, head, parts)
    elif isinstance(obj, dict):
        _pack_header(len(obj), 0x80, 0xDE, 0xDF, head)
        for key, value in obj.items():
            _pack(key, head, parts)
            _pack(value, head, parts)
    else:
        raise TypeError(f"cannot pack {type(obj).__name__}")


def _pack_header(n: int, fix: int, code16: int, code32: int, head: bytearray) -> None:
    if n < 16:
        head.append(fix | n)
    elif n < 1 << 16:
        head += struct.pack(">BH", code16, n)
    else:
        head += struct.pack(">BI", code32, n)


def _pack_int(value: int, head: bytearray) -> None:
    if 0 <= value < 0x80:
        head.append(value)
    elif -32 <= value < 0:
        head.append(value & 0xFF)
    elif value >= 0:
        for limit, code, fmt in ((1 << 8, 0xCC, ">BB"), (1 << 16, 0xCD, ">BH"), (1 << 32, 0xCE, ">BI"), (1 << 64, 0xCF, ">BQ")):
            if value < limit:
                head += struct.pack(fmt, code, value)
                return
        raise OverflowError("integer too large for msgpack")
    else:
        for limit, code, fmt in ((1 << 7, 0xD0, ">Bb"), (1 << 15, 0xD1, ">Bh"), (1 << 31, 0xD2, ">Bi"), (1 << 63, 0xD3, ">Bq")):
            if value >= -limit:
                head += struct.pack(fmt, code, value)
                return
        raise OverflowError("integer too large for msgpack")


_FIXED = {
    0xCA: struct.Struct(">f"),
    0xCB: struct.Struct(">d"),
    0xCC: struct.Struct(">B"),
    0xCD: struct.Struct(">H"),
    0xCE: struct.Struct(">I"),
    0xCF: struct.Struct(">Q"),
    0xD0: struct.Struct(">b"),
    0xD1: struct.Struct(">h"),
    0xD2: struct.Struct(">i"),
    0xD3: struct.Struct(">q"),
}
# type byte -> (length struct, kind)
_SIZED = {
    0xC4: (struct.Struct(">B"), "bin"),
    0xC5: (struct.Struct(">H"), "bin"),
    0xC6: (struct.Struct(">I"), "bin"),
    0xD9: (struct.Struct(">B"), "str"),
    0xDA: (struct.Struct(">H"), "str"),
    0xDB: (struct.Struct(">I"), "str"),
    0xDC: (struct.Struct(">H"), "array"),
    0xDD: (struct.Struct(">I"), "array"),
    0xDE: (struct.Struct(">H"), "map"),
    0xDF: (struct.Struct(">I"), "map"),
}


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """One msgpack object from ``data``; raises ValueError for anything malformed or outside the subset."""
    view = memoryview(data).cast("B")
    try:
        obj, end = _read(view, 0)
    except (IndexError, struct.error) as exc:
        raise ValueError("incomplete msgpack data") from exc
    if end != len(view):
        raise ValueError(f"{len(view) - end} bytes of extra data after the msgpack object")
    return obj


def _read(view: memoryview, i: int) -> tuple[Any, int]:
    b = view[i]
    i += 1
    if b < 0x80:
        return b, i
    if b >= 0xE0:
        return b - 0x100, i
    if b < 0x90:
        return _read_map(view, i, b & 0x0F)
    if b < 0xA0:
        return _read_array(view, i, b & 0x0F)
    if b < 0xC0:
        return _read_str(view, i, b & 0x1F)
    if b == 0xC0:
        return None, i
    if b == 0xC2:
        return False, i
    if b == 0xC3:
        return True, i
    fixed = _FIXED.get(b)
    if fixed is not None:
        return fixed.unpack_from(view, i)[0], i + fixed.size
    sized = _SIZED.get(b)
    if sized is None:
        raise ValueError(f"unsupported msgpack type byte 0x{b:02x}")
    length, kind = sized
    n = length.unpack_from(view, i)[0]
    i += length.size
    if kind == "bin":
        if i + n > len(view):
            raise ValueError("incomplete msgpack data")
        return bytes(view[i : i + n]), i + n
    if kind == "str":
        return _read_str(view, i, n)
    if kind == "array":
        return _read_array(view, i, n)
    return _read_map(view, i, n)


def _read_str(view: memoryview, i: int, n: int) -> tuple[str, int]:
    if i + n > len(view):
        raise ValueError("incomplete msgpack data")
    return str(view[i : i + n], "utf-8"), i + n


def _read_array(view: memoryview, i: int, n: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(n):
        item, i = _read(view, i)
        items.append(item)
    return items, i


def _read_map(view: memoryview, i: int, n: int) -> tuple[dict[Any, Any], int]:
    obj = {}
    for _ in range(n):
        key, i = _read(view, i)
        value, i = _read(view, i)
        try:
            obj[key] = value
        except TypeError as exc:
            raise ValueError("a map key is not hashable") from exc
    return obj, i
