"""The GIMP plug-in in real GIMP 3 (headless, in the e2e chroots) against a real bridge with the tiny model.

Every test runs once per GIMP version of the matrix (``chroot.EDITORS``: 3.0.4 and 3.2.6).  One GIMP run per
version plays every scenario of ``gimp_scenarios.py``; each test checks one of them.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chroot
import numpy as np
import pytest

from bridge import seams
from bridge.editor import protocol as p
from bridge.editor.history import ResultSettings
from bridge.editor.presets import STRENGTH_PRESETS
from tests.wheel_install import WheelInstall

pytestmark = pytest.mark.editor("gimp")
SCENARIOS = Path(__file__).resolve().parent / "gimp_scenarios.py"
RESULT_NAME = "a red fox (seed 1234)"


@dataclass
class GimpRun:
    results: dict[str, Any]
    out: Path
    log: str

    def scenario(self, name: str) -> dict[str, Any]:
        data = self.results.get(name)
        assert data is not None, f"scenario {name} did not run\n{self.log}"
        assert "exception" not in data, data["exception"]
        return data

    def pixels(self, name: str, key: str) -> np.ndarray[Any, Any]:
        dump = self.scenario(name)["dumps"][key]
        raw = np.frombuffer((self.out / dump["file"]).read_bytes(), dtype=np.uint8)
        return raw.reshape(dump["height"], dump["width"], -1)


@pytest.fixture(scope="module")
def gimp(chroot_root: Path, bridge_url: str, from_wheel: WheelInstall) -> Iterator[GimpRun]:
    host_home = Path(tempfile.mkdtemp(prefix="e2e-gimp-", dir=chroot_root / "tmp"))
    home = f"/tmp/{host_home.name}"
    chroot.ensure_home(chroot_root, home)
    # as a user without a checkout installs it: the wheel's command, from a venv outside the checkout
    dest = host_home / chroot.gimp_plugin_dir(chroot_root)
    done = from_wheel.run("install-plugins", "--gimp", "--dest", str(dest), cwd=host_home)
    assert done.returncode == 0, done.stderr
    (host_home / "out").mkdir()
    shutil.copyfile(SCENARIOS, host_home / "scenarios.py")
    with socket.socket() as dead:  # bound but never listening: connecting is refused while the test runs
        dead.bind(("127.0.0.1", 0))
        env = {
            "IMG2IMG_OUT": f"{home}/out",
            "IMG2IMG_BRIDGE_URL": bridge_url,
            "IMG2IMG_DEAD_URL": f"ws://127.0.0.1:{dead.getsockname()[1]}/ws",
            "IMG2IMG_BRIDGE_TRACE": f"{home}/trace.jsonl",
        }
        run = chroot.gimp_batch(chroot_root, f"{home}/scenarios.py", home=home, env=env, timeout=400)
    assert run.returncode == 0, run.describe()
    results_file = host_home / "out" / "results.json"
    assert results_file.exists(), run.describe()
    yield GimpRun(json.loads(results_file.read_text()), host_home / "out", run.describe())
    chroot.safe_rmtree(host_home)


def layer_names(data: dict[str, Any]) -> list[str]:
    return [layer["name"] for layer in data["layers"]]


def layer_rect(data: dict[str, Any], name: str) -> list[int]:
    return next(layer["rect"] for layer in data["layers"] if layer["name"] == name)


def trace_ops(data: dict[str, Any]) -> list[str]:
    return [entry["op"] for entry in data["trace"] if entry["op"] != "set_progress"]


def mask_box(mask: np.ndarray[Any, Any]) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def test_the_chroot_python_has_no_websockets_so_the_vendored_copy_is_used(chroot_root: Path, chroot_home: str) -> None:
    probe = "import importlib.util as u; print(u.find_spec('websockets'), u.find_spec('msgpack'))"
    run = chroot.run_in_chroot(chroot_root, ["python3", "-c", probe], home=chroot_home, timeout=60)
    assert run.stdout.strip() == "None None", run.describe()


def test_default_arguments_send_no_steps_guidance_or_strength_and_run_the_models_recipe(gimp: GimpRun, bridge_recipe: p.Recipe) -> None:
    data = gimp.scenario("model_defaults")
    assert data["argument_defaults"] == {"steps": 0, "guidance": -1.0, "strength": 0.0, "strength-preset": "exact"}
    assert data["status"] == "success", data
    assert data["used"] == list(bridge_recipe.settings(live=False))  # what ran is the recipe: nothing else was sent


def test_values_a_script_sets_are_sent_and_the_rest_is_the_recipes(gimp: GimpRun, bridge_recipe: p.Recipe) -> None:
    data = gimp.scenario("whole")
    assert data["used"] == [4, bridge_recipe.guidance, STRENGTH_PRESETS["high"]]  # steps 4 and the High preset; guidance left to the model


def test_whole_layer_makes_one_new_layer_over_it(gimp: GimpRun) -> None:
    data = gimp.scenario("whole")
    assert data["status"] == "success", data
    assert data["seed"] == 1234 and data["result_name"] == RESULT_NAME
    assert layer_names(data) == [RESULT_NAME, "source", "background"]
    assert layer_rect(data, RESULT_NAME) == [20, 16, 48, 40]
    assert data["selected"] == [RESULT_NAME]
    assert data["undo_enabled"] is True
    assert np.array_equal(gimp.pixels("whole", "source_before"), gimp.pixels("whole", "source_after"))
    result = gimp.pixels("whole", "result")
    assert result.shape == (40, 48, 4)
    assert not np.array_equal(result, gimp.pixels("whole", "source_before"))


def test_previews_stream_into_a_preview_layer_before_the_result(gimp: GimpRun) -> None:
    data = gimp.scenario("whole")
    ops = trace_ops(data)
    assert ops[0] == "freeze_history" and "show_preview" in ops
    assert ops[-3:] == ["remove_preview", "thaw_history", "add_results"]
    assert set(ops[1:-3]) == {"show_preview"}
    previews = [entry for entry in data["trace"] if entry["op"] == "show_preview"]
    assert all(entry["rect"] == [20, 16, 48, 40] for entry in previews)
    assert data["trace"][-1]["rect"] == [20, 16, 48, 40]
    assert "Img2Img preview" not in layer_names(data)
    progress = [entry for entry in data["trace"] if entry["op"] == "set_progress"]
    assert any("step" in entry["text"] for entry in progress)


def test_feathered_selection_on_an_offset_layer_changes_nothing_outside_it(gimp: GimpRun) -> None:
    data = gimp.scenario("selection")
    assert data["status"] == "success", data
    mask = gimp.pixels("selection", "mask")[:, :, 0]
    assert 0 < mask.max() == 255 and len(np.unique(mask)) > 10, "the selection should be feathered"
    visible = np.zeros_like(mask)
    visible[10:90, 14:128] = 1  # the source layer (14, 10, 130, 80) clipped to the 128x96 canvas
    changed = next(entry for entry in data["trace"] if entry["op"] == "add_results")["rect"]
    assert changed == mask_box(mask * visible)
    assert layer_rect(data, RESULT_NAME) == [14, 10, 130, 80]  # a copy of the source, which it replaces
    before, after = gimp.pixels("selection", "composite_before"), gimp.pixels("selection", "composite_after")
    outside = mask == 0
    assert np.array_equal(before[outside], after[outside])
    assert not np.array_equal(before[mask == 255], after[mask == 255])
    source, result = gimp.pixels("selection", "source_before"), gimp.pixels("selection", "result")
    assert result.shape == source.shape
    unselected = np.pad(mask, ((0, 4), (0, 16)))[10:90, 14:144] == 0  # the mask in the source's coordinates
    assert np.array_equal(result[unselected], source[unselected]), "unselected pixels must be the source's own"
    assert np.array_equal(source, gimp.pixels("selection", "source_after"))
    assert layer_names(data) == [RESULT_NAME, "source", "background"]
    assert [layer["visible"] for layer in data["layers"]] == [True, False, True]


def test_a_layer_without_alpha_larger_than_the_canvas_gives_its_visible_part(gimp: GimpRun) -> None:
    data = gimp.scenario("large_without_alpha")
    assert data["status"] == "success", data
    result = next(layer for layer in data["layers"] if layer["name"] == RESULT_NAME)
    assert result["rect"] == [-20, -12, 100, 80] and result["has_alpha"] is False  # a copy of the source
    changed = next(entry for entry in data["trace"] if entry["op"] == "add_results")["rect"]
    assert changed == [0, 0, 64, 48]  # only the visible part was sent and written
    source = next(layer for layer in data["layers"] if layer["name"] == "source")
    assert source["rect"] == [-20, -12, 100, 80] and source["has_alpha"] is False
    assert np.array_equal(gimp.pixels("large_without_alpha", "source_before"), gimp.pixels("large_without_alpha", "source_after"))


def test_a_grayscale_image_gets_a_grayscale_result_layer(gimp: GimpRun) -> None:
    data = gimp.scenario("grayscale")
    assert data["status"] == "success", data
    result = next(layer for layer in data["layers"] if layer["name"] == RESULT_NAME)
    assert result["type"] == "graya-image" and result["rect"] == [0, 0, 40, 32]
    assert np.array_equal(gimp.pixels("grayscale", "source_before"), gimp.pixels("grayscale", "source_after"))


def test_leftovers_of_a_killed_run_are_cleaned_up_by_the_next(gimp: GimpRun) -> None:
    data = gimp.scenario("recover")
    assert data["undo_enabled_before"] is False and "Img2Img preview" in [layer["name"] for layer in data["layers_before"]]
    assert data["status"] == "success", data
    assert layer_names(data) == [RESULT_NAME, "source"]
    assert data["undo_enabled"] is True


def test_no_bridge_is_a_clean_failure_that_says_how_to_start_it(gimp: GimpRun) -> None:
    data = gimp.scenario("no_bridge")
    assert data["status"] == "execution-error"
    assert "img2img-bridge serve" in data["message"] and "Traceback" not in data["message"]
    assert layer_names(data) == ["source"]
    assert data["seconds"] < 20


def test_an_unknown_model_is_a_clean_failure(gimp: GimpRun) -> None:
    data = gimp.scenario("unknown_model")
    assert data["status"] == "execution-error"
    assert "no-such-model" in data["message"]
    assert layer_names(data) == ["source"]
    assert data["undo_enabled"] is True


def test_what_a_layer_mask_hides_stays_hidden(gimp: GimpRun) -> None:
    data = gimp.scenario("layer_mask")
    assert data["status"] == "success", data
    result = next(layer for layer in data["layers"] if layer["name"] == RESULT_NAME)
    assert result["has_mask"] is True and result["visible"] is True
    hidden = gimp.pixels("layer_mask", "layer_mask")[:, :, 0] == 0
    before, after = gimp.pixels("layer_mask", "composite_before"), gimp.pixels("layer_mask", "composite_after")
    assert np.array_equal(before[hidden], after[hidden]), "pixels the layer mask hides were covered"
    assert not np.array_equal(before[~hidden], after[~hidden])


def test_a_half_transparent_layer_shows_the_result_in_place_of_the_source(gimp: GimpRun) -> None:
    data = gimp.scenario("half_transparent")
    assert data["status"] == "success", data
    selected = gimp.pixels("half_transparent", "mask")[:, :, 0] == 255
    before, after = gimp.pixels("half_transparent", "composite_before"), gimp.pixels("half_transparent", "composite_after")
    assert (before[:, :, 3] == 128).all()
    assert np.array_equal(before[~selected], after[~selected]), "outside the selection the canvas must not change"
    result = gimp.pixels("half_transparent", "result")
    assert np.array_equal(after[selected], result[selected]), "inside, the canvas must show exactly the result"
    assert (after[:, :, 3] == 128).all(), "the visible alpha must stay the source's"
    assert not np.array_equal(before[selected], after[selected])


def test_a_second_run_on_the_same_source_is_the_one_shown(gimp: GimpRun) -> None:
    data = gimp.scenario("second_run")
    assert data["first"]["status"] == "success" and data["status"] == "success", data
    second = "a red fox (seed 99)"
    assert layer_names(data) == [second, RESULT_NAME, "source"]
    assert [layer["visible"] for layer in data["layers"]] == [True, False, False]
    after, result = gimp.pixels("second_run", "composite_after"), gimp.pixels("second_run", "result")
    assert np.array_equal(after, result)
    assert not np.array_equal(result, gimp.pixels("second_run", "first_result"))


def test_seam_matching_brings_the_selection_to_its_surroundings(gimp: GimpRun) -> None:
    data = gimp.scenario("seams")
    assert data["off"]["status"] == data["on"]["status"] == "success", data
    mask = gimp.pixels("seams", "mask")[:, :, 0]
    off, on = gimp.pixels("seams", "composite_off"), gimp.pixels("seams", "composite_on")
    assert np.array_equal(off[mask == 0], on[mask == 0])  # kept pixels are the source's either way
    before, after = seams.seam_difference(off, mask), seams.seam_difference(on, mask)
    assert after < before / 4, (before, after)


def test_three_variations_arrive_as_one_group_in_one_undo_step_each_with_its_seed(gimp: GimpRun) -> None:
    data = gimp.scenario("variations")
    assert data["status"] == "success", data
    group = data["group"]
    assert group["name"] == data["returned_group"] == "a red fox (3 variations)"
    assert layer_names(data) == [group["name"], "source", "background"]
    assert [layer["visible"] for layer in data["layers"]] == [True, False, True], "the source is hidden under its variations"
    names = [f"a red fox (seed {seed})" for seed in (500, 501, 502)]
    assert [child["name"] for child in group["children"]] == names
    assert [child["visible"] for child in group["children"]] == [True, False, False]
    assert all(child["rect"] == [4, 2, 40, 36] for child in group["children"]), "copies of the source, over its area"
    settings = [ResultSettings.from_text(child["settings"]) for child in group["children"]]
    assert [s.seed for s in settings] == [500, 501, 502] and all(child["persistent"] for child in group["children"])
    assert {(s.prompt, s.steps, s.model) for s in settings} == {("a red fox", 4, "tiny")}
    assert data["seed"] == 500 and data["result_name"] == names[0] and data["selected"] == [names[0]]
    pixels = [gimp.pixels("variations", f"variation_{index}") for index in range(3)]
    assert np.array_equal(pixels[0], gimp.pixels("variations", "result")), "'layer' is the first variation"
    assert not np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[1], pixels[2])
    assert np.array_equal(gimp.pixels("variations", "source_before"), gimp.pixels("variations", "source_after"))
    # GIMP's PDB has no undo to call: one undo step is the one undo group around a single add (the fake canvas
    # in tests/plugins/gimp enforces GIMP's undo rules), with history back on after the run
    adds = [entry for entry in data["trace"] if entry["op"] == "add_results"]
    assert len(adds) == 1 and adds[0]["names"] == names and adds[0]["group"] == group["name"]
    assert trace_ops(data)[-3:] == ["remove_preview", "thaw_history", "add_results"]
    assert data["undo_enabled"] is True
