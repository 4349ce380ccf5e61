"""Fixtures for end-to-end tests against real GIMP and Krita in chroots, one per editor version.

``editor``         session, parametrized: the editor version a test runs against (``chroot.Editor``, ids like
                   ``gimp-3.0.4`` or ``krita-6.0.4``).  Mark a module or test ``pytest.mark.editor("gimp")`` (or
                   ``"krita"``) and every test in it that uses ``chroot_root`` runs once per version of that editor
                   (``chroot.EDITORS``); ``pytest.mark.editor("gimp", version="3.0.4")`` runs it in that version
                   only; unmarked tests run once per chroot variant (ids ``trixie``, ``sid``, ...).
``chroot_variant`` session, parametrized with it: the chroot that holds that version.
``chroot_root``    session: that chroot, ready and mounted (host Path).
``chroot_home``    per test: a fresh HOME inside the chroot (chroot path, str).

At the end of collection every chroot the selected tests need and the cache lacks starts building in the
background (``chroot.py build VARIANT``, side by side), and the e2e tests are moved to the end of the run, so
that the builds overlap the rest of the suite.  The harness itself lives in ``chroot.py`` next to this file; see
docs/e2e.md.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
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
APPS = ("gimp", "krita")
_builds: dict[str, subprocess.Popen[bytes]] = {}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "editor(app, version=None): run the test once per version of that editor (gimp or krita), or in one")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chroot_variant" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("editor")
    if marker is None:
        if "editor" in metafunc.fixturenames:
            raise pytest.UsageError(f"{metafunc.definition.nodeid} uses the editor fixture: mark it pytest.mark.editor(APP)")
        metafunc.parametrize("chroot_variant", chroot.VARIANTS, ids=[v.name for v in chroot.VARIANTS], indirect=True, scope="session")
        return
    app = marker.args[0]
    if app not in APPS:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: pytest.mark.editor({app!r}) names no editor; use one of {APPS}")
    versions = [e for e in chroot.editors(app) if marker.kwargs.get("version") in (None, e.version)]
    if not versions:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: no {app} {marker.kwargs['version']} in the matrix")
    ids = [e.id for e in versions]
    if "editor" in metafunc.fixturenames:
        pairs = [(e, e.variant) for e in versions]
        metafunc.parametrize(("editor", "chroot_variant"), pairs, ids=ids, indirect=True, scope="session")
    else:
        metafunc.parametrize("chroot_variant", [e.variant for e in versions], ids=ids, indirect=True, scope="session")


def _variant_of(item: pytest.Item) -> chroot.Variant | None:
    callspec = getattr(item, "callspec", None)
    variant = callspec.params.get("chroot_variant") if callspec else None
    return variant if isinstance(variant, chroot.Variant) else None


def _run_order(item: pytest.Item) -> tuple[int, str, int]:
    variant = _variant_of(item)
    return (chroot.VARIANTS.index(variant) if variant else -1, str(item.path), item.reportinfo()[1] or 0)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the e2e tests last, grouped by chroot, and start building the chroots they need meanwhile."""
    e2e = [item for item in items if _variant_of(item) is not None]
    # one chroot after the other, and within one the modules' own order: a module's fixtures (one GIMP or Krita
    # run for all its tests) are set up once per version
    e2e.sort(key=_run_order)
    items[:] = [item for item in items if _variant_of(item) is None] + e2e
    if config.option.collectonly:
        return
    wanted = {v.name: v for v in map(_variant_of, e2e) if v is not None}
    for variant in wanted.values():
        if chroot.skip_reason(variant) is None and not chroot.is_ready(variant):
            _builds[variant.name] = chroot.build_in_background(variant)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for build in _builds.values():  # the next run removes what an unfinished build leaves
        if build.poll() is None:
            build.terminate()
            build.wait()


@pytest.fixture(scope="session")
def chroot_variant(request: pytest.FixtureRequest) -> chroot.Variant:
    variant: chroot.Variant = request.param
    return variant


@pytest.fixture(scope="session")
def editor(request: pytest.FixtureRequest) -> chroot.Editor:
    version: chroot.Editor = request.param
    return version


@pytest.fixture(scope="session")
def chroot_root(request: pytest.FixtureRequest, chroot_variant: chroot.Variant) -> Iterator[Path]:
    """Ready chroot of the variant, mounted while its tests run (built/restored on demand)."""
    reason = chroot.skip_reason(chroot_variant)
    if reason:
        if _in_ci():  # CI runs as root with registries reachable: must run
            pytest.fail(f"e2e harness cannot run in CI: {reason}")
        pytest.skip(reason)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    show = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    with show:  # building takes minutes: let the progress lines through
        root = chroot.ensure_chroot(chroot_variant)
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
