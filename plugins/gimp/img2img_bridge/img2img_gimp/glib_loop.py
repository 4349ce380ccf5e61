"""The hand-over from the client's reader thread to the plug-in's main thread, through GLib's main loop."""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from typing import Any

GLib: Any = importlib.import_module("gi.repository.GLib")


class GLibLoop:
    """A ``runner.MainLoop`` on GLib: ``post`` is ``GLib.idle_add``, safe from any thread."""

    def __init__(self) -> None:
        self._loop = GLib.MainLoop()

    def post(self, callback: Callable[[], None]) -> None:
        GLib.idle_add(self._run_once, callback)

    def run(self) -> None:
        self._loop.run()

    def quit(self) -> None:
        self._loop.quit()

    def _run_once(self, callback: Callable[[], None]) -> bool:
        try:
            callback()
        except Exception:
            # a bug must not leave run() waiting forever: GIMP would wait on this plug-in with it
            traceback.print_exc()
            self._loop.quit()
        return False  # GLib.SOURCE_REMOVE: run once
