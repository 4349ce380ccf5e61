"""Where the GIMP plug-in finds the bridge's client, protocol and shared job logic: ``img2img_gimp._bridge``, installed
beside this file by ``install-plugins``, or the checkout's ``bridge.editor`` in the unit tests."""

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
