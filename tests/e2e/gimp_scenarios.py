"""Scenarios for the GIMP plug-in, run inside headless GIMP (python-fu-eval) by tests/e2e/test_gimp.py.

GIMP runs this file with ``Gimp``, ``Gegl``, ``GLib``, ``Gio`` and ``GObject`` in
scope. Environment:

- ``IMG2IMG_SCENARIOS``: comma-separated scenario names (default: all)
- ``IMG2IMG_OUT``: a folder for ``results.json`` and the raw RGBA dumps
- ``IMG2IMG_BRIDGE_URL``: a running bridge; ``IMG2IMG_DEAD_URL``: an address where nothing listens
- ``IMG2IMG_BRIDGE_TRACE``: the plug-in's trace file (read back per scenario)

Each scenario builds an image, runs ``plug-in-img2img-bridge`` non-interactively and
records what GIMP holds afterwards; a scenario that raises records its traceback.
Pixels are dumped as raw ``R'G'B'A u8`` (masks as ``Y u8``) so the test compares exact bytes.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

# python-fu-eval runs this file with GIMP's modules in its globals
Gimp: Any = globals()["Gimp"]
Gegl: Any = globals()["Gegl"]

PROCEDURE = "plug-in-img2img-bridge"
PREVIEW_MARK = "img2img-bridge-preview"
FROZEN_MARK = "img2img-bridge-frozen"
SETTINGS_KEY = "img2img-bridge-settings"

OUT = Path(os.environ["IMG2IMG_OUT"])
TRACE = Path(os.environ.get("IMG2IMG_BRIDGE_TRACE", "/dev/null"))


def pattern(width: int, height: int, channels: int, salt: int) -> bytes:
    return bytes(
        value % 256
        for y in range(height)
        for x in range(width)
        for value in ((x * 5 + salt), (y * 7 + 2 * salt), (x * y + 3 * salt), 200 + (x + y) % 56)[:channels]
    )


def add_layer(image: Any, name: str, rect: tuple[int, int, int, int], kind: Any, salt: int, fmt: str) -> Any:
    x, y, width, height = rect
    layer = Gimp.Layer.new(image, name, width, height, kind, 100.0, Gimp.LayerMode.NORMAL)
    layer.set_offsets(x, y)
    image.insert_layer(layer, None, 0)
    channels = {"R'G'B' u8": 3, "R'G'B'A u8": 4, "Y' u8": 1, "Y'A u8": 2}[fmt]
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), fmt, pattern(width, height, channels, salt))
    buffer.flush()
    return layer


def read(drawable: Any, fmt: str = "R'G'B'A u8") -> bytes:
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE))


def composite(image: Any) -> bytes:
    copy = image.duplicate()
    try:
        # an empty bottom layer: GIMP merges nothing (and returns None) when a single layer is visible
        empty = Gimp.Layer.new(copy, "empty", copy.get_width(), copy.get_height(), _rgba_type(copy), 100.0, Gimp.LayerMode.NORMAL)
        copy.insert_layer(empty, None, len(copy.get_layers()))
        return read(copy.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE))
    finally:
        copy.delete()


def _rgba_type(image: Any) -> Any:
    return Gimp.ImageType.GRAYA_IMAGE if image.get_base_type() == Gimp.ImageBaseType.GRAY else Gimp.ImageType.RGBA_IMAGE


def selection_mask(image: Any) -> bytes:
    rect = Gegl.Rectangle.new(0, 0, image.get_width(), image.get_height())
    return bytes(image.get_selection().get_buffer().get(rect, 1.0, "Y u8", Gegl.AbyssPolicy.NONE))


class Record:
    """What one scenario saw; dumps go to files beside results.json."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[str, Any] = {"dumps": {}}

    def dump(self, key: str, data: bytes, width: int, height: int) -> None:
        path = OUT / f"{self.name}.{key}.raw"
        path.write_bytes(data)
        self.data["dumps"][key] = {"file": path.name, "width": width, "height": height}

    def dumps_from(self, other: Record, key: str, as_key: str) -> None:
        self.data["dumps"][as_key] = other.data["dumps"][key]

    def layer(self, key: str, layer: Any) -> None:
        self.dump(key, read(layer), layer.get_width(), layer.get_height())


def describe_layers(image: Any) -> list[dict[str, Any]]:
    layers = []
    for layer in image.get_layers():
        _, x, y = layer.get_offsets()
        layers.append(
            {
                "name": layer.get_name(),
                "rect": [x, y, layer.get_width(), layer.get_height()],
                "has_alpha": layer.has_alpha(),
                "visible": layer.get_visible(),
                "has_mask": layer.get_mask() is not None,
                "type": layer.type().value_nick,
                "parasites": list(layer.get_parasite_list()),
            }
        )
    return layers


def run_plugin(record: Record, image: Any, layer: Any, *, tuned: bool = True, **arguments: Any) -> None:
    """Run the procedure non-interactively; ``tuned``: with 4 steps and the High preset, else the model's recipe."""
    proc = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    if proc is None:
        raise RuntimeError(f"{PROCEDURE} is not registered: the plug-in did not load")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    defaults: dict[str, Any] = {"prompt": "a red fox", "random-seed": False, "seed": 1234}
    if tuned:
        defaults.update({"steps": 4, "strength-preset": "high"})
    defaults["bridge-url"] = os.environ.get("IMG2IMG_BRIDGE_URL", "")
    for name, value in {**defaults, **arguments}.items():
        config.set_property(name, value)
    trace_start = TRACE.stat().st_size if TRACE.exists() else 0
    started = time.monotonic()
    values = proc.run(config)
    record.data["seconds"] = round(time.monotonic() - started, 3)
    status = values.index(0)
    record.data["status"] = status.value_nick
    if status == Gimp.PDBStatusType.SUCCESS:
        record.data["seed"] = values.index(1)
        result = values.index(2)
        record.data["result_name"] = result.get_name()
        record.data["used"] = [values.index(3), values.index(4), values.index(5)]  # steps, guidance, strength
        group = values.index(6)
        record.data["returned_group"] = None if group is None else group.get_name()
        record.layer("result", result)
    else:
        record.data["message"] = values.index(1) if values.length() > 1 else None
    if TRACE.exists():
        with TRACE.open("rb") as fh:
            fh.seek(trace_start)
            record.data["trace"] = [json.loads(line) for line in fh.read().decode().splitlines() if line.strip()]
    record.data["layers"] = describe_layers(image)
    record.data["undo_enabled"] = image.undo_is_enabled()
    record.data["selected"] = [item.get_name() for item in image.get_selected_layers()]


# --- scenarios ----------------------------------------------------------------------------------


def whole(record: Record) -> None:
    """An RGBA layer smaller than the canvas, at an offset, over an opaque background; no selection."""
    image = Gimp.Image.new(96, 72, Gimp.ImageBaseType.RGB)
    add_layer(image, "background", (0, 0, 96, 72), Gimp.ImageType.RGB_IMAGE, 1, "R'G'B' u8")
    source = add_layer(image, "source", (20, 16, 48, 40), Gimp.ImageType.RGBA_IMAGE, 2, "R'G'B'A u8")
    record.layer("source_before", source)
    run_plugin(record, image, source)
    record.layer("source_after", source)


def selection(record: Record) -> None:
    """An elliptical, feathered selection on an offset layer that sticks out of the canvas."""
    image = Gimp.Image.new(128, 96, Gimp.ImageBaseType.RGB)
    add_layer(image, "background", (0, 0, 128, 96), Gimp.ImageType.RGB_IMAGE, 3, "R'G'B' u8")
    source = add_layer(image, "source", (14, 10, 130, 80), Gimp.ImageType.RGBA_IMAGE, 4, "R'G'B'A u8")
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 40, 30, 56, 40)
    Gimp.Selection.feather(image, 12.0)
    record.dump("mask", selection_mask(image), 128, 96)
    record.dump("composite_before", composite(image), 128, 96)
    record.layer("source_before", source)
    run_plugin(record, image, source)
    record.dump("composite_after", composite(image), 128, 96)
    record.layer("source_after", source)


def large_without_alpha(record: Record) -> None:
    """A layer without alpha, larger than the canvas on every side."""
    image = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
    source = add_layer(image, "source", (-20, -12, 100, 80), Gimp.ImageType.RGB_IMAGE, 5, "R'G'B' u8")
    record.layer("source_before", source)
    run_plugin(record, image, source)
    record.layer("source_after", source)


def grayscale(record: Record) -> None:
    image = Gimp.Image.new(40, 32, Gimp.ImageBaseType.GRAY)
    source = add_layer(image, "source", (0, 0, 40, 32), Gimp.ImageType.GRAYA_IMAGE, 6, "Y'A u8")
    record.layer("source_before", source)
    run_plugin(record, image, source)
    record.layer("source_after", source)


def recover(record: Record) -> None:
    """What a run killed by Cancel leaves (a marked preview layer, history frozen) is cleaned up by the next."""
    image = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
    source = add_layer(image, "source", (0, 0, 64, 48), Gimp.ImageType.RGBA_IMAGE, 7, "R'G'B'A u8")
    image.undo_freeze()
    image.attach_parasite(Gimp.Parasite.new(FROZEN_MARK, 0, b"1"))
    stale = add_layer(image, "Img2Img preview", (0, 0, 32, 24), Gimp.ImageType.RGBA_IMAGE, 8, "R'G'B'A u8")
    stale.attach_parasite(Gimp.Parasite.new(PREVIEW_MARK, 0, b"1"))
    record.data["undo_enabled_before"] = image.undo_is_enabled()
    record.data["layers_before"] = describe_layers(image)
    run_plugin(record, image, source)


def model_defaults(record: Record) -> None:
    """Steps, guidance and strength left at their defaults: the bridge runs the model's recipe."""
    image = Gimp.Image.new(48, 40, Gimp.ImageBaseType.RGB)
    source = add_layer(image, "source", (0, 0, 48, 40), Gimp.ImageType.RGBA_IMAGE, 11, "R'G'B'A u8")
    fresh = Gimp.get_pdb().lookup_procedure(PROCEDURE).create_config()  # holds the arguments' defaults
    record.data["argument_defaults"] = {name: fresh.get_property(name) for name in ("steps", "guidance", "strength", "strength-preset")}
    run_plugin(record, image, source, tuned=False)


def no_bridge(record: Record) -> None:
    image = Gimp.Image.new(32, 32, Gimp.ImageBaseType.RGB)
    source = add_layer(image, "source", (0, 0, 32, 32), Gimp.ImageType.RGBA_IMAGE, 9, "R'G'B'A u8")
    dead: dict[str, Any] = {"bridge-url": os.environ["IMG2IMG_DEAD_URL"]}
    run_plugin(record, image, source, **dead)


def unknown_model(record: Record) -> None:
    image = Gimp.Image.new(32, 32, Gimp.ImageBaseType.RGB)
    source = add_layer(image, "source", (0, 0, 32, 32), Gimp.ImageType.RGBA_IMAGE, 10, "R'G'B'A u8")
    run_plugin(record, image, source, model="no-such-model")


def layer_mask(record: Record) -> None:
    """A layer whose layer mask hides its left half, over an opaque background; no selection."""
    image = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
    add_layer(image, "background", (0, 0, 64, 48), Gimp.ImageType.RGB_IMAGE, 12, "R'G'B' u8")
    source = add_layer(image, "source", (0, 0, 64, 48), Gimp.ImageType.RGBA_IMAGE, 13, "R'G'B'A u8")
    mask = source.create_mask(Gimp.AddMaskType.WHITE)
    source.add_mask(mask)
    hidden = bytes(0 if x < 32 else 255 for _ in range(48) for x in range(64))
    mask.get_buffer().set(Gegl.Rectangle.new(0, 0, 64, 48), "Y u8", hidden)
    mask.get_buffer().flush()
    record.dump("layer_mask", hidden, 64, 48)
    record.dump("composite_before", composite(image), 64, 48)
    run_plugin(record, image, source)
    record.dump("composite_after", composite(image), 64, 48)


def half_transparent(record: Record) -> None:
    """A layer at alpha 128 alone on a transparent canvas, with a hard-edged selection in its middle."""
    image = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
    source = add_layer(image, "source", (0, 0, 64, 48), Gimp.ImageType.RGBA_IMAGE, 14, "R'G'B'A u8")
    half = bytearray(read(source))
    half[3::4] = bytes([128]) * (64 * 48)
    source.get_buffer().set(Gegl.Rectangle.new(0, 0, 64, 48), "R'G'B'A u8", bytes(half))
    source.get_buffer().flush()
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 16, 12, 32, 24)
    record.dump("mask", selection_mask(image), 64, 48)
    record.dump("composite_before", composite(image), 64, 48)
    run_plugin(record, image, source)
    record.dump("composite_after", composite(image), 64, 48)


def second_run(record: Record) -> None:
    """Two runs on the same opaque layer: the second result is the one the canvas shows."""
    image = Gimp.Image.new(48, 40, Gimp.ImageBaseType.RGB)
    source = add_layer(image, "source", (0, 0, 48, 40), Gimp.ImageType.RGBA_IMAGE, 15, "R'G'B'A u8")
    first = Record(f"{record.name}_first")
    run_plugin(first, image, source)
    record.data["first"] = first.data
    record.dumps_from(first, "result", "first_result")
    run_plugin(record, image, source, seed=99)
    record.dump("composite_after", composite(image), 48, 40)


def seams(record: Record) -> None:
    """The same feathered selection on a sky-blue layer, run without and with seam matching."""
    for option in (False, True):
        image = Gimp.Image.new(96, 72, Gimp.ImageBaseType.RGB)
        source = add_layer(image, "source", (0, 0, 96, 72), Gimp.ImageType.RGBA_IMAGE, 16, "R'G'B'A u8")
        sky = bytes(v for y in range(72) for x in range(96) for v in (70 + (x * 7 + y * 3) % 20, 130 + (x * 3) % 20, 200, 255))
        source.get_buffer().set(Gegl.Rectangle.new(0, 0, 96, 72), "R'G'B'A u8", sky)
        source.get_buffer().flush()
        image.select_rectangle(Gimp.ChannelOps.REPLACE, 28, 20, 40, 32)
        Gimp.Selection.feather(image, 6.0)
        key = "on" if option else "off"
        record.dump("mask", selection_mask(image), 96, 72)
        run = Record(f"{record.name}_{key}")
        run_plugin(run, image, source, **{"match-seams": option})
        record.data[key] = {"status": run.data["status"], "message": run.data.get("message")}
        record.dump(f"composite_{key}", composite(image), 96, 72)


def variations(record: Record) -> None:
    """Three variations of one opaque layer: one layer group above the source, each layer with its settings."""
    image = Gimp.Image.new(48, 40, Gimp.ImageBaseType.RGB)
    add_layer(image, "background", (0, 0, 48, 40), Gimp.ImageType.RGB_IMAGE, 17, "R'G'B' u8")
    source = add_layer(image, "source", (4, 2, 40, 36), Gimp.ImageType.RGBA_IMAGE, 18, "R'G'B'A u8")
    record.layer("source_before", source)
    run_plugin(record, image, source, count=3, seed=500)
    record.layer("source_after", source)
    group = next(layer for layer in image.get_layers() if layer.is_group())
    children = []
    for index, child in enumerate(group.get_children()):
        _, x, y = child.get_offsets()
        parasite = child.get_parasite(SETTINGS_KEY)
        children.append(
            {
                "name": child.get_name(),
                "rect": [x, y, child.get_width(), child.get_height()],
                "visible": child.get_visible(),
                "settings": None if parasite is None else bytes(parasite.get_data()).decode(),
                "persistent": None if parasite is None else bool(parasite.get_flags() & Gimp.PARASITE_PERSISTENT),
            }
        )
        record.layer(f"variation_{index}", child)
    record.data["group"] = {"name": group.get_name(), "visible": group.get_visible(), "children": children}


SCENARIOS = {
    "whole": whole,
    "selection": selection,
    "large_without_alpha": large_without_alpha,
    "grayscale": grayscale,
    "recover": recover,
    "model_defaults": model_defaults,
    "no_bridge": no_bridge,
    "unknown_model": unknown_model,
    "layer_mask": layer_mask,
    "half_transparent": half_transparent,
    "second_run": second_run,
    "seams": seams,
    "variations": variations,
}


def main() -> None:
    names = [n for n in os.environ.get("IMG2IMG_SCENARIOS", ",".join(SCENARIOS)).split(",") if n]
    results: dict[str, Any] = {}
    for name in names:
        record = Record(name)
        try:
            SCENARIOS[name](record)
        except Exception:
            record.data["exception"] = traceback.format_exc()
        results[name] = record.data
        (OUT / "results.json").write_text(json.dumps(results, indent=1))


main()
