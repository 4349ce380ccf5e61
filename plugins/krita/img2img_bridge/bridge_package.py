"""The bridge's editor package as this plug-in imports it: its private copy ``img2img_bridge._bridge``.

Krita runs every plug-in in one interpreter, so the copy (and the websockets and
msgpack inside it) is never a top-level name. The unit tests run the plug-in
from the checkout, which has no copy: there it is ``bridge.editor`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING or not (Path(__file__).resolve().parent / "_bridge").is_dir():
    from bridge.editor import protocol as p
    from bridge.editor.client import *  # noqa: F403
    from bridge.editor.history import *  # noqa: F403
    from bridge.editor.plugin import *  # noqa: F403
    from bridge.editor.presets import *  # noqa: F403
    from bridge.editor.regions import *  # noqa: F403
else:
    from ._bridge import protocol as p  # noqa: F401  (re-exported)
    from ._bridge.client import *  # noqa: F403
    from ._bridge.history import *  # noqa: F403
    from ._bridge.plugin import *  # noqa: F403
    from ._bridge.presets import *  # noqa: F403
    from ._bridge.regions import *  # noqa: F403
