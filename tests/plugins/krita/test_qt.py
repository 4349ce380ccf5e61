from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugins.krita.qt_python import BINDINGS, run_with

SHIM = """
import json, threading
from img2img_bridge import qt

app = qt.QtCore.QCoreApplication([])
received = []
main = threading.get_ident()

def receive(items):
    received.append((threading.get_ident() == main, list(items)))
    if sum(len(batch) for _, batch in received) == 3:
        loop.quit()

relay = qt.Relay(receive)
worker = threading.Thread(target=lambda: [relay.post(i) for i in (1, 2, 3)])
loop = qt.QtCore.QEventLoop()
qt.QTimer.singleShot(0, worker.start)
qt.QTimer.singleShot(10000, loop.quit)
qt.exec_(loop)
worker.join()
other = "PyQt5" if qt.BINDING == "PyQt6" else "PyQt6"
print(json.dumps({
    "binding": qt.BINDING,
    "qt6": qt.QT6,
    "other_loaded": any(name == other or name.startswith(other + ".") for name in __import__("sys").modules),
    "qaction_module": qt.QAction.__module__,
    "on_main_thread": all(flag for flag, _ in received),
    "items": [i for _, batch in received for i in batch],
    "scoped_enum": int(qt.Qt.AlignmentFlag.AlignLeft) == 1,
}))
"""


@pytest.mark.parametrize("binding", BINDINGS)
def test_shim_uses_the_loaded_binding_and_never_the_other(binding: str, pykrita: Path) -> None:
    result = run_with(binding, SHIM, pykrita)
    assert result["binding"] == binding
    assert result["qt6"] is (binding == "PyQt6")
    assert result["other_loaded"] is False
    assert result["qaction_module"] == f"{binding}.{'QtGui' if binding == 'PyQt6' else 'QtWidgets'}"
    assert result["scoped_enum"] is True


@pytest.mark.parametrize("binding", BINDINGS)
def test_relay_hands_worker_objects_to_the_gui_thread_in_order(binding: str, pykrita: Path) -> None:
    result = run_with(binding, SHIM, pykrita)
    assert result["items"] == [1, 2, 3]
    assert result["on_main_thread"] is True
