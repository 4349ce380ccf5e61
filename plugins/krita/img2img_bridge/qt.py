"""The Qt binding Krita runs on: PyQt6 under Krita 6, PyQt5 under Krita 5.

The binding Krita has already loaded wins and the other one is never imported
(Krita 5.3+/6 refuse it, and loading both crashes). Code elsewhere uses scoped
enums (``Qt.AlignmentFlag.AlignLeft``), ``exec()`` and ``QAction`` from here, which
read the same under both. Also the hand-over of worker-thread objects to the
GUI thread (``Relay``).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections import deque
from typing import Any, Callable

BINDINGS = ("PyQt6", "PyQt5")


def detect_binding() -> str:
    """The binding to use: one already loaded, else the one ``krita`` loads, else any installed (tests)."""
    for name in BINDINGS:
        if name in sys.modules:
            return name
    try:
        importlib.import_module("krita")
    except ImportError:
        pass
    else:
        for name in BINDINGS:
            if name in sys.modules:
                return name
    wanted = os.environ.get("IMG2IMG_QT_BINDING")
    for name in (wanted,) if wanted else BINDINGS:
        try:
            importlib.import_module(f"{name}.QtCore")
        except ImportError:
            continue
        return name
    raise ImportError("neither PyQt6 nor PyQt5 can be imported")


BINDING = detect_binding()
QT6 = BINDING == "PyQt6"

QtCore: Any = importlib.import_module(f"{BINDING}.QtCore")
QtGui: Any = importlib.import_module(f"{BINDING}.QtGui")
QtWidgets: Any = importlib.import_module(f"{BINDING}.QtWidgets")

Qt: Any = QtCore.Qt
QObject: Any = QtCore.QObject
QTimer: Any = QtCore.QTimer
QByteArray: Any = QtCore.QByteArray
Signal: Any = QtCore.pyqtSignal
QImage: Any = QtGui.QImage
QPixmap: Any = QtGui.QPixmap
#: QAction moved from QtWidgets to QtGui in Qt 6.
QAction: Any = QtGui.QAction if QT6 else QtWidgets.QAction


def exec_(target: Any, *args: Any) -> Any:
    """``target.exec()``: PyQt5 has both spellings, PyQt6 only this one."""
    return target.exec(*args)


def image_from_rgba(rgba: bytes, width: int, height: int) -> Any:
    """A QImage owning a copy of RGBA 8-bit pixels."""
    image = QImage(rgba, width, height, width * 4, QImage.Format.Format_RGBA8888)
    return image.copy()


class Relay(QObject):
    """Hands objects posted from any thread to ``receiver`` on the thread that created the relay.

    Posting queues the object and emits a signal; Qt delivers the signal through
    the receiving thread's event loop (a queued connection), where every object
    posted so far is handed over in one batch.
    """

    _posted = Signal()

    def __init__(self, receiver: Callable[[list[Any]], None]) -> None:
        super().__init__()
        self._receiver = receiver
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._posted.connect(self._drain, Qt.ConnectionType.QueuedConnection)

    def post(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
        self._posted.emit()

    def _drain(self) -> None:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        if items:
            self._receiver(items)
