"""The interactive dialog: GIMP's procedure dialog plus a model list read from the bridge.

Imported only for interactive runs: batch runs must not load GimpUi or Gtk.
"""

from __future__ import annotations

import importlib
from typing import Any

from .models import BridgeInfo, describe_settings, probe
from .settings import linked_strength, opening_strength

_gi: Any = importlib.import_module("gi")
_gi.require_version("GimpUi", "3.0")
_gi.require_version("Gtk", "3.0")
GimpUi: Any = importlib.import_module("gi.repository.GimpUi")
Gtk: Any = importlib.import_module("gi.repository.Gtk")

TITLE = "Img2Img"
FIELDS = (
    "strength-preset",
    "strength",
    "steps",
    "guidance",
    "random-seed",
    "seed",
    "count",
    "match-seams",
    "bridge-url",
)
#: The arguments the line about the model's defaults follows.
WATCHED = ("model", "strength-preset", "strength", "steps", "guidance")


def ask(procedure: Any, config: Any, plug_in_name: str) -> bool:
    """Show the dialog; True when the user pressed OK (the values are then in ``config``)."""
    GimpUi.init(plug_in_name)
    info = probe(str(config.get_property("bridge-url") or ""), str(config.get_property("model") or ""))
    dialog = GimpUi.ProcedureDialog.new(procedure, config, TITLE)
    for name, label in (("prompt", "_Prompt"), ("negative-prompt", "_Negative prompt")):
        dialog.get_content_area().pack_start(_text_frame(config, name, label), False, False, 0)
    strength = dialog.get_spin_scale("strength", 1.0)
    strength.set_increments(0.01, 0.1)
    strength.set_digits(2)
    guidance = dialog.get_spin_scale("guidance", 1.0)
    guidance.set_increments(0.5, 1.0)
    guidance.set_digits(1)
    dialog.set_sensitive("seed", True, config, "random-seed", True)  # a seed only matters when not random
    preset, value = opening_strength(str(config.get_property("strength-preset")), float(config.get_property("strength")))
    config.set_property("strength", value)
    config.set_property("strength-preset", preset)
    _link_strength(config)
    dialog.fill(list(FIELDS))
    dialog.get_content_area().pack_start(_model_row(config, info), False, False, 6)
    dialog.show_all()
    accepted = bool(dialog.run())
    dialog.destroy()
    return accepted


def _text_frame(config: Any, name: str, label: str) -> Any:
    """A multi-line view of a string argument (prompts get long) in a frame titled ``label``.

    Built here rather than with the dialog's ``get_widget``, which checks a text view's mnemonic before a label
    can point at it, and complains that it has none.
    """
    view = Gtk.TextView.new_with_buffer(GimpUi.prop_text_buffer_new(config, name, -1))
    view.set_wrap_mode(Gtk.WrapMode.WORD_CHAR)
    for side in ("top", "bottom", "left", "right"):
        getattr(view, f"set_{side}_margin")(3)
    view.set_hexpand(True)
    view.set_tooltip_text(config.find_property(name).get_blurb())
    title = Gtk.Label.new_with_mnemonic(label)
    title.set_mnemonic_widget(view)
    frame = GimpUi.Frame.new(None)
    frame.set_label_widget(title)
    frame.add(view)
    return frame


def _link_strength(config: Any) -> None:
    def changed(_config: Any, pspec: Any) -> None:
        preset, strength = str(config.get_property("strength-preset")), float(config.get_property("strength"))
        new_preset, new_strength = linked_strength(pspec.name, preset, strength)
        if new_strength != strength:
            config.set_property("strength", new_strength)
        if new_preset != preset:
            config.set_property("strength-preset", new_preset)

    config.connect("notify::strength-preset", changed)
    config.connect("notify::strength", changed)


def _model_row(config: Any, info: BridgeInfo) -> Any:
    combo = Gtk.ComboBoxText.new_with_entry()
    for name in info.models:
        combo.append_text(name)
    combo.get_child().set_text(info.selected)
    config.set_property("model", info.selected)
    combo.connect("changed", lambda widget: config.set_property("model", widget.get_active_text() or ""))
    combo.set_tooltip_text("The bridge's model to use; empty keeps the loaded one")
    label = Gtk.Label.new_with_mnemonic("_Model")
    label.set_mnemonic_widget(combo)
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    row.pack_start(label, False, False, 0)
    row.pack_start(combo, True, True, 0)
    status = Gtk.Label(label=info.status, xalign=0.0)
    status.set_line_wrap(True)
    status.set_max_width_chars(60)
    settings = Gtk.Label(xalign=0.0)
    settings.set_tooltip_text("Auto: the model's own default (Steps 0, Guidance -1, Strength 0 or the Model default preset)")

    def show_settings(*_args: Any) -> None:
        settings.set_text(
            describe_settings(
                info.recipe(str(config.get_property("model") or "")),
                str(config.get_property("strength-preset")),
                float(config.get_property("strength")),
                int(config.get_property("steps")),
                float(config.get_property("guidance")),
            )
        )

    for name in WATCHED:
        config.connect(f"notify::{name}", show_settings)
    show_settings()
    box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
    box.set_border_width(12)
    box.pack_start(row, False, False, 0)
    box.pack_start(status, False, False, 0)
    box.pack_start(settings, False, False, 0)
    return box
