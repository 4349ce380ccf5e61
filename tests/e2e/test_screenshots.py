"""The README's pictures of the plug-ins, taken from real GIMP and real Krita (under Xvfb, in the e2e chroot).

Each test drives the real plug-in against a tiny-model bridge, checks that the picture is a real one and
keeps it in docs/images when it changed visibly (tests/screenshots.py).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import chroot
import pytest
from PIL import Image as PILImage

from bridge.install import install_gimp, install_krita
from bridge.server import ServerConfig
from tests.bridge_server import StepGate, held_at_step, running_bridge
from tests.screenshots import checked, keep

HERE = Path(__file__).resolve().parent
TIMEOUT = 300
# the README shows one version of each editor: these, so that the pictures do not change with every version
README_GIMP = "3.0.4"
README_KRITA = "5.2.9"


def release_when_written(gate: StepGate, path: Path, timeout: float = TIMEOUT) -> threading.Thread:
    """Let the held job go on once ``path`` exists (the picture was taken) or after ``timeout``."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline and not gate.released.is_set():
            gate.released.wait(0.05)
        gate.released.set()

    thread = threading.Thread(target=watch, name="screenshot-watch", daemon=True)
    thread.start()
    return thread


@pytest.mark.editor("gimp", version=README_GIMP)
def test_the_gimp_dialog_for_the_readme(chroot_root: Path, chroot_home: str, bridge_url: str) -> None:
    host_home = chroot.host_path(chroot_root, chroot_home)
    install_gimp(dest=host_home / chroot.gimp_plugin_dir(chroot_root))
    shutil.copytree(HERE / "gimp_dialog_hook", host_home / "hook")
    shutil.copyfile(HERE / "gimp_dialog_shot.py", host_home / "dialog_shot.py")
    (host_home / "out").mkdir()
    env = {
        "IMG2IMG_OUT": f"{chroot_home}/out",
        "IMG2IMG_BRIDGE_URL": bridge_url,
        "IMG2IMG_E2E_DIALOG_SHOT": f"{chroot_home}/out/dialog.png",
        "PYTHONPATH": f"{chroot_home}/hook",
    }
    run = chroot.gimp_batch(chroot_root, f"{chroot_home}/dialog_shot.py", home=chroot_home, env=env, timeout=TIMEOUT, display=True)
    assert run.returncode == 0, run.describe()
    statuses = json.loads((host_home / "out" / "dialog.json").read_text())
    assert statuses == {"noninteractive": "success", "interactive": "cancel"}, run.describe()
    keep(checked(host_home / "out" / "dialog.png", (320, 320), (1280, 1024), colours=32), "gimp-dialog.png")


@pytest.mark.editor("krita", version=README_KRITA)
def test_the_krita_docker_during_a_job_for_the_readme(chroot_root: Path, chroot_home: str, model_cache: object) -> None:
    host_home = chroot.host_path(chroot_root, chroot_home)
    shot = f"{chroot_home}/docker.png"
    host_shot = chroot.host_path(chroot_root, shot)
    with running_bridge(ServerConfig(model="tiny", device="cpu")) as bridge, held_at_step(bridge.bridge, 2) as gate:
        kritarc = host_home / ".config" / "kritarc"
        install_krita(host_home / chroot.PYKRITA_DIR, enable=True, kritarc=kritarc)
        settings = {"format": "2", "url": bridge.url, "prompt": "a red fox in fresh snow, golden hour", "steps": "4",
                    "strength": "1.0", "fixed_seed": "true", "seed": "1234"}  # fmt: skip
        with kritarc.open("a") as fh:
            fh.write("\n[img2img_bridge]\n" + "".join(f"{key}={value}\n" for key, value in settings.items()))
        for name in ("krita_scenarios", "krita_docker_shot"):  # the second uses the first's helpers
            chroot.install_pykrita_plugin(chroot_root, home=chroot_home, name=name, package=HERE / name)
        photo = host_home / "photo.png"
        PILImage.linear_gradient("L").resize((160, 120)).convert("RGB").save(photo)
        release_when_written(gate, host_shot)
        run = chroot.krita_gui(
            chroot_root,
            home=chroot_home,
            env={"IMG2IMG_KRITA_SHOT": shot},
            timeout=TIMEOUT,
            done_file=shot + ".json",
            files=[f"{chroot_home}/photo.png"],
        )
    facts_file = chroot.host_path(chroot_root, shot + ".json")
    assert facts_file.exists(), run.describe()
    facts = json.loads(facts_file.read_text())
    assert "error" not in facts, facts["error"]
    assert chroot.krita_python_errors(chroot_root, chroot_home) == ""
    assert facts["connected"] and facts["progress_moved"] and facts["ended"], facts
    assert facts["progress"] == 0.5, facts  # held at step 2 of 4: the picture shows a job half way
    assert "step 2 of 4" in " ".join(facts["texts"]), facts
    keep(checked(host_shot, (300, 400), (1280, 1024), colours=32), "krita-docker.png")
