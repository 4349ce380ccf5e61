"""websockets and msgpack for the editor side, from this package's own copies where it has them.

An editor install (``img2img-bridge install-plugins``) puts pure-Python copies in
``_vendor/`` inside this package, which is itself imported under the plug-in's
private name: they load as ``<plug-in>._bridge._vendor.websockets``, never as the
top-level ``websockets`` that another plug-in in Krita's shared interpreter may
import. Without ``_vendor/`` (the server, the command line, the tests) the
environment's packages are used, and left as they are.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

#: True when this package carries its own copies (an editor install)
VENDORED = (Path(__file__).resolve().parent / "_vendor").is_dir()


def _load(name: str) -> ModuleType:
    return import_module(f"{__package__}._vendor.{name}" if VENDORED else name)


if TYPE_CHECKING:
    import msgpack
    import websockets.exceptions as websockets_exceptions
    import websockets.frames as websockets_frames
    import websockets.protocol as websockets_protocol
    import websockets.streams as websockets_streams
    import websockets.sync.client as websockets_client
else:
    msgpack = _load("msgpack")
    websockets_exceptions = _load("websockets.exceptions")
    websockets_frames = _load("websockets.frames")
    websockets_protocol = _load("websockets.protocol")
    websockets_streams = _load("websockets.streams")
    websockets_client = _load("websockets.sync.client")

#: msgpack without its C extension (what the editors carry)
PURE_MSGPACK = msgpack.Unpacker.__module__.endswith("msgpack.fallback")
