"""Make the GIMP plug-in's ``img2img_gimp`` package importable, as it is when GIMP runs the entry file."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PLUGIN_DIR = ROOT / "plugins" / "gimp" / "img2img_bridge"

# Appended, not prepended: the folder also holds the entry file img2img_bridge.py, which must not
# shadow the Krita plug-in's package of the same name in the same test run.
for folder in (ROOT, PLUGIN_DIR):  # ROOT: the bridge package for Pythons it is not installed in
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
