"""Opens the plug-in's dialog in GIMP for the README's picture; run by tests/e2e/test_screenshots.py.

GIMP runs this file (python-fu-eval) under Xvfb with ``gimp_dialog_hook`` on PYTHONPATH: the hook
saves the painted dialog to ``IMG2IMG_E2E_DIALOG_SHOT`` and answers Cancel. A script's interactive
run shows the last values used, so a non-interactive job runs first with the values to show.
Writes ``IMG2IMG_OUT/dialog.json``: the two runs' statuses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

Gimp: Any = globals()["Gimp"]
Gegl: Any = globals()["Gegl"]

PROCEDURE = "plug-in-img2img-bridge"
WIDTH, HEIGHT = 160, 120
VALUES = {
    "prompt": "a red fox in fresh snow, golden hour, soft light",
    "negative-prompt": "blurry, watermark",
    "strength-preset": "medium",
    "strength": 0.55,
    "steps": 4,
    "random-seed": False,
    "seed": 1234,
    "bridge-url": os.environ["IMG2IMG_BRIDGE_URL"],
}


def run(image: Any, layer: Any, mode: Any) -> str:
    proc = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    if proc is None:
        raise RuntimeError(f"{PROCEDURE} is not registered: the plug-in did not load")
    config = proc.create_config()
    config.set_property("run-mode", mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for name, value in VALUES.items():
        config.set_property(name, value)
    values = proc.run(config)
    status = values.index(0)
    message = values.index(1) if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1 else None
    return f"{status.value_nick}: {message}" if message else str(status.value_nick)


image = Gimp.Image.new(WIDTH, HEIGHT, Gimp.ImageBaseType.RGB)
source = Gimp.Layer.new(image, "photo", WIDTH, HEIGHT, Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
image.insert_layer(source, None, 0)
buffer = source.get_buffer()
pixels = bytes(v for y in range(HEIGHT) for x in range(WIDTH) for v in (x * 255 // WIDTH, y * 255 // HEIGHT, 128))
buffer.set(Gegl.Rectangle.new(0, 0, WIDTH, HEIGHT), "R'G'B' u8", pixels)
buffer.flush()
try:
    statuses = {
        "noninteractive": run(image, source, Gimp.RunMode.NONINTERACTIVE),
        "interactive": run(image, source, Gimp.RunMode.INTERACTIVE),
    }
finally:
    image.delete()
out = Path(os.environ["IMG2IMG_OUT"]) / "dialog.json"
out.write_text(json.dumps(statuses))
