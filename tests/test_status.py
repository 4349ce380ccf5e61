"""The status page: its data (bounded), who may see it, and the page itself in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.editor import protocol as p
from bridge.editor.client import BridgeClient
from bridge.server import ServerConfig
from bridge.status import JobRecord, StatusBoard
from tests.bridge_server import RunningBridge, held_at_step, running_bridge
from tests.screenshots import checked, keep
from tests.test_server import TIMEOUT, Connect, Events, photo, request


def record(job_id: str, connection: int = 1, live: bool = False) -> JobRecord:
    return JobRecord(
        job_id=job_id, client="pytest", connection=connection, outcome="done", width=64, height=48, masked=False, steps=3,
        asked_steps=None, strength=0.5, guidance=None, count=1, live=live, used=(3, 1.0, 0.5), ms=12.0, ended=time.time(),
    )  # fmt: skip


def get(url: str, host: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if host is not None:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_board_keeps_a_few_small_thumbnails_newest_first() -> None:
    board = StatusBoard(thumbnails=3, thumbnail_side=64)
    for index in range(5):
        board.add_thumbnail(f"job{index}", 0, np.full((300, 200, 4), 255, dtype=np.uint8))
    snapshot = board.snapshot(model=p.ModelState(name="m", status=p.ModelStatus.READY), device="cpu", queued=0, clients=[], active=[])
    thumbnails = snapshot["thumbnails"]
    assert [t["job_id"] for t in thumbnails] == ["job4", "job3", "job2"]
    assert all(t["height"] == 64 and t["width"] < 64 and t["src"].startswith("data:image/png;base64,") for t in thumbnails)


def test_a_live_stream_is_one_row_with_a_frame_rate() -> None:
    board = StatusBoard(jobs=5)
    board.job_ended(record("ordinary"))
    for frame in range(20):
        board.job_ended(record(f"live{frame}", connection=2, live=True))
    assert [r.job_id for r in board.recent(10)] == ["ordinary", "live19"]
    assert board.frame_rates()[2] > 0
    board.forget(2)
    assert board.frame_rates() == {}


def test_the_job_log_line_says_client_size_steps_time_and_outcome() -> None:
    line = record("abc").log_line()
    assert line == "job abc from 'pytest' #1: 64x48, 3 steps run (asked recipe), strength 0.5, 12 ms, done"


def test_status_json_shows_the_model_clients_jobs_and_thumbnails(bridge: RunningBridge, connect: Connect) -> None:
    client = connect()
    job = request(photo(80, 60), steps=3, strength=1.0)
    assert client.run(job, timeout=TIMEOUT).ok
    status, body = get(bridge.http + "/status.json")
    assert status == 200
    snapshot: dict[str, Any] = json.loads(body)
    assert snapshot["model"]["name"] == "tiny" and snapshot["model"]["status"] == "ready"
    assert snapshot["device"] == "cpu" and snapshot["memory"]["rss"] > 10 << 20
    assert any(c["name"] == "pytest" for c in snapshot["clients"])
    row = next(j for j in snapshot["jobs"] if j["job_id"] == job.job_id)
    assert (row["width"], row["height"], row["asked_steps"], row["strength"], row["outcome"]) == (80, 60, 3, 1.0, "done")
    assert row["steps"] == 3 and row["ms"] > 0
    deadline = time.monotonic() + TIMEOUT  # the thumbnail is made on a worker thread after the result is sent
    while not any(t["job_id"] == job.job_id for t in snapshot["thumbnails"]):
        assert time.monotonic() < deadline
        snapshot = json.loads(get(bridge.http + "/status.json")[1])
    assert len(snapshot["thumbnails"]) <= 4


def test_status_json_shows_the_running_jobs_step_and_settings_and_the_jobs_waiting(bridge: RunningBridge, connect: Connect) -> None:
    events = Events()
    client = connect(on_event=events)
    running, waiting = request(photo(64, 48), steps=4, strength=1.0, guidance=None), request(photo(32, 32), steps=2)
    with held_at_step(bridge.bridge, 2) as gate:
        client.generate(running)
        assert gate.reached.wait(TIMEOUT)
        client.generate(waiting)
        events.wait(p.Queued, job_id=waiting.job_id)
        snapshot = json.loads(get(bridge.http + "/status.json")[1])
    events.wait(p.Result, job_id=waiting.job_id)
    first, second = snapshot["active"]
    assert (first["job_id"], first["running"], first["progress"]) == (running.job_id, True, [0, 2, 4])
    engine = bridge.bridge.engine
    assert engine is not None
    recipe_guidance = engine.settings(running)[1]
    assert (first["asked_steps"], first["guidance"], first["used"]) == (4, None, [4, recipe_guidance, 1.0])
    assert (second["job_id"], second["running"], second["progress"], second["used"]) == (waiting.job_id, False, None, None)
    assert snapshot["queue"] == 1
    ended = {j["job_id"]: j for j in json.loads(get(bridge.http + "/status.json")[1])["jobs"]}
    assert ended[running.job_id]["used"] == [4, recipe_guidance, 1.0] and ended[running.job_id]["steps"] == 4


def test_a_live_client_shows_its_frame_rate_and_one_row(bridge: RunningBridge, connect: Connect) -> None:
    board = bridge.bridge.board
    window, board.live_window = board.live_window, 3600.0  # a loaded test machine is no measure of a live rate
    try:
        painter = connect()
        frames = [request(photo(64, 64, seed=i), live=True, steps=2, strength=0.5) for i in range(3)]
        for frame in frames:
            assert painter.run(frame, timeout=TIMEOUT).ok
        snapshot = json.loads(get(bridge.http + "/status.json")[1])
    finally:
        board.live_window = window
    (mine,) = [c for c in snapshot["clients"] if c["fps"] is not None]
    assert mine["fps"] > 0 and snapshot["live_fps"] == mine["fps"]
    live_rows = [j for j in snapshot["jobs"] if j["live"] and j["connection"] == mine["connection"]]
    assert [j["job_id"] for j in live_rows] == [frames[-1].job_id]
    assert not any(t["job_id"] in {f.job_id for f in frames} for t in snapshot["thumbnails"])  # live frames make none


def test_the_page_is_plain_html_with_its_script_inlined(bridge: RunningBridge) -> None:
    status, body = get(bridge.http + "/")
    assert status == 200
    assert 'id="model-status"' in body and "<script>" in body and "status.json" in body


def test_other_hosts_never_see_the_status(bridge: RunningBridge) -> None:
    for path in ("/", "/status.json"):
        assert get(bridge.http + path, host="evil.example")[0] == 421


def test_an_allowed_host_without_a_token_sees_health_but_not_the_status(model_cache: object) -> None:
    with running_bridge(ServerConfig(model=None, allowed_hosts=("bridge.lan",))) as server:
        assert get(server.http + "/health", host="bridge.lan")[0] == 200
        assert get(server.http + "/", host="bridge.lan")[0] == 403
        assert get(server.http + "/status.json", host="bridge.lan")[0] == 403


def test_with_a_token_the_status_needs_it(model_cache: object) -> None:
    with running_bridge(ServerConfig(model=None, token="s3cret", allowed_hosts=("bridge.lan",))) as server:
        assert get(server.http + "/")[0] == 401
        assert get(server.http + "/status.json?token=wrong")[0] == 401
        assert get(server.http + "/?token=s3cret", host="bridge.lan")[0] == 200
        assert get(server.http + "/status.json?token=s3cret", host="bridge.lan")[0] == 200


# --- the page in a real browser -------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail("chromium is missing: bash scripts/setup installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed and cannot be installed without root: apt-get install chromium")


def browse(chromium: str, url: str, *args: str) -> str:
    """Load ``url`` in headless Chromium for three seconds of page time (three polls); returns stdout."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=3000", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def text_of(dom: str, element_id: str) -> str:
    start = dom.index(f'id="{element_id}"')
    return dom[dom.index(">", start) + 1 : dom.index("<", start)]


def test_the_page_in_chromium_shows_the_model_and_a_job_after_it_runs(chromium: str, bridge: RunningBridge, connect: Connect) -> None:
    dom = browse(chromium, bridge.http + "/", "--dump-dom")
    assert text_of(dom, "model-name") == "tiny"
    assert text_of(dom, "model-status") == "ready"
    assert text_of(dom, "device") == "cpu"

    # a client name is the network's text: the page must show it, never run it
    with BridgeClient(bridge.url, name="<img src=x onerror=alert(1)>") as client:
        job = request(photo(96, 64, seed=5), steps=4, strength=1.0)
        assert client.run(job, timeout=TIMEOUT).ok
    dom = browse(chromium, bridge.http + "/", "--dump-dom")
    assert job.job_id in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom and "<img src=x" not in dom
    assert 'alt="result of job' in dom


def row_of(dom: str, tbody_id: str, job_id: str) -> str:
    """The HTML of the row of ``job_id`` in the table body ``tbody_id``; "" when it has none."""
    body = dom[dom.index(f'id="{tbody_id}"') :]
    body = body[: body.index("</tbody>")]
    return next((tr for tr in body.split("<tr>") if job_id in tr), "")


def test_the_page_in_chromium_shows_a_download_in_bytes(chromium: str, model_cache: object) -> None:
    with running_bridge(ServerConfig(model=None)) as server:
        # the state a download reports (tests/test_download.py checks that a real download reports it)
        downloading = p.ModelState(
            name="stabilityai/sd-turbo", status=p.ModelStatus.LOADING, message="downloading stabilityai/sd-turbo: 1 of 3 MB",
            progress=0.1, downloaded=3 << 19, download_size=3 << 20,
        )  # fmt: skip
        server.call(server.bridge._set_state, downloading)
        dom = browse(chromium, server.http + "/", "--dump-dom")
    assert text_of(dom, "model-status") == "loading"
    assert text_of(dom, "model-bytes") == "downloaded 1.5 MiB of 3.0 MiB"
    bar = dom[dom.index('id="model-progress"') :]
    assert "hidden" not in bar[: bar.index(">")]  # the bar shows while the model loads


def test_the_page_in_chromium_follows_a_running_job_and_lists_it_when_it_ends(
    chromium: str, bridge: RunningBridge, connect: Connect
) -> None:
    events = Events()
    client = connect(on_event=events)
    job = request(photo(80, 64, seed=9), steps=4, strength=1.0, guidance=None)
    with held_at_step(bridge.bridge, 3) as gate:
        client.generate(job)
        assert gate.reached.wait(TIMEOUT)
        running = row_of(browse(chromium, bridge.http + "/", "--dump-dom"), "active", job.job_id)
        assert "step 3 of 4" in running and "<progress" in running and "80×64" in running
        assert "(recipe)" in running  # guidance was left to the model: the page says what it runs with
    events.wait(p.Result, job_id=job.job_id)
    dom = browse(chromium, bridge.http + "/", "--dump-dom")
    assert row_of(dom, "active", job.job_id) == ""
    ended = row_of(dom, "jobs", job.job_id)
    assert "4 run, schedule 4" in ended and "done" in ended and "80×64" in ended


def test_a_screenshot_of_the_page_for_the_readme(chromium: str, model_cache: object, tmp_path: Path) -> None:
    # a bridge of its own, so the picture shows one session rather than the test suite's history
    with running_bridge() as server, BridgeClient(server.url, name="Krita docker") as painter:
        for seed in (11, 12, 13):
            job = request(photo(128, 96, seed=seed), steps=4, strength=0.6, seed=seed)
            assert painter.run(job, timeout=TIMEOUT).ok
        shot = tmp_path / "status-page.png"
        with held_at_step(server.bridge, 3) as gate:  # and one job running, at step 3 of 6
            painter.generate(request(photo(160, 120, seed=14), steps=8, strength=0.75, seed=14))
            assert gate.reached.wait(TIMEOUT)
            browse(chromium, server.http + "/", f"--screenshot={shot}", "--window-size=1100,900", "--hide-scrollbars")
    keep(checked(shot, (1100, 900), (1100, 900)), "status-page.png")
