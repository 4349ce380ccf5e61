"""The worker thread against a real bridge (tiny model, loopback) and, for connection loss, a fake client."""

from __future__ import annotations

import queue
import struct
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import pytest
from img2img_bridge import runner as r
from img2img_bridge.jobs import JobSpec
from img2img_bridge.pixels import U8, Depth, PixelFormat
from img2img_bridge.settings import Settings
from img2img_bridge.sources import Capture

from bridge.editor import protocol as p
from bridge.editor.client import BridgeClient
from bridge.editor.client import Disconnected as ClientDisconnected
from bridge.editor.regions import Rect, crop
from tests.plugins.krita.conftest import free_port

TIMEOUT = 60.0
SETTINGS = Settings(prompt="a red fox", steps=2, strength=1.0, fixed_seed=True, seed=11)


class Updates:
    def __init__(self) -> None:
        self.queue: queue.Queue[r.Update] = queue.Queue()
        self.seen: list[r.Update] = []

    def __call__(self, update: r.Update) -> None:
        self.queue.put(update)

    def wait(self, kind: type | tuple[type, ...], timeout: float = TIMEOUT, **match: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            update = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            self.seen.append(update)
            if isinstance(update, kind) and all(getattr(update, k) == v for k, v in match.items()):
                return update


@pytest.fixture
def worker() -> Iterator[tuple[r.JobRunner, Updates]]:
    updates = Updates()
    runner = r.JobRunner(updates, name="pytest-krita")
    yield runner, updates
    runner.close()
    assert not runner.alive


@pytest.fixture
def online(worker: tuple[r.JobRunner, Updates], krita_bridge_url: str) -> tuple[r.JobRunner, Updates]:
    runner, updates = worker
    runner.connect(krita_bridge_url)
    updates.wait(r.Connecting)
    connected = updates.wait(r.Connected)
    assert connected.welcome.protocol == p.PROTOCOL_VERSION
    return runner, updates


def pattern(width: int, height: int, fmt: PixelFormat) -> bytes:
    if fmt.depth is Depth.U16:
        values = [(x * 997 + y * 131 + c * 7919) % 65536 for y in range(height) for x in range(width) for c in range(3)]
        return b"".join(struct.pack("=4H", *values[i : i + 3], 65535) for i in range(0, len(values), 3))
    return bytes(v for y in range(height) for x in range(width) for v in ((x * 9) % 256, (y * 5) % 256, 90, 255))


def test_whole_layer_job_streams_previews_then_the_result(online: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = online
    rect = Rect(30, 40, 64, 48)
    # a preview still rendering when its variation's result is ready is dropped (the first one renders cold): several
    # steps, so that some preview arrives however the renders and the steps interleave
    settings = replace(SETTINGS, steps=6)
    spec = JobSpec.new(Capture(rect, pattern(64, 48, U8), U8, None), settings)
    runner.submit(spec)
    result = updates.wait(r.JobResult, job_id=spec.job_id)
    progress = [u for u in updates.seen if isinstance(u, r.JobProgress)]
    previews = [u for u in updates.seen if isinstance(u, r.JobPreview)]
    assert progress and progress[-1].fraction == 1.0
    assert previews, "no preview arrived"
    for preview in previews:
        assert preview.rect == rect  # document coordinates, blown up to full size
        assert len(preview.pixels) == rect.width * rect.height * 4
    assert result.rect == rect
    assert len(result.pixels) == rect.width * rect.height * 4
    assert result.seed == 11
    assert result.view_size == (64, 48) and len(result.view) == 64 * 48 * 4
    assert (result.steps, result.strength) == (6, 1.0)  # what the settings asked for
    assert progress[-1].steps == 6  # the steps that ran: 6 × strength 1.0


def test_variations_carry_their_index_and_thumbnails_and_the_last_ends_the_job(online: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = online
    rect = Rect(0, 0, 64, 48)
    settings = Settings(prompt="a red fox", steps=3, strength=1.0, fixed_seed=True, seed=20, count=3)
    spec = JobSpec.new(Capture(rect, pattern(64, 48, U8), U8, None), settings)
    runner.submit(spec)
    results = [updates.wait(r.JobResult, timeout=5 * TIMEOUT, job_id=spec.job_id) for _ in range(3)]
    assert [(u.index, u.count, u.seed, u.last) for u in results] == [(0, 3, 20, False), (1, 3, 21, False), (2, 3, 22, True)]
    for result in results:
        assert result.thumbnail is not None and result.thumbnail[1:] == (64, 48)
        assert len(result.thumbnail[0]) == 64 * 48 * 4
    previews = [u for u in updates.seen if isinstance(u, r.JobPreview)]
    assert previews and {u.index for u in previews} <= {0, 1, 2}  # previews are dropped when the client is behind
    assert all(u.thumbnail is not None and len(u.thumbnail[0]) == u.thumbnail[1] * u.thumbnail[2] * 4 for u in previews)
    assert {u.index for u in updates.seen if isinstance(u, r.JobProgress)} == {0, 1, 2}


def test_a_job_left_at_auto_runs_the_loaded_models_recipe(online: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = online
    runner.list_models()
    recipe = updates.wait(r.ModelsListed).current.recipe
    assert recipe is not None
    spec = JobSpec.new(Capture(Rect(0, 0, 32, 32), pattern(32, 32, U8), U8, None), Settings(prompt="auto"))
    runner.submit(spec)
    result = updates.wait(r.JobResult, job_id=spec.job_id)
    assert (result.steps, result.guidance, result.strength) == recipe.settings(live=False)
    progress = [u for u in updates.seen if isinstance(u, r.JobProgress) and u.job_id == spec.job_id]
    assert progress and progress[-1].step == progress[-1].steps <= recipe.steps


def test_masked_16bit_job_keeps_unmasked_pixels_at_full_depth(online: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = online
    fmt = PixelFormat(Depth.U16, linear=True)
    rect = Rect(0, 0, 48, 40)
    original = pattern(48, 40, fmt)
    mask = bytes(255 if 10 <= x < 30 and 8 <= y < 24 else (128 if x == 30 else 0) for y in range(40) for x in range(48))
    spec = JobSpec.new(Capture(rect, original, fmt, mask), SETTINGS)
    runner.submit(spec)
    result = updates.wait(r.JobResult, job_id=spec.job_id)
    assert result.rect.intersect(Rect(10, 8, 21, 16)) == Rect(10, 8, 21, 16)  # holds the whole masked box
    inside = Rect(result.rect.x, result.rect.y, result.rect.width, result.rect.height)
    kept = crop(mask, 48, inside, 1)
    before = crop(original, 48, inside, 8)
    assert len(result.pixels) == inside.width * inside.height * 8
    for i, m in enumerate(kept):
        if m == 0:
            assert result.pixels[i * 8 : i * 8 + 8] == before[i * 8 : i * 8 + 8]
    changed = sum(result.pixels[i * 8 : i * 8 + 8] != before[i * 8 : i * 8 + 8] for i, m in enumerate(kept) if m == 255)
    assert changed > 0


def test_cancel_ends_the_job(online: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = online
    spec = JobSpec.new(Capture(Rect(0, 0, 64, 64), pattern(64, 64, U8), U8, None), Settings(prompt="x", steps=100))
    runner.submit(spec)
    runner.cancel(spec.job_id)
    end = updates.wait((r.JobCancelled, r.JobResult), job_id=spec.job_id)
    assert isinstance(end, r.JobCancelled)


def test_bad_settings_fail_the_job_with_the_bridges_limits(online: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = online
    spec = JobSpec.new(Capture(Rect(0, 0, 8, 8), pattern(8, 8, U8), U8, None), Settings(steps=1000))
    runner.submit(spec)
    failed = updates.wait(r.JobFailed, job_id=spec.job_id)
    assert "steps" in failed.message


def test_submit_without_a_connection_fails_the_job(worker: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = worker
    spec = JobSpec.new(Capture(Rect(0, 0, 8, 8), pattern(8, 8, U8), U8, None), SETTINGS)
    runner.submit(spec)
    assert "Reconnect" in updates.wait(r.JobFailed, job_id=spec.job_id).message


def test_unreachable_bridge_reports_how_to_start_it(worker: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = worker
    runner.connect(f"ws://127.0.0.1:{free_port()}/ws")
    failed = updates.wait(r.ConnectFailed)
    assert "img2img-bridge serve" in failed.message


def test_models_are_listed(online: tuple[r.JobRunner, Updates]) -> None:
    runner, updates = online
    runner.list_models()
    listed = updates.wait(r.ModelsListed)
    assert "tiny" in [m.name for m in listed.models]


class FakeClient:
    """Stands in for BridgeClient where a real bridge cannot be made to misbehave on cue."""

    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, url: str, *, token: str | None, name: str, on_event: Any) -> None:
        self.on_event = on_event
        self.sent: list[p.Generate] = []
        self.cancelled: list[str] = []
        self.welcome = p.Welcome(1, "test", "cpu", p.ModelState("tiny", p.ModelStatus.READY), p.Limits(), (), ())
        self.connected = False
        FakeClient.instances.append(self)

    def connect(self) -> p.Welcome:
        self.connected = True
        return self.welcome

    def generate(self, request: p.Generate) -> str:
        self.sent.append(request)
        return request.job_id

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def list_models(self) -> None:
        pass

    def close(self) -> None:
        self.connected = False


def test_connection_loss_fails_running_jobs_and_reports_it() -> None:
    updates = Updates()
    runner = r.JobRunner(updates, client_factory=FakeClient)  # type: ignore[arg-type]
    try:
        runner.connect("ws://fake")
        updates.wait(r.Connected)
        client = FakeClient.instances[-1]
        spec = JobSpec.new(Capture(Rect(0, 0, 2, 2), bytes(16), U8, None), SETTINGS)
        runner.submit(spec)
        client.on_event(p.Queued(spec.job_id, 0))
        updates.wait(r.JobQueued, job_id=spec.job_id)
        client.on_event(ClientDisconnected("lost the connection to the bridge"))
        assert updates.wait(r.JobFailed, job_id=spec.job_id).message == "lost the connection to the bridge"
        assert updates.wait(r.Disconnected).reason == "lost the connection to the bridge"
        client.on_event(p.Result(spec.job_id, 0, 1, p.Image(2, 2, bytes(16)), 0, 0, 1))  # too late: ignored
        runner.submit(JobSpec.new(Capture(Rect(0, 0, 2, 2), bytes(16), U8, None), SETTINGS))
        assert "not connected" in updates.wait(r.JobFailed).message
    finally:
        runner.close()
    assert not any(isinstance(u, r.JobResult) for u in updates.seen)


def test_events_of_a_replaced_connection_are_ignored() -> None:
    updates = Updates()
    runner = r.JobRunner(updates, client_factory=FakeClient)  # type: ignore[arg-type]
    try:
        runner.connect("ws://fake")
        updates.wait(r.Connected)
        old = FakeClient.instances[-1]
        runner.connect("ws://fake")
        updates.wait(r.Connected)
        old.on_event(ClientDisconnected("old connection closed"))
        runner.list_models()  # a no-op for the fake: the worker answers nothing, so wait on a later marker
        new = FakeClient.instances[-1]
        new.on_event(p.Error(p.ErrorCode.INTERNAL, "marker"))
        updates.wait(r.Notice, message="marker")
    finally:
        runner.close()
    assert not any(isinstance(u, r.Disconnected) for u in updates.seen)


def test_an_unreadable_result_fails_the_job() -> None:
    updates = Updates()
    runner = r.JobRunner(updates, client_factory=FakeClient)  # type: ignore[arg-type]
    try:
        runner.connect("ws://fake")
        updates.wait(r.Connected)
        client = FakeClient.instances[-1]
        spec = JobSpec.new(Capture(Rect(0, 0, 2, 2), bytes(16), U8, None), SETTINGS)
        runner.submit(spec)
        client.on_event(p.Result(spec.job_id, 0, 1, p.Image(2, 2, b"short"), 0, 0, 1))
        assert "unreadable" in updates.wait(r.JobFailed, job_id=spec.job_id).message
        runner.close()
        assert client.cancelled == [spec.job_id]
    finally:
        runner.close()


def test_client_is_the_real_one_by_default() -> None:
    assert r.JobRunner.__init__.__kwdefaults__["client_factory"] is BridgeClient  # type: ignore[index]
