"""The Krita plug-in in real Krita (GUI, under Xvfb, in the e2e chroots) against a real bridge with the tiny model.

Every test runs once per Krita version of the matrix (``chroot.EDITORS``: 5.2.9, 5.3.4 and 6.0.4, the last under
PyQt6), the same plug-in source in each.  One Krita run per version drives every scenario (``krita_scenarios``) through the docker's own
widgets and writes what it saw; the assertions are here.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chroot
import pytest

from bridge.editor import protocol as p
from bridge.editor.presets import auto_guidance, auto_steps, auto_strength
from bridge.install import enable_in_kritarc
from tests.wheel_install import ROOT, WheelInstall

pytestmark = pytest.mark.editor("krita")
HERE = Path(__file__).resolve().parent
KRITA_IMPORTER = "/usr/share/krita/pykrita/plugin_importer/plugin_importer.py"  # Tools > Scripts > Import Python Plugin
# its command-line entry, as Krita runs the module: Krita 5.3 and later import ``i18n`` from the builtins Krita fills in
RUN_IMPORTER = (
    "import builtins, runpy, sys; builtins.i18n = getattr(builtins, 'i18n', lambda text, *args: text); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
# a second plug-in, as other AI plug-ins are: its own websockets (another version) imported as top-level ``websockets``
OTHER_PLUGIN = """
import json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "vendor"))
import websockets
from websockets.sync.client import connect
facts = {"file": websockets.__file__, "version": websockets.__version__}
try:
    with connect(os.environ["IMG2IMG_OTHER_URL"], open_timeout=30, proxy=None):
        facts["connected"] = True
except Exception as exc:
    facts["error"] = repr(exc)
with open(os.environ["IMG2IMG_OTHER_FACTS"], "w") as fh:
    json.dump(facts, fh)
"""
BENCH_SIDES = (512, 1024, 2048)  # the live benchmark scales u8.png to each
U8_SIZE = (96, 64)
U16_SIZE = (48, 40)


def write_png(path: Path, width: int, height: int, depth: int, pixel: Any) -> None:
    """An RGBA PNG of ``depth`` bits whose pixel (x, y) is ``pixel(x, y)`` (four channel values)."""
    code = "B" if depth == 8 else "H"
    rows = b"".join(b"\x00" + b"".join(struct.pack(f">4{code}", *pixel(x, y)) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, 6, 0, 0, 0)
    # the sRGB chunk spares Krita's "which profile?" dialog, which would block a headless run
    srgb = chunk(b"sRGB", b"\x00")
    body = chunk(b"IHDR", header) + srgb + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    """A second bridge whose engine echoes its input, so the live benchmark shows the plug-in's own ceiling."""
    from bench.transport import EchoEngine
    from bridge.server import ServerConfig
    from tests.bridge_server import running_bridge

    with running_bridge(ServerConfig(model="tiny", device="cpu")) as running:
        running.wait_ready()
        running.bridge.engine = EchoEngine()
        yield running.url


def other_websockets() -> Path:
    """A pure-Python websockets of another version than the one our plug-in carries."""
    for found in sorted(ROOT.glob(".venv*/lib/python3*/site-packages/websockets")):
        version = (found / "version.py").read_text()
        if '"16.1.1"' not in version:
            return found
    pytest.skip("no websockets of another version in .venv310 or .venv-qt (bash scripts/setup)")


@pytest.fixture(scope="module")
def krita_run(
    chroot_root: Path, bridge_url: str, echo_url: str, from_wheel: WheelInstall, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Install the plug-in the way Krita's own importer does and the scenarios in a fresh HOME, run Krita once."""
    # unique across concurrent runs (every run's basetemp gives the same k0): the chroot's /tmp is shared
    home = f"/tmp/krita-e2e-{os.getpid()}-{tmp_path_factory.mktemp('k').name}"
    host_home = chroot.ensure_home(chroot_root, home)
    kritarc = host_home / ".config" / "kritarc"
    # no checkout: the wheel's package-plugins writes the zip, Krita's own importer unpacks it into pykrita
    packaged = from_wheel.run("package-plugins", "--dest", str(host_home / "zips"), cwd=host_home)
    assert packaged.returncode == 0, packaged.stderr
    zip_file = f"{home}/zips/img2img_bridge-krita.zip"
    (host_home / chroot.PYKRITA_DIR).parent.mkdir(parents=True, exist_ok=True)  # Krita's resource folder, which it always has
    imported = chroot.run_in_chroot(
        chroot_root, ["python3", "-c", RUN_IMPORTER, KRITA_IMPORTER, zip_file, f"{home}/.local/share/krita"], home=home, timeout=120
    )
    assert imported.returncode == 0 and "Imported plugin: img2img Bridge" in imported.stdout, imported.describe()
    direct = host_home / "install-plugins"
    installed = from_wheel.run("install-plugins", "--krita", "--dest", str(direct), cwd=host_home)
    assert installed.returncode == 0, installed.stderr
    enable_in_kritarc(kritarc)  # what the artist ticks in the Python Plugin Manager after importing
    other = host_home / "other-plugin"
    (other / "vendor").mkdir(parents=True)
    shutil.copytree(other_websockets(), other / "vendor" / "websockets", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (other / "__init__.py").write_text(OTHER_PLUGIN)
    chroot.install_pykrita_plugin(chroot_root, home=home, name="other_websockets", package=other)
    with kritarc.open("a") as fh:
        fh.write(f"\n[img2img_bridge]\nurl={bridge_url}\n")
    chroot.install_pykrita_plugin(chroot_root, home=home, name="krita_scenarios", package=HERE / "krita_scenarios")
    write_png(host_home / "u8.png", *U8_SIZE, 8, lambda x, y: ((x * 5) % 256, (y * 7) % 256, (x * y) % 256, 255))
    # Krita asks for a profile when it opens a 16-bit PNG (a dialog that blocks the run): the scenario
    # converts this one to 16-bit linear and paints 16-bit values into it instead
    write_png(host_home / "deep.png", *U16_SIZE, 8, lambda x, y: (x, y, 200, 255))
    out = f"{home}/scenarios.json"
    started = time.monotonic()
    res = chroot.krita_gui(
        chroot_root,
        home=home,
        env={
            "IMG2IMG_KRITA_SCENARIOS": out,
            "IMG2IMG_KRITA_ECHO_URL": echo_url,
            "IMG2IMG_OTHER_URL": bridge_url,
            "IMG2IMG_OTHER_FACTS": f"{home}/other.json",
            # a comma-separated list of scenario names runs only those (while working on one)
            "IMG2IMG_KRITA_ONLY": os.environ.get("IMG2IMG_KRITA_ONLY", ""),
        },
        timeout=720,
        done_file=out,
        files=[f"{home}/u8.png", f"{home}/deep.png"],
    )
    result_file = chroot.host_path(chroot_root, out)
    partial, bench = (chroot.host_path(chroot_root, out + suffix) for suffix in (".partial", ".bench"))
    if not result_file.exists() and bench.exists():
        print("Krita was stopped; the live benchmark had measured:\n" + bench.read_text())
    assert result_file.exists(), "Krita wrote no results\n" + res.describe() + (partial.read_text()[-3000:] if partial.exists() else "")
    results: dict[str, Any] = json.loads(result_file.read_text())
    results["_seconds"] = round(time.monotonic() - started, 1)
    results["_python_errors"] = chroot.krita_python_errors(chroot_root, home)
    results["_kritarc"] = kritarc.read_text()
    other_facts = chroot.host_path(chroot_root, f"{home}/other.json")
    results["_other"] = json.loads(other_facts.read_text()) if other_facts.exists() else {"error": "the other plug-in did not run"}
    results["_imported_differs"] = differing_files(host_home / chroot.PYKRITA_DIR / "img2img_bridge", direct / "img2img_bridge")
    results["_timed_out"] = res.timed_out
    results["_krita_output"] = res.describe()[-3000:] if res.timed_out else ""
    if os.environ.get("IMG2IMG_E2E_DEBUG_KRITA"):
        Path(os.environ["IMG2IMG_E2E_DEBUG_KRITA"]).write_text(res.describe())
    print(json.dumps(results, indent=1)[:20000])
    chroot.safe_rmtree(host_home)
    return results


def differing_files(left: Path, right: Path) -> list[str]:
    compared = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [*compared.left_only, *compared.right_only, *compared.diff_files]
    return found + [f"{name}/{inner}" for name in compared.subdirs for inner in differing_files(left / name, right / name)]


def scenario(results: dict[str, Any], name: str) -> dict[str, Any]:
    facts = results[name]
    assert "error" not in facts, facts["error"]
    return dict(facts)


def test_plugin_loads_connects_and_uses_its_vendored_libraries(krita_run: dict[str, Any], editor: chroot.Editor) -> None:
    assert "error" not in krita_run, krita_run["error"]
    assert krita_run["_python_errors"] == ""
    assert not krita_run["_timed_out"], "Krita did not quit after file_quit"
    assert krita_run["connected"] is True, krita_run["connection_text"]
    assert krita_run["binding"] == ("PyQt6" if editor.major >= 6 else "PyQt5")
    assert "/pykrita/img2img_bridge/_bridge/_vendor/websockets/" in krita_run["vendored"]


def test_the_zip_imported_by_kritas_importer_is_what_install_plugins_writes(krita_run: dict[str, Any]) -> None:
    assert krita_run["_imported_differs"] == []


def test_beside_a_plugin_with_its_own_websockets_both_work_and_ours_adds_no_top_level_name(krita_run: dict[str, Any]) -> None:
    other = krita_run["_other"]
    assert other.get("connected") is True, other
    assert "/pykrita/other_websockets/vendor/websockets/" in other["file"] and other["version"] != "16.1.1"
    assert krita_run["connected"] is True, krita_run["connection_text"]
    # the top-level websockets is the other plug-in's, unpatched (no C speedups in its copy: websockets.utils')
    assert krita_run["top_level_websockets"] == {"file": other["file"], "version": other["version"], "apply_mask": "websockets.utils"}
    assert krita_run["our_top_level_names"] == ["img2img_bridge"]
    assert krita_run["bridge_or_msgpack_modules"] == []


def test_whole_layer_result_is_one_undoable_layer_above_the_untouched_source(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_whole_layer")
    assert facts["no_selection_error"].startswith("Nothing is selected")
    assert facts["job"]["ready"] and facts["job"]["error"] == ""
    assert facts["job"]["seed"] == 1234
    assert facts["layers_with_preview"] == ["Background", "[Preview]"]
    name = "e2e whole layer (seed 1234)"
    assert facts["layers"] == ["Background", name]  # right above its source
    assert facts["history_with_preview"] == 1 and facts["history_after_apply"] == 1  # one undo step in all
    assert facts["result_bounds"] == facts["source_bounds"] == [0, 0, *U8_SIZE]
    assert facts["result_depth"] == "U8"
    assert facts["result_differs"] is True
    assert facts["source_untouched"] is True
    assert facts["layers_after_undo"] == ["Background"]
    assert facts["layers_after_redo"] == ["Background", name]
    assert facts["layers_after_discard"] == ["Background", name]


def test_feathered_selection_changes_nothing_outside_it(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_selection")
    assert facts["selection_read_back"] is True  # 8-bit, feather kept
    assert facts["job"]["ready"], facts["job"]["error"]
    counts = facts["counts"]
    assert counts["kept_changed"] == 0  # outside the selection: the source's own pixels, or nothing
    assert counts["kept_same"] + counts["kept_empty"] == 96 * 64 - facts["selected_pixels"]
    assert counts["regen_changed"] > 0
    assert facts["result_bounds"] == [23, 13, 44, 38]  # the feathered box (30, 20)-(60, 44) plus its 7-pixel fade
    assert facts["source_untouched"] is True


def test_replace_background_keeps_the_selected_subject_exact(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_background")
    assert facts["job"]["ready"], facts["job"]["error"]
    counts = facts["counts"]
    assert counts["kept_changed"] == 0 and counts["kept_empty"] == 0
    assert counts["kept_same"] > 0 and counts["regen_changed"] > 0
    assert facts["source_untouched"] is True
    assert facts["deselected"] is True


def test_live_mode_coalesces_edits_renders_the_last_state_and_stops_cleanly(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_live")
    assert facts["live_on"] in ("running", "idle", "settling") and facts["timer"] is True
    assert facts["last_state_rendered"] is True
    assert 1 <= facts["jobs"] < facts["edits"]
    assert facts["view_shows_result"] is True and facts["apply_enabled"] is True
    assert facts["job_started"] is True and facts["job_ended"] is True
    assert facts["end"] in ("JobCancelled", "JobResult")
    assert facts["live_off"] == "off" and facts["timer_after"] is False
    assert facts["jobs_after_off"] == 0
    assert facts["apply_enabled_after_off"] is False and facts["layers_added_by_apply_after_off"] == 0


def test_a_half_transparent_layer_is_replaced_by_its_result_not_covered(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_half_transparent")
    assert facts["job"]["ready"], facts["job"]["error"]
    name = "e2e half (seed 1234)"
    assert facts["names"][-1] == name, facts  # above the source and every earlier result
    hidden = [layer for layer, visible in facts["visible"].items() if not visible]
    assert facts["visible"][name] is True and facts["source"] in hidden  # the result in the source's place
    assert facts["result_alphas"] == [128] and facts["result_differs"] is True
    assert name not in facts["after_undo"]["names"]
    # Krita keeps layer visibility out of its undo history: undoing Apply leaves the source hidden (README says so)
    assert facts["after_undo"]["source_visible"] is False, facts["after_undo"]


def test_the_docker_shows_and_applies_only_the_active_documents_result(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_documents")
    assert facts["job"]["ready"], facts["job"]["error"]
    assert facts["first"]["apply"] is True and facts["first"]["seed"] == 1234
    assert facts["second"] == {"apply": False, "seed": None, "status": "", "live_image": False}
    assert facts["refused"]["error"].startswith("Nothing is selected") and facts["refused"]["apply"] is False
    assert facts["second_layers_unchanged"] is True
    assert facts["back"] == {"apply": False, "seed": 1234}  # the refusal dropped the result; its seed is still shown
    before, after = facts["first_layers"]
    assert after == [name for name in before if name != "[Preview]"]


def test_live_results_follow_a_continuous_stroke_one_job_at_a_time(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_live_stroke")
    assert facts["frames_during_stroke"] >= 1, facts  # counted, not timed: results came while the brush moved
    assert facts["max_in_flight"] == 1
    assert facts["last_state_rendered"] is True
    assert 1 <= facts["jobs"] <= facts["edits"] + 1
    assert "fps" in facts["stats"] and "latency" in facts["stats"]


def test_live_benchmark_ran_at_every_size_against_both_engines(krita_run: dict[str, Any]) -> None:
    """The figures are for docs/benchmarks.md (printed with -s); here only that each run did what it measures."""
    rows = scenario(krita_run, "scenario_live_bench")["rows"]
    print(json.dumps(rows, indent=1))
    assert [(r["engine"], r["side"]) for r in rows] == [(e, s) for e in ("echo", "tiny") for s in BENCH_SIDES]
    for row in rows:
        assert "error" not in row, row["error"]
        assert row["connected"] and row["first_frame"] and row["final_rendered"], row
        assert row["max_in_flight"] == 1, row
    assert all(r["frames_during_stroke"] >= 1 for r in rows if r["engine"] == "echo"), rows


def test_16bit_document_is_not_corrupted(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_u16")
    assert facts["doc"] == ["RGBA", "U16", "sRGB-elle-V2-g10.icc", "U16"]  # linear light, as Krita makes 16-bit
    assert facts["whole"]["ready"], facts["whole"]["error"]
    assert facts["whole_depth"] == "U16" and facts["whole_size"] is True
    assert facts["selection"]["ready"], facts["selection"]["error"]
    counts = facts["counts"]
    assert counts["kept_changed"] == 0 and counts["kept_same"] > 0  # unselected 16-bit values kept exactly exactly
    assert counts["regen_changed"] > 0
    assert facts["source_untouched"] is True


def test_settings_persist_in_kritarc(krita_run: dict[str, Any]) -> None:
    assert "[img2img_bridge]" in krita_run["_kritarc"]
    assert "prompt=persisted prompt" in krita_run["_kritarc"]
    for name in ("steps", "guidance", "strength", "live_steps"):  # the last scenario left them at auto
        assert f"\n{name}=auto\n" in krita_run["_kritarc"]


def test_default_settings_send_no_steps_guidance_or_strength_and_run_the_models_recipe(
    krita_run: dict[str, Any], bridge_recipe: p.Recipe
) -> None:
    recipe = bridge_recipe
    facts = scenario(krita_run, "scenario_model_defaults")
    assert p.Recipe.from_wire(facts["recipe"], "recipe") == recipe
    assert facts["shown"] == [auto_steps(recipe), auto_guidance(recipe), auto_strength(recipe), auto_steps(recipe, live=True)]
    assert facts["job"]["ready"], facts["job"]["error"]
    assert facts["sent"] == [None, None, None]
    assert facts["used"] == list(recipe.settings(live=False))
    assert facts["status"].startswith("Done (") and "[Preview]" not in facts["layers"]


def test_four_variations_show_four_thumbnails_and_the_third_applied_is_exactly_that_result(krita_run: dict[str, Any]) -> None:
    facts = scenario(krita_run, "scenario_variations")
    assert facts["job"]["ready"] and facts["job"]["error"] == "", facts["job"]
    assert facts["first_job"] == [[index, True, True] for index in range(4)]
    assert facts["strip_icons"] == [True] * 4
    # previews streamed into the strip; which variations get one depends on how far behind the client is (the bridge
    # skips a preview rather than queue it: tests/test_server.py shows every variation previews when it keeps up)
    assert facts["previewed"] and set(facts["previewed"]) <= {0, 1, 2, 3}, "previews of the variations streamed in"
    job = facts["this_job"][0][0]
    assert facts["picked"] == [job, 2] and facts["shown_is_the_third"] is True
    assert facts["others_differ"] == [True, True, True]
    assert facts["seed"] == 702 and facts["name_in_layers"] is True
    assert facts["applied_is_the_third"] is True, "Apply keeps exactly the pixels shown"
    annotation = facts["annotation"]
    assert annotation is not None and (annotation["seed"], annotation["prompt"]) == (702, "e2e variations")
    assert facts["strip_survives"] is True and facts["this_job"] == [[job, index] for index in range(4)]
    assert not facts["other_document_first_job"] or facts["other_document_first_job"][0][0] != job
