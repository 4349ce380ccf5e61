#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters > AI > Img2Img... runs the img2img bridge on the active layer or the selection.

Registration and the run function; the work is in ``img2img_gimp`` (GIMP calls
only in ``gimp_canvas``, ``glib_loop`` and ``dialog``).
"""

from __future__ import annotations

import importlib
import random
import sys
from typing import Any

# GIMP runs this file as a script, so its folder (with img2img_gimp, which carries the bridge's editor package as
# img2img_gimp._bridge) is first on sys.path already

_gi: Any = importlib.import_module("gi")
_gi.require_version("Gimp", "3.0")
_gi.require_version("Gegl", "0.4")
Gimp: Any = importlib.import_module("gi.repository.Gimp")
GLib: Any = importlib.import_module("gi.repository.GLib")
GObject: Any = importlib.import_module("gi.repository.GObject")

from img2img_gimp.errors import PluginError  # noqa: E402
from img2img_gimp.gimp_canvas import GimpCanvas  # noqa: E402
from img2img_gimp.glib_loop import GLibLoop  # noqa: E402
from img2img_gimp.job import JobState  # noqa: E402
from img2img_gimp.runner import run_job  # noqa: E402
from img2img_gimp.settings import (  # noqa: E402
    ARGUMENTS,
    AUTO_GUIDANCE,
    AUTO_STEPS,
    AUTO_STRENGTH,
    MAX_SEED,
    MAX_STEPS,
    Argument,
    BoolArg,
    ChoiceArg,
    DoubleArg,
    IntArg,
    JobSettings,
)
from img2img_gimp.source import read_source  # noqa: E402
from img2img_gimp.trace import traced  # noqa: E402

PROCEDURE = "plug-in-img2img-bridge"
PLUG_IN_NAME = "img2img_bridge"
MENU = "<Image>/Filters/AI"


def run(procedure: Any, run_mode: Any, image: Any, drawables: Any, config: Any, _data: Any) -> Any:
    """Ask (interactive runs), read the layer, run the job until it ends, report the layer (and group) and seed."""
    try:
        layer = _single_layer(list(drawables))
        if run_mode == Gimp.RunMode.INTERACTIVE:
            from img2img_gimp import dialog  # Gtk only when a person is there

            if not dialog.ask(procedure, config, PLUG_IN_NAME):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        settings = JobSettings.from_arguments(config.get_property).with_seed(random.Random())
        canvas = GimpCanvas(image, layer)
        canvas.recover()
        source = read_source(canvas)
        Gimp.progress_init("Img2Img\u2026")
        try:
            job = run_job(settings, source, traced(canvas), GLibLoop())
        finally:
            Gimp.progress_end()
    except PluginError as exc:
        return _failure(procedure, exc.message)
    if job.state is JobState.CANCELLED:
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
    if job.state is not JobState.FINISHED or job.seed is None:
        return _failure(procedure, job.error or "Img2Img ended without a result.")
    if 0 <= job.seed <= MAX_SEED:
        config.set_property("seed", job.seed)  # remembered with the other values: untick Random seed to reuse it
    steps, guidance, strength = job.used
    return Gimp.ValueArray.new_from_values(
        [
            GObject.Value(Gimp.PDBStatusType, Gimp.PDBStatusType.SUCCESS),
            GObject.Value(GObject.TYPE_INT, job.seed),
            GObject.Value(Gimp.Layer, canvas.result),
            GObject.Value(GObject.TYPE_INT, AUTO_STEPS if steps is None else min(steps, MAX_STEPS)),
            GObject.Value(GObject.TYPE_DOUBLE, AUTO_GUIDANCE if guidance is None else guidance),
            GObject.Value(GObject.TYPE_DOUBLE, AUTO_STRENGTH if strength is None else strength),
            GObject.Value(Gimp.GroupLayer, canvas.group),
        ]
    )


def _single_layer(drawables: list[Any]) -> Any:
    if len(drawables) != 1:
        raise PluginError(f"Img2Img works on one layer at a time; {len(drawables)} are selected.")
    layer = drawables[0]
    if not isinstance(layer, Gimp.Layer):
        raise PluginError("Img2Img works on a layer: select a layer instead of a channel or mask.")
    return layer


def _failure(procedure: Any, message: str) -> Any:
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))


def _add_argument(procedure: Any, arg: Argument) -> None:
    flags = GObject.ParamFlags.READWRITE
    if isinstance(arg, ChoiceArg):
        choice = Gimp.Choice.new()
        for index, (value, label) in enumerate(arg.choices):
            choice.add(value, index, label, "")
        procedure.add_choice_argument(arg.name, arg.label, arg.blurb, choice, arg.default, flags)
    elif isinstance(arg, DoubleArg):
        procedure.add_double_argument(arg.name, arg.label, arg.blurb, arg.minimum, arg.maximum, arg.default, flags)
    elif isinstance(arg, IntArg):
        procedure.add_int_argument(arg.name, arg.label, arg.blurb, arg.minimum, arg.maximum, arg.default, flags)
    elif isinstance(arg, BoolArg):
        procedure.add_boolean_argument(arg.name, arg.label, arg.blurb, arg.default, flags)
    else:
        procedure.add_string_argument(arg.name, arg.label, arg.blurb, arg.default, flags)


class Img2ImgPlugIn(Gimp.PlugIn):
    """Registers the one procedure, ``plug-in-img2img-bridge``."""

    def do_query_procedures(self) -> list[str]:
        return [PROCEDURE]

    def do_set_i18n(self, _name: str) -> bool:
        return False

    def do_create_procedure(self, name: str) -> Any:
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("_Img2Img\u2026")
        procedure.add_menu_path(MENU)
        procedure.set_documentation(
            "Regenerate the layer or the selection with the img2img bridge",
            "Sends the active layer (or the selection's area with its feathered mask) to a running img2img bridge, "
            "shows its previews in a preview layer and adds the result as a new layer above the source "
            "(several variations: a layer group of them, the first shown; each layer's settings in a parasite). "
            "Start the bridge first: img2img-bridge serve",
            name,
        )
        procedure.set_attribution("img2img-bridge", "img2img-bridge", "2025")
        for arg in ARGUMENTS:
            _add_argument(procedure, arg)
        flags = GObject.ParamFlags.READWRITE
        procedure.add_int_return_value("seed", "Seed", "The seed used", 0, MAX_SEED, 0, flags)
        procedure.add_layer_return_value("layer", "Layer", "The new layer", True, flags)
        # what ran, the model's recipe where the arguments said auto (0 / -1 / 0 when an old bridge does not say)
        procedure.add_int_return_value("steps", "Steps", "The steps of the schedule used", AUTO_STEPS, MAX_STEPS, AUTO_STEPS, flags)
        procedure.add_double_return_value("guidance", "Guidance", "The guidance used", AUTO_GUIDANCE, 30.0, AUTO_GUIDANCE, flags)
        procedure.add_double_return_value("strength", "Strength", "The strength used", AUTO_STRENGTH, 1.0, AUTO_STRENGTH, flags)
        procedure.add_group_layer_return_value(
            "variations", "Variations", "With Variations above 1: the layer group holding them ('layer' is its first)", True, flags
        )
        return procedure


if __name__ == "__main__":
    Gimp.main(Img2ImgPlugIn.__gtype__, sys.argv)
