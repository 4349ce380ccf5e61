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

from bridge.editor import protocol as p
def shown():
    s = docker.settings()
    texts = [docker.steps_spin.text(), docker.guidance_spin.text(), docker.strength_label.text(), docker.live_steps_spin.text()]
    return {"sent": [s.steps, s.guidance, s.strength, s.live_steps], "texts": texts, "slider": docker.strength_slider.value()}
def stored():
    return [Krita.app.settings.get(("img2img_bridge", name)) for name in ("steps", "guidance", "strength", "live_steps")]
out["unknown"] = shown()
turbo = p.Recipe(steps=2, guidance=0.0, strength=0.5, live_steps=1, live_strength=0.5, resolution=512)
sd15 = p.Recipe(steps=30, guidance=7.5, strength=0.6, live_steps=4, live_strength=0.5, resolution=512)
docker.controller._publish(recipe=turbo)
out["turbo"] = shown()
docker.controller._publish(recipe=sd15)
out["sd15"] = shown()
docker.prompt_edit.setPlainText("saves")
out["stored_auto"] = stored()
docker.steps_spin.setValue(12)
docker.guidance_spin.setValue(3.5)
docker.live_steps_spin.setValue(3)
docker.strength_slider.setValue(42)
out["changed"] = shown()
out["stored_changed"] = stored()
docker.controller._publish(recipe=turbo)
out["changed_then_turbo"] = shown()
docker.preset_buttons["model"].click()
docker.steps_spin.setValue(0)
docker.guidance_spin.setValue(-0.5)
docker.live_steps_spin.setValue(0)
out["back_to_auto"] = shown()
out["stored_back"] = stored()
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
app.processEvents()
docker.controller._publish(recipe=p.Recipe(steps=30, guidance=7.5, strength=0.6, live_steps=40, live_strength=0.5, resolution=512))
app.processEvents()
out["spins_fit"] = [[s.width(), s.sizeHint().width()] for s in (docker.steps_spin, docker.live_steps_spin, docker.guidance_spin)]
docker.controller._publish(live_image=(bytes([255, 0, 0, 255]) * 4, 2, 2), result_ready=True, seed=5)
out["view_has_pixmap"] = docker.live_view.pixmap() is not None and not docker.live_view.pixmap().isNull()
out["apply_enabled"] = docker.apply_button.isEnabled()
from img2img_bridge.live import LiveState, LiveStats
docker.controller._publish(live=LiveState.RUNNING, live_stats=LiveStats(fps=24.0, latency_s=0.05, capture_ms=1.5))
out["live_stats"] = docker.live_stats_label.text()
docker.controller._publish(live=LiveState.OFF)
out["live_stats_off"] = docker.live_stats_label.text()
out["seed_label"] = docker.used_seed_label.text()
docker.reuse_seed_button.click()
out["reused"] = docker.seed_edit.text()
docker.shutdown()
out["worker_stopped"] = not docker.runner.alive
again = dk.BridgeDocker()  # the next session, from the stored settings
docker = again
out["next_session"] = shown()
from bridge.editor.history import HistoryEntry, ResultSettings
from bridge.editor.regions import Rect
from img2img_bridge.controller import StripItem
reused = ResultSettings("reused fox", "blur", 0.35, 7, 2.5, 321, "")
again.controller.history.add(HistoryEntry(None, "j1", 2, 3, reused, Rect(0, 0, 1, 1), bytes(4), bytes(4), (1, 1)))
items = tuple(StripItem("j1", i, (bytes([i, 0, 0, 255]), 1, 1), "tip %%d" %% i, True) for i in range(3))
again.controller._publish(strip=(items, (StripItem("j0", 0, None, "coming", False),)), picked=("j1", 2))
strip = again.strip
out["strip"] = [strip.count(), strip.item(2).isSelected(), strip.item(2).toolTip(), not strip.item(0).icon().isNull(), strip.item(4).text()]
again.reuse_settings_button.click()
s = again.settings()
out["reused_settings"] = [s.prompt, s.negative_prompt, s.strength, s.steps, s.guidance, s.seed, s.fixed_seed]
again.count_spin.setValue(4)
out["count"] = [again.settings().count, Krita.app.settings[("img2img_bridge", "count")]]
again.shutdown()
print(json.dumps(out))
"""


@pytest.mark.parametrize("binding", BINDINGS)
def test_docker_builds_and_binds_its_widgets(binding: str, pykrita: Path) -> None:
    out = run_with(binding, (FAKE_KRITA + SCENARIO) % {"port": free_port(), "binding": binding}, pykrita)
    assert out["factory"] == ["img2img_bridge", 3, "BridgeDocker"]
    assert out["prompt"] == "stored prompt"
    assert out["offline_error"] is True and out["reconnect_enabled"] is True
    assert out["settings"] == [0.8, "a fox", 4_000_000_000, "layer"]
    assert out["saved_prompt"] == "a fox"
    assert out["live_refused"] == [False, "Open an image to use live mode."]
    assert out["view_has_pixmap"] is True and out["apply_enabled"] is True
    assert out["live_stats"] == "24.0 fps · latency 50 ms · capture 1.5 ms" and out["live_stats_off"] == ""
    assert out["seed_label"] == "Seed used: 5" and out["reused"] == "5"
    assert out["worker_stopped"] is True
    assert out["strip"] == [5, True, "tip 2", True, "…"], "3 thumbnails, a gap between jobs, one still coming"
    assert out["reused_settings"] == ["reused fox", "blur", 0.35, 7, 2.5, 321, True]
    assert out["count"] == [4, "4"]
    assert all(width >= wanted for width, wanted in out["spins_fit"]), f"a model's 'auto (N)' is cut: {out['spins_fit']}"


@pytest.mark.parametrize("binding", BINDINGS)
def test_the_docker_shows_the_models_defaults_and_sends_only_what_the_artist_changed(binding: str, pykrita: Path) -> None:
    out = run_with(binding, (FAKE_KRITA + SCENARIO) % {"port": free_port(), "binding": binding}, pykrita)
    auto = [None, None, None, None]
    assert out["unknown"]["sent"] == auto and out["unknown"]["texts"] == ["auto", "auto", "auto", "auto"]
    assert out["turbo"] == {"sent": auto, "texts": ["auto (2)", "auto (off)", "auto (0.50)", "auto (1)"], "slider": 50}
    assert out["sd15"] == {"sent": auto, "texts": ["auto (30)", "auto (7.5)", "auto (0.60)", "auto (4)"], "slider": 60}
    assert out["stored_auto"] == ["auto", "auto", "auto", "auto"]
    assert out["changed"]["sent"] == [12, 3.5, 0.42, 3] and out["changed"]["texts"][2] == "0.42"
    assert out["stored_changed"] == ["12", "3.5", "0.42", "3"]
    assert out["changed_then_turbo"] == out["changed"]  # a model switch leaves the artist's values alone
    assert out["back_to_auto"]["sent"] == auto and out["back_to_auto"]["texts"][2] == "auto (0.50)"
    assert out["stored_back"] == ["auto", "auto", "auto", "auto"]
    assert out["next_session"]["sent"] == [None, None, 0.8, None]  # the High preset was the last strength chosen
