"""The bridge as a user without a checkout has it: the built wheel, installed into a fresh venv outside the checkout.

Only the wheel itself and the two packages the plug-ins carry copies of are
installed (``--no-deps``): installing plug-ins needs nothing else, and torch
would be gigabytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

from bridge.install import VENDORED

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WheelInstall:
    wheel: Path
    venv: Path

    @property
    def command(self) -> Path:
        """The installed ``img2img-bridge`` console script."""
        return self.venv / ("Scripts/img2img-bridge.exe" if sys.platform == "win32" else "bin/img2img-bridge")

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """``img2img-bridge ARGS`` from ``cwd`` (outside the checkout), with no trace of the checkout in its environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        return subprocess.run([str(self.command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def build_and_install(scratch: Path) -> WheelInstall:
    """Build the wheel from this checkout into ``scratch`` and install it into a fresh venv there."""
    dist = scratch / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("img2img_bridge-*.whl")
    env_dir = scratch / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    pins = [f"{package.name}=={package.version}" for package in VENDORED]
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel), *pins],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return WheelInstall(wheel, env_dir)
