"""Found through PYTHONPATH by GIMP's plug-in processes in the screenshot test (tests/e2e/test_screenshots.py).

In the img2img plug-in's process only, and only when ``IMG2IMG_E2E_DIALOG_SHOT`` names a PNG path, the
procedure dialog's ``run`` is replaced: it waits until the dialog has been painted, saves the dialog's
window to that path and answers Cancel. The plug-in itself stays as shipped.
Runs on GIMP's Python (3.13 in the chroot).
"""

from __future__ import annotations

import os
import sys
from typing import Any

SHOT = os.environ.get("IMG2IMG_E2E_DIALOG_SHOT", "")
PLUG_IN = "img2img_bridge.py"
TIMEOUT_S = 60


def _install() -> None:
    import gi

    gi.require_version("Gimp", "3.0")
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk, GimpUi, GLib

    def run(dialog: Any) -> Any:
        loop = GLib.MainLoop()
        failure: list[Exception] = []

        def capture() -> bool:
            try:
                window = dialog.get_window()
                window.get_display().sync()
                shot = Gdk.pixbuf_get_from_window(window, 0, 0, window.get_width(), window.get_height())
                shot.savev(SHOT + ".part", "png", [], [])
                os.replace(SHOT + ".part", SHOT)
            except Exception as exc:  # the test reads why from stderr
                failure.append(exc)
            loop.quit()
            return False

        def painted(clock: Any) -> None:
            clock.disconnect(handler[0])
            GLib.idle_add(capture, priority=GLib.PRIORITY_LOW)

        handler: list[int] = []

        def mapped(*_args: Any) -> bool:
            if not handler:
                clock = dialog.get_frame_clock()
                handler.append(clock.connect("after-paint", painted))
                dialog.queue_draw()
            return False

        dialog.connect_after("map-event", mapped)  # show_all() asked for the map; the server has not answered yet
        GLib.timeout_add_seconds(TIMEOUT_S, loop.quit)
        loop.run()
        if failure:
            raise failure[0]
        return False  # the plug-in reads a false answer as Cancel

    GimpUi.ProcedureDialog.run = run


if SHOT and os.path.basename(sys.argv[0] if sys.argv else "") == PLUG_IN:
    _install()
