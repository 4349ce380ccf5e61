"""Run a script under PyQt5 or PyQt6 in a fresh process: the two bindings never share one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
BINDINGS = ("PyQt5", "PyQt6")


def qt_python() -> str:
    """An interpreter with PyQt5 and PyQt6 installed: $IMG2IMG_QT_PYTHON, else .venv-qt/ in the checkout."""
    configured = os.environ.get("IMG2IMG_QT_PYTHON")
    if configured:
        return configured
    default = ROOT / ".venv-qt" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if not default.exists():
        pytest.skip("no PyQt interpreter: python3 -m venv .venv-qt && .venv-qt/bin/pip install PyQt5 PyQt6")
    return str(default)


def run_with(binding: str, script: str, pykrita: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``script`` with ``binding`` imported first (as Krita does); it prints one JSON object last.

    ``pykrita`` is a folder made by ``bridge.install.write_krita_plugin``: the plug-in as installed, with
    its own copies of the editor package and its pure-Python dependencies.
    """
    prologue = f"import sys\nsys.path[:0] = [{str(pykrita)!r}]\nimport {binding}.QtCore\n"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("IMG2IMG_QT_BINDING", None)
    proc = subprocess.run([qt_python(), "-c", prologue + script], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert proc.returncode == 0, f"{binding} script failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
