"""img2img bridge for Krita: a docker that sends the canvas to a local img2img bridge and shows what comes back.

Krita imports this package at start-up, in the interpreter it shares with every
other plug-in: everything this one brings, the bridge's editor package and its
websockets and msgpack copies included, is imported under ``img2img_bridge.``
(see ``bridge_package``), nothing as a top-level name.
"""

from __future__ import annotations

try:
    from krita import Krita  # noqa: F401  (only present inside Krita)
except ImportError:
    pass
else:
    from .docker import register

    register()
