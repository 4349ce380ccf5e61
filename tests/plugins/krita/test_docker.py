"""The docker's widgets under PyQt5 and PyQt6, with a stand-in ``krita`` module (real Krita runs in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugins.krita.conftest import free_port
from tests.plugins.krita.qt_python import BINDINGS, run_with

FAKE_KRITA = """
import importlib, sys, types
QtCore = importlib.import_module("%(binding)s.QtCore")
QtWidgets = importlib.import_module("%(binding)s.QtWidgets")

krita = types.ModuleType("krita")

class DockWidget(QtWidgets.QDockWidget):
    pass

class DockWidgetFactoryBase:
    DockRight = 3
    class DockPosition:
        DockRight = 3

class DockWidgetFactory(DockWidgetFactoryBase):
    def __init__(self, id, position, klass):
        self.args = (id, position, klass)

class Notifier(QtCore.QObject):
    applicationClosing = QtCore.pyqtSignal()

class App:
    def __init__(self):
        self.factories, self.settings, self._notifier = [], {}, Notifier()
    def addDockWidgetFactory(self, factory): self.factories.append(factory)
    def readSetting(self, group, name, default): return self.settings.get((group, name), default)
    def writeSetting(self, group, name, value): self.settings[(group, name)] = value
    def version(self): return "5.2.9-fake"
    def notifier(self): return self._notifier
    def activeDocument(self): return None
    def documents(self): return []

class Krita:
    app = App()
    @staticmethod
    def instance(): return Krita.app

krita.DockWidget, krita.DockWidgetFactory = DockWidget, DockWidgetFactory
krita.DockWidgetFactoryBase = DockWidgetFactoryBase
krita.Krita, krita.Document, krita.Node = Krita, type("Document", (), {}), type("Node", (), {})
sys.modules["krita"] = krita
"""

SCENARIO = """
import json
app = QtWidgets.QApplication([])
Krita.app.settings[("img2img_bridge", "url")] = "ws://127.0.0.1:%(port)d/ws"
Krita.app.settings[("img2img_bridge", "prompt")] = "stored prompt"
import img2img_bridge
from img2img_bridge import docker as dk, qt
(factory,) = Krita.app.factories
docker = dk.BridgeDocker()
out = {"factory": [factory.args[0], factory.args[1], factory.args[2].__name__]}
out["prompt"] = docker.prompt_edit.toPlainText()

def wait(predicate, ms=15000):
    loop = qt.QtCore.QEventLoop()
    timer = qt.QTimer()
    timer.timeout.connect(lambda: predicate() and loop.quit())
    timer.start(20)
    qt.QTimer.singleShot(ms, loop.quit)
    qt.exec_(loop)
    return predicate()

out["offline_error"] = wait(lambda: "img2img-bridge serve" in docker.error_label.text())
out["reconnect_enabled"] = docker.reconnect_button.isEnabled()
docker.preset_buttons["high"].click()
docker.prompt_edit.setPlainText("a fox")
docker.seed_edit.setText("4000000000")
docker.seed_fixed_check.setChecked(True)
settings = docker.settings()
out["settings"] = [settings.strength, settings.prompt, settings.request_seed, settings.source.value]
out["saved_prompt"] = Krita.app.settings[("img2img_bridge", "prompt")]
docker.live_check.setChecked(True)
out["live_refused"] = [docker.live_check.isChecked(), docker.error_label.text()]
docker.resize(300, 600)
docker.show()
docker.controller._publish(live_image=(bytes([255, 0, 0, 255]) * 4, 2, 2), result_ready=True, seed=5)
out["view_has_pixmap"] = docker.live_view.pixmap() is not None and not docker.live_view.pixmap().isNull()
out["apply_enabled"] = docker.apply_button.isEnabled()
out["seed_label"] = docker.used_seed_label.text()
docker.reuse_seed_button.click()
out["reused"] = docker.seed_edit.text()
docker.shutdown()
out["worker_stopped"] = not docker.runner.alive
print(json.dumps(out))
"""


@pytest.mark.parametrize("binding", BINDINGS)
def test_docker_builds_and_binds_its_widgets(binding: str, vendor: Path) -> None:
    out = run_with(binding, (FAKE_KRITA + SCENARIO) % {"port": free_port(), "binding": binding}, vendor)
    assert out["factory"] == ["img2img_bridge", 3, "BridgeDocker"]
    assert out["prompt"] == "stored prompt"
    assert out["offline_error"] is True and out["reconnect_enabled"] is True
    assert out["settings"] == [0.8, "a fox", 4_000_000_000, "layer"]
    assert out["saved_prompt"] == "a fox"
    assert out["live_refused"] == [False, "open an image to use live mode"]
    assert out["view_has_pixmap"] is True and out["apply_enabled"] is True
    assert out["seed_label"] == "Seed used: 5" and out["reused"] == "5"
    assert out["worker_stopped"] is True
