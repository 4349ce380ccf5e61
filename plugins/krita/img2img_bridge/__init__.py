"""img2img bridge for Krita: a docker that sends the canvas to a local img2img bridge and shows what comes back.

Krita imports this package at start-up. The installer puts the client library
and pure-Python websockets and msgpack in ``vendor/`` beside this file; that
folder goes first on ``sys.path`` before anything imports them. Run from the
source tree (unit tests) there is no ``vendor/`` and the checkout's ``bridge``
package is used.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _use_vendor() -> None:
    vendor = Path(__file__).resolve().parent / "vendor"
    if vendor.is_dir() and str(vendor) not in sys.path:
        sys.path.insert(0, str(vendor))


_use_vendor()

try:
    from krita import Krita  # noqa: F401  (only present inside Krita)
except ImportError:
    pass
else:
    from .docker import register

    register()
