"""Fixtures for end-to-end tests against real GIMP 3 / Krita 5 in a chroot.

``chroot_root``  session: a ready, mounted Debian trixie chroot (host Path).
``chroot_home``  per test: a fresh HOME inside the chroot (chroot path, str).

The harness itself lives in ``chroot.py`` next to this file; see docs/e2e.md.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # works with any --import-mode
    sys.path.insert(0, _HERE)

import chroot  # noqa: E402

from bridge.editor import protocol as p  # noqa: E402
from bridge.editor.client import BridgeClient  # noqa: E402
from tests.wheel_install import WheelInstall, build_and_install  # noqa: E402

KEEP_HOME_ENV = "IMG2IMG_E2E_KEEP_HOME"  # set to 1 to keep test HOMEs


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def chroot_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Ready chroot, mounted for the whole session (built/restored on demand)."""
    reason = chroot.skip_reason()
    if reason:
        if _in_ci():  # CI runs as root with registries reachable: must run
            pytest.fail(f"e2e harness cannot run in CI: {reason}")
        pytest.skip(reason)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    show = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    with show:  # building takes minutes: let the progress lines through
        root = chroot.ensure_chroot()
    with chroot.mounted(root):
        yield root


@pytest.fixture
def chroot_home(chroot_root: Path) -> Iterator[str]:
    """Fresh HOME (e.g. ``/tmp/e2e-home-abc123``) inside the chroot."""
    host = Path(tempfile.mkdtemp(prefix="e2e-home-", dir=chroot_root / "tmp"))
    home = f"/tmp/{host.name}"
    chroot.ensure_home(chroot_root, home)
    yield home
    if os.environ.get(KEEP_HOME_ENV) != "1":
        chroot.safe_rmtree(host)


@pytest.fixture(scope="module")
def bridge_recipe(bridge_url: str) -> p.Recipe:
    """The loaded model's recipe, as the bridge tells every client: what a job left at auto runs with."""
    client = BridgeClient(bridge_url, name="e2e-recipe")
    try:
        recipe = client.connect().model.recipe
    finally:
        client.close()
    assert recipe is not None
    return recipe


@pytest.fixture(scope="session")
def from_wheel(tmp_path_factory: pytest.TempPathFactory) -> WheelInstall:
    """The built wheel in a fresh venv outside the checkout: the e2e suite installs the plug-ins with its command."""
    return build_and_install(tmp_path_factory.mktemp("wheel"))
