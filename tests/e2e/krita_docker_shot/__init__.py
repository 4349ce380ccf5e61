"""A pykrita extension that photographs the img2img docker during a job, for the README.

It acts only when ``IMG2IMG_KRITA_SHOT`` names the PNG to write (tests/e2e/test_screenshots.py). It finds
the docker by its title and drives it through its own widgets: once the bridge's model shows in the model
list it clicks Generate, waits for the progress bar to reach the step where the test's bridge holds the job,
saves the docker and waits for the job to end (the test lets it go on once the PNG exists). Then it writes
what it saw to ``IMG2IMG_KRITA_SHOT + ".json"`` and quits Krita.
"""

from __future__ import annotations

import json
import os
import traceback
from typing import Any

from krita import Extension, Krita
from krita_scenarios import wait_until  # installed beside this one; it stays idle without its own variable
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QComboBox, QDockWidget, QLabel, QProgressBar, QPushButton

SHOT = os.environ.get("IMG2IMG_KRITA_SHOT", "")
TITLE = "img2img Bridge"
MODEL = "tiny"
SIZE = (420, 660)  # the docker, floating: room for every row


def button(dock: Any, text: str) -> Any:
    return next(b for b in dock.findChildren(QPushButton) if b.text() == text)


def shoot() -> None:
    facts: dict[str, Any] = {}
    try:
        window = Krita.instance().activeWindow()
        assert window is not None, "Krita has no window"
        window = window.qwindow()
        dock = next(d for d in window.findChildren(QDockWidget) if d.windowTitle() == TITLE)
        dock.setFloating(True)
        dock.show()
        dock.resize(*SIZE)
        facts["connected"] = wait_until(lambda: any(c.findText(MODEL) >= 0 for c in dock.findChildren(QComboBox)), 30)
        generate, progress = button(dock, "Generate"), dock.findChild(QProgressBar)
        generate.click()
        # the test's bridge holds the job at step 2 of 4: half way, whatever order the events came in
        facts["progress_moved"] = wait_until(lambda: progress.value() >= progress.maximum() // 2)
        facts["progress"] = progress.value() / max(1, progress.maximum())
        facts["texts"] = [label.text() for label in dock.findChildren(QLabel) if label.text()]
        facts["size"] = [dock.width(), dock.height()]
        dock.grab().save(SHOT + ".part.png", "PNG")
        os.replace(SHOT + ".part.png", SHOT)
        facts["ended"] = wait_until(generate.isEnabled)
        facts["texts_after"] = [label.text() for label in dock.findChildren(QLabel) if label.text()]
    except Exception:
        facts["error"] = traceback.format_exc()
    app = Krita.instance()
    for doc in app.documents():
        doc.setModified(False)
    with open(SHOT + ".json.part", "w") as fh:
        json.dump(facts, fh, indent=1)
    os.replace(SHOT + ".json.part", SHOT + ".json")
    app.action("file_quit").trigger()


class DockerShot(Extension):
    def setup(self) -> None:
        if SHOT:
            Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(500, shoot))

    def createActions(self, window: Any) -> None:
        pass


Krita.instance().addExtension(DockerShot(Krita.instance()))
