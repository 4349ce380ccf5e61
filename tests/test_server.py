"""The real server on a loopback port, driven by the real client, with the tiny model."""

from __future__ import annotations

import io
import json
import queue
import shutil
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from PIL import Image as PILImage
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from bridge.bounds import ServerBounds
from bridge.editor import protocol as p
from bridge.editor.client import BridgeClient, ClientError, Disconnected, new_job_id
from bridge.jobs import Job, JobState
from bridge.models import ModelSpec
from bridge.server import ServerConfig
from tests.bridge_server import RunningBridge, free_port, running_bridge
from tests.memory import exhausted_memory

Connect = Callable[..., BridgeClient]
TIMEOUT = 60.0


def photo(width: int = 96, height: int = 64, *, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return pixels


def request(pixels: np.ndarray, **fields: Any) -> p.Generate:
    height, width = pixels.shape[:2]
    defaults: dict[str, Any] = {"prompt": "a red fox", "steps": 4, "strength": 0.75, "seed": 7, "guidance": 7.0}
    defaults.update(fields)
    return p.Generate(job_id=new_job_id(), image=p.Image(width, height, pixels.tobytes()), **defaults)


def mask_of(pixels: np.ndarray, mask: np.ndarray) -> p.Mask:
    return p.Mask(width=pixels.shape[1], height=pixels.shape[0], data=np.ascontiguousarray(mask).tobytes())


def result_pixels(result: p.Result) -> np.ndarray:
    return np.frombuffer(result.image.raw_rgba(), dtype=np.uint8).reshape(result.image.height, result.image.width, 4)


class Events:
    """Collects a client's events from its reader thread; ``wait`` blocks for the next matching one."""

    def __init__(self) -> None:
        self.queue: queue.Queue[p.Message | Disconnected] = queue.Queue()
        self.seen: list[p.Message | Disconnected] = []

    def __call__(self, event: p.Message | Disconnected) -> None:
        self.queue.put(event)

    def wait(self, kind: type, timeout: float = TIMEOUT, **match: Any) -> Any:
        while True:
            event = self.queue.get(timeout=timeout)
            self.seen.append(event)
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
                return event


def test_health_reports_the_tiny_model(bridge: RunningBridge, device: str) -> None:
    health = bridge.health()
    assert health["status"] == "ready"
    assert health["model"] == "tiny"
    assert health["test_model"] is True
    assert "noise" in health["message"]
    assert health["protocol"] == p.PROTOCOL_VERSION
    assert health["device"] == device
    assert health["queue"] == 0


def test_welcome_describes_the_bridge(connect: Connect) -> None:
    client = connect()
    welcome = client.welcome
    assert welcome is not None
    assert welcome.model.status is p.ModelStatus.READY and welcome.model.test_model
    assert welcome.limits.max_message_bytes > 4096 * 4096 * 4
    assert "tiny" in {m.name for m in welcome.models}
    assert p.Encoding.RAW in welcome.encodings


def test_out_of_memory_is_answered_and_the_server_keeps_serving(bridge: RunningBridge, connect: Connect) -> None:
    client = connect()
    # on CUDA the allocator really runs out; elsewhere the UNet raises what CUDA would (tests/memory.py)
    with exhausted_memory(bridge.bridge.engine):
        failed = client.run(request(photo()), timeout=TIMEOUT)
    assert failed.error is not None and failed.error.code is p.ErrorCode.OUT_OF_MEMORY
    assert "smaller image" in failed.error.message
    assert bridge.health()["status"] == "ready"
    assert client.run(request(photo()), timeout=TIMEOUT).ok


def test_whole_image_img2img(connect: Connect) -> None:
    pixels = photo()
    outcome = connect().run(request(pixels), timeout=TIMEOUT)
    assert outcome.ok
    (result,) = outcome.results
    assert (result.x, result.y, result.image.width, result.image.height) == (0, 0, 96, 64)
    assert result.seed == 7
    assert result.timings["total_ms"] > 0
    out = result_pixels(result)
    assert not np.array_equal(out[..., :3], pixels[..., :3])
    assert np.array_equal(out[..., 3], pixels[..., 3])


def test_same_seed_same_output_and_other_seed_differs(connect: Connect) -> None:
    client = connect()
    pixels = photo()
    first = client.run(request(pixels, seed=11), timeout=TIMEOUT).results[0]
    again = client.run(request(pixels, seed=11), timeout=TIMEOUT).results[0]
    other = client.run(request(pixels, seed=12), timeout=TIMEOUT).results[0]
    assert first.image.data == again.image.data
    assert first.image.data != other.image.data


def test_low_strength_stays_closer_than_high(connect: Connect) -> None:
    client = connect()
    pixels = photo(128, 128)
    low = result_pixels(client.run(request(pixels, strength=0.1, steps=10), timeout=TIMEOUT).results[0])
    high = result_pixels(client.run(request(pixels, strength=1.0, steps=10), timeout=TIMEOUT).results[0])
    low_diff = np.abs(low[..., :3].astype(int) - pixels[..., :3]).mean()
    high_diff = np.abs(high[..., :3].astype(int) - pixels[..., :3]).mean()
    assert low_diff < high_diff


def test_masked_inpaint_keeps_outside_pixels_identical(connect: Connect) -> None:
    pixels = photo(160, 120)
    mask = np.zeros((120, 160), np.uint8)
    yy, xx = np.mgrid[:120, :160]
    distance = np.hypot((xx - 80) / 40, (yy - 60) / 30)
    mask[:] = np.clip((1.3 - distance) * 255 / 0.6, 0, 255).astype(np.uint8)  # a feathered ellipse
    outcome = connect().run(request(pixels, mask=mask_of(pixels, mask)), timeout=TIMEOUT)
    (result,) = outcome.results
    nz_rows, nz_cols = np.nonzero(mask)
    assert (result.x, result.y) == (nz_cols.min(), nz_rows.min())
    assert (result.image.width, result.image.height) == (nz_cols.max() - nz_cols.min() + 1, nz_rows.max() - nz_rows.min() + 1)
    out = result_pixels(result)
    box = (slice(result.y, result.y + out.shape[0]), slice(result.x, result.x + out.shape[1]))
    source, region_mask = pixels[box], mask[box]
    assert np.array_equal(out[region_mask == 0], source[region_mask == 0])
    assert not np.array_equal(out[region_mask == 255], source[region_mask == 255])


def test_inverted_mask_replaces_everything_but_the_subject(connect: Connect) -> None:
    pixels = photo(128, 96)
    subject = np.zeros((96, 128), np.uint8)
    subject[30:70, 40:90] = 255
    background = 255 - subject
    (result,) = connect().run(request(pixels, mask=mask_of(pixels, background)), timeout=TIMEOUT).results
    assert (result.x, result.y, result.image.width, result.image.height) == (0, 0, 128, 96)
    out = result_pixels(result)
    assert np.array_equal(out[30:70, 40:90], pixels[30:70, 40:90])
    assert not np.array_equal(out[background == 255], pixels[background == 255])


def test_alpha_is_kept(connect: Connect) -> None:
    pixels = photo(96, 96)
    pixels[:, :40, 3] = 0
    pixels[:, 40:60, 3] = 128
    (result,) = connect().run(request(pixels), timeout=TIMEOUT).results
    assert np.array_equal(result_pixels(result)[..., 3], pixels[..., 3])


def test_previews_arrive_before_the_result(connect: Connect) -> None:
    events = Events()
    client = connect()
    job = request(photo(128, 96), steps=8, strength=1.0, preview=p.PreviewSettings(every=1, max_size=64))
    client.generate(job, events)
    events.wait(p.Result)
    kinds = [type(e) for e in events.seen]
    previews = [e for e in events.seen if isinstance(e, p.Preview)]
    assert kinds[0] is p.Queued
    assert previews and kinds.index(p.Preview) < kinds.index(p.Result)
    for preview in previews:
        assert max(preview.image.width, preview.image.height) <= 64
        assert (preview.x, preview.y, preview.width, preview.height) == (0, 0, 128, 96)
        assert len(preview.image.raw_rgba()) == preview.image.width * preview.image.height * 4
    progress = [e.step for e in events.seen if isinstance(e, p.Progress)]
    # throttled: the first step and the last always, steps in order, none twice
    assert progress[0] == 1 and progress[-1] == 8 and progress == sorted(set(progress))


def test_progress_is_throttled_and_the_last_step_always_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import server

    sent: list[p.Message] = []
    timers: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = []

    class Loop:
        def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
            callback(*args)

        def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
            timers.append((delay, callback, args))

    class Conn:
        loop = Loop()

        def send_threadsafe(self, message: p.Message, droppable: bool = False) -> None:
            sent.append(message)

    def fire_timers() -> None:
        while timers:
            delay, callback, args = timers.pop(0)
            clock[0] += delay
            callback(*args)

    clock = [100.0]
    monkeypatch.setattr(server.time, "monotonic", lambda: clock[0])
    hooks = server._JobHooks(Job(request=request(photo(8, 8)), owner=None), Conn(), None)  # type: ignore[arg-type]
    for step in range(1, 11):
        hooks.progress(0, step, 10)
        clock[0] += server.PROGRESS_INTERVAL_S / 4
    fire_timers()  # every held-back step was overtaken by a newer one that went
    assert [m.step for m in sent if isinstance(m, p.Progress)] == [1, 5, 9, 10]
    assert hooks.steps_run == 10

    # a step that stalls right after a fast one is shown once the interval is over, not left behind
    sent.clear()
    hooks = server._JobHooks(Job(request=request(photo(8, 8)), owner=None), Conn(), None)  # type: ignore[arg-type]
    hooks.progress(0, 1, 4)
    hooks.progress(1, 1, 4)  # another variation of the batch has its own interval
    hooks.progress(0, 2, 4)
    assert [(m.index, m.step) for m in sent if isinstance(m, p.Progress)] == [(0, 1), (1, 1)]
    fire_timers()
    assert [(m.index, m.step) for m in sent if isinstance(m, p.Progress)] == [(0, 1), (1, 1), (0, 2)]

    # a result seals the job: what was held back is not sent after it
    sent.clear()
    hooks.progress(0, 3, 4)
    hooks.seal()
    fire_timers()
    assert sent == []


def test_a_preview_being_rendered_never_delays_the_result(bridge: RunningBridge, connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import engine

    result_seen, rendering = threading.Event(), threading.Event()
    finished: list[bool] = []
    render = engine.render_preview

    def slow_render(frame: Any, settings: p.PreviewSettings) -> p.Image:
        rendering.set()
        finished.append(result_seen.wait(TIMEOUT))  # held until the client has its result
        return render(frame, settings)

    monkeypatch.setattr(engine, "render_preview", slow_render)
    events = Events()
    client = connect()
    job = request(photo(64, 64), steps=4, strength=1.0, preview=p.PreviewSettings(every=1, max_size=32))

    def on_event(event: p.Message | Disconnected) -> None:
        if isinstance(event, p.Result):
            result_seen.set()
        events(event)

    client.generate(job, on_event)
    events.wait(p.Result)
    assert rendering.is_set()
    # one more job on the connection: nothing of the first may arrive after its result
    client.run(request(photo(16, 16), steps=1, strength=1.0, preview=p.PreviewSettings(every=0)), timeout=TIMEOUT)
    while not events.queue.empty():
        events.seen.append(events.queue.get())
    kinds = [type(e) for e in events.seen]
    assert kinds[-1] is p.Result and kinds.count(p.Result) == 1
    assert finished and all(finished)  # the preview was released by the result, not the other way round


def test_jpeg_previews_and_zlib_results_for_remote_clients(connect: Connect) -> None:
    events = Events()
    job = request(photo(), preview=p.PreviewSettings(every=1, encoding=p.Encoding.JPEG), result_encoding=p.Encoding.ZLIB)
    connect().generate(job, events)
    result = events.wait(p.Result)
    preview = next(e for e in events.seen if isinstance(e, p.Preview))
    assert preview.image.encoding is p.Encoding.JPEG and preview.image.data[:2] == b"\xff\xd8"
    assert result.image.encoding is p.Encoding.ZLIB
    assert len(result.image.raw_rgba()) == 96 * 64 * 4


def test_count_streams_each_variation_with_consecutive_seeds(connect: Connect) -> None:
    outcome = connect().run(request(photo(), count=3, seed=100), timeout=TIMEOUT)
    assert [r.index for r in outcome.results] == [0, 1, 2]
    assert [r.seed for r in outcome.results] == [100, 101, 102]
    assert len({r.image.data for r in outcome.results}) == 3


def test_a_batch_of_variations_previews_each_of_them_before_the_results(connect: Connect) -> None:
    events = Events()
    job = request(photo(), count=3, steps=8, strength=1.0, guidance=0.0, preview=p.PreviewSettings(every=1, max_size=32))
    connect().generate(job, events)
    for _ in range(3):
        events.wait(p.Result)
    kinds = [type(e) for e in events.seen]
    previews = {e.index for e in events.seen if isinstance(e, p.Preview)}
    assert previews == {0, 1, 2}, "every variation of the batch streams previews"
    assert p.Preview not in kinds[kinds.index(p.Result) :], "no preview after the first result"
    progress = [(e.index, e.step) for e in events.seen if isinstance(e, p.Progress)]
    # each variation's progress in order, throttled on its own, its first and last step always
    for index in range(3):
        steps = [step for i, step in progress if i == index]
        assert steps[0] == 1 and steps[-1] == 8 and steps == sorted(set(steps)), (index, steps)
    results = [e for e in events.seen if isinstance(e, p.Result)]
    assert [r.timings["batch"] for r in results] == [3.0, 3.0, 3.0], "one batch: the variations step together"


def test_cancel_mid_job_and_the_connection_stays_usable(bridge: RunningBridge, connect: Connect) -> None:
    client = connect()
    events = Events()
    job = request(photo(128, 128), steps=100, strength=1.0, preview=p.PreviewSettings(every=0))
    client.generate(job, events)
    events.wait(p.Progress, job_id=job.job_id)
    client.cancel(job.job_id)
    events.wait(p.Cancelled, job_id=job.job_id)
    assert not any(isinstance(e, p.Result) for e in events.seen)
    assert client.run(request(photo()), timeout=TIMEOUT).ok
    record = next(r for r in bridge.health()["recent_jobs"] if r["job_id"] == job.job_id)
    assert record["outcome"] == "cancelled" and record["steps"] < 100


def test_cancel_of_a_queued_job(connect: Connect) -> None:
    client = connect()
    events = Events()
    busy = request(photo(128, 128), steps=100, strength=1.0, preview=p.PreviewSettings(every=0))
    waiting = request(photo())
    client.generate(busy, events)
    events.wait(p.Progress, job_id=busy.job_id)
    client.generate(waiting, events)
    events.wait(p.Queued, job_id=waiting.job_id)
    client.cancel(waiting.job_id)
    events.wait(p.Cancelled, job_id=waiting.job_id)
    client.cancel(busy.job_id)
    events.wait(p.Cancelled, job_id=busy.job_id)


def test_disconnect_mid_job_cancels_it(bridge: RunningBridge, connect: Connect) -> None:
    leaving = connect()
    events = Events()
    job = request(photo(128, 128), steps=100, strength=1.0, preview=p.PreviewSettings(every=0))
    leaving.generate(job, events)
    events.wait(p.Progress, job_id=job.job_id)
    leaving.close()
    # the GPU worker runs one job at a time: once this result is back, the abandoned job has ended
    assert connect().run(request(photo()), timeout=TIMEOUT).ok
    record = next(r for r in bridge.health()["recent_jobs"] if r["job_id"] == job.job_id)
    assert record["outcome"] == "cancelled" and record["steps"] < 100


def test_two_clients_at_once(connect: Connect) -> None:
    first, second = connect(), connect()
    outcomes: dict[str, Any] = {}

    def work(name: str, client: BridgeClient, seed: int) -> None:
        outcomes[name] = client.run(request(photo(seed=seed), count=2), timeout=TIMEOUT)

    threads = [threading.Thread(target=work, args=("a", first, 1)), threading.Thread(target=work, args=("b", second, 2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes["a"].ok and outcomes["b"].ok
    assert len(outcomes["a"].results) == 2 and len(outcomes["b"].results) == 2


def test_clients_take_turns(connect: Connect) -> None:
    first, second = connect(), connect()
    a_events, b_events = Events(), Events()
    busy = request(photo(128, 128), steps=100, strength=1.0, preview=p.PreviewSettings(every=0))
    first.generate(busy, a_events)
    a_events.wait(p.Progress, job_id=busy.job_id)
    a_jobs = [request(photo()) for _ in range(3)]
    for job in a_jobs:
        first.generate(job, a_events)
    positions = [a_events.wait(p.Queued, job_id=j.job_id).position for j in a_jobs]
    b_job = request(photo())
    second.generate(b_job, b_events)
    assert positions == [0, 1, 2]
    # B's first job runs after A's next one, not after all of A's
    assert b_events.wait(p.Queued, job_id=b_job.job_id).position == 1
    first.cancel(busy.job_id)
    b_events.wait(p.Result, job_id=b_job.job_id)
    for job in a_jobs:
        a_events.wait(p.Result, job_id=job.job_id)


def test_live_requests_are_newest_wins(connect: Connect) -> None:
    client = connect()
    events = Events()
    busy = request(photo(128, 128), steps=100, strength=1.0, preview=p.PreviewSettings(every=0))
    client.generate(busy, events)
    events.wait(p.Progress, job_id=busy.job_id)
    live = [request(photo(seed=i), live=True, steps=2, strength=0.5) for i in range(4)]
    for job in live:
        client.generate(job, events)
    for job in live[:-1]:
        events.wait(p.Cancelled, job_id=job.job_id)
    client.cancel(busy.job_id)
    result = events.wait(p.Result, job_id=live[-1].job_id)
    assert result.index == 0
    assert not any(isinstance(e, p.Result) and e.job_id in {j.job_id for j in live[:-1]} for e in events.seen)


def test_large_image_is_not_cut_by_message_limits(connect: Connect) -> None:
    pixels = photo(1100, 1000)
    mask = np.zeros((1000, 1100), np.uint8)
    mask[100:200, 100:220] = 255
    (result,) = connect().run(request(pixels, mask=mask_of(pixels, mask), steps=2), timeout=TIMEOUT).results
    assert (result.x, result.y, result.image.width, result.image.height) == (100, 100, 120, 100)


def _bad_wire() -> list[tuple[str, bytes, p.ErrorCode, str | None]]:
    good = request(photo(8, 8)).to_wire()

    def variant(**changes: Any) -> bytes:
        wire = dict(good, job_id=new_job_id())
        for key, value in changes.items():
            if value is _DROP:
                wire.pop(key)
            else:
                wire[key] = value
        return bytes(msgpack.packb(wire, use_bin_type=True))

    image = good["image"]
    mask_bomb = {"width": 8, "height": 8, "encoding": "zlib", "data": zlib.compress(b"\xff" * (8 << 20))}
    return [
        ("malformed", b"\xc1\x00garbage", p.ErrorCode.BAD_MESSAGE, None),
        ("not a map", msgpack.packb([1, 2, 3]), p.ErrorCode.BAD_MESSAGE, None),
        ("unknown type", msgpack.packb({"type": "teleport"}), p.ErrorCode.UNKNOWN_TYPE, "type"),
        ("missing image", variant(image=_DROP), p.ErrorCode.MISSING_FIELD, "image"),
        ("missing prompt", variant(prompt=_DROP), p.ErrorCode.MISSING_FIELD, "prompt"),
        ("missing job id", variant(job_id=_DROP), p.ErrorCode.MISSING_FIELD, "job_id"),
        ("wrong byte count", variant(image=dict(image, data=b"\x00" * 10)), p.ErrorCode.SIZE_MISMATCH, "image.data"),
        ("zero width", variant(image=dict(image, width=0, data=b"")), p.ErrorCode.INVALID_FIELD, "image.width"),
        ("huge", variant(image=dict(image, width=100_000, height=100_000)), p.ErrorCode.TOO_LARGE, "image"),
        ("strength", variant(strength=1.5), p.ErrorCode.INVALID_FIELD, "strength"),
        ("zero strength", variant(strength=0.0), p.ErrorCode.INVALID_FIELD, "strength"),
        ("steps", variant(steps=0), p.ErrorCode.INVALID_FIELD, "steps"),
        ("too many steps", variant(steps=10_000), p.ErrorCode.INVALID_FIELD, "steps"),
        ("guidance", variant(guidance=-2.0), p.ErrorCode.INVALID_FIELD, "guidance"),
        ("steps not int", variant(steps="many"), p.ErrorCode.INVALID_FIELD, "steps"),
        ("mask size", variant(mask={"width": 4, "height": 4, "data": b"\xff" * 16}), p.ErrorCode.SIZE_MISMATCH, "mask"),
        ("mask bytes", variant(mask={"width": 8, "height": 8, "data": b"\xff" * 3}), p.ErrorCode.SIZE_MISMATCH, "mask.data"),
        ("empty mask", variant(mask={"width": 8, "height": 8, "data": b"\x00" * 64}), p.ErrorCode.INVALID_FIELD, "mask"),
        ("encoding", variant(image=dict(image, encoding="webp")), p.ErrorCode.INVALID_FIELD, "image.encoding"),
        ("corrupt png", variant(image=dict(image, encoding="png", data=b"not a png")), p.ErrorCode.INVALID_FIELD, "image.data"),
        ("png of another size", variant(image=dict(image, encoding="png", data=_png(4, 4))), p.ErrorCode.SIZE_MISMATCH, "image.data"),
        ("corrupt zlib", variant(image=dict(image, encoding="zlib", data=b"xx")), p.ErrorCode.INVALID_FIELD, "image.data"),
        (
            "zlib bomb",
            variant(image=dict(image, encoding="zlib", data=zlib.compress(bytes(64 << 20)))),
            p.ErrorCode.SIZE_MISMATCH,
            "image.data",
        ),
        ("short zlib", variant(image=dict(image, encoding="zlib", data=zlib.compress(bytes(10)))), p.ErrorCode.SIZE_MISMATCH, "image.data"),
        (
            "cut zlib",
            variant(image=dict(image, encoding="zlib", data=zlib.compress(bytes(256))[:-6])),
            p.ErrorCode.INVALID_FIELD,
            "image.data",
        ),
        (
            "zlib mask bomb",
            variant(mask=mask_bomb),
            p.ErrorCode.SIZE_MISMATCH,
            "mask.data",
        ),
        ("count", variant(count=99), p.ErrorCode.INVALID_FIELD, "count"),
        ("cancel unknown", msgpack.packb({"type": "cancel", "job_id": "nope"}), p.ErrorCode.UNKNOWN_JOB, "job_id"),
        ("load unknown model", msgpack.packb({"type": "load_model", "model": "!!"}), p.ErrorCode.UNKNOWN_MODEL, None),
    ]


_DROP = object()


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGBA", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("frame", "code", "field"), [case[1:] for case in _bad_wire()], ids=[case[0] for case in _bad_wire()])
def test_bad_input_is_answered_and_the_connection_stays_usable(
    connect: Connect, frame: bytes, code: p.ErrorCode, field: str | None
) -> None:
    events = Events()
    client = connect(on_event=events)
    client.send_raw(frame)
    error = events.wait(p.Error)
    assert error.code is code, error.message
    assert error.field == field
    assert error.message
    sent = msgpack.unpackb(frame, raw=False) if code is not p.ErrorCode.BAD_MESSAGE else None
    if isinstance(sent, dict) and sent.get("type") == "generate":
        assert error.job_id == sent.get("job_id")  # every refusal of a job names it, so its waiter ends
    assert client.run(request(photo(32, 32), steps=1), timeout=TIMEOUT).ok


def test_text_frames_and_messages_before_hello_are_refused(bridge: RunningBridge) -> None:
    with ws_connect(bridge.url, max_size=None, proxy=None) as ws:
        ws.send(p.encode(p.ListModels()))
        error = p.decode_server_message(ws.recv(timeout=10))
        assert isinstance(error, p.Error) and error.code is p.ErrorCode.HANDSHAKE_REQUIRED
        ws.send(p.encode(p.Hello(client="raw")))
        assert isinstance(p.decode_server_message(ws.recv(timeout=10)), p.Welcome)
        ws.send("hello as text")
        error = p.decode_server_message(ws.recv(timeout=10))
        assert isinstance(error, p.Error) and error.code is p.ErrorCode.BAD_MESSAGE


def _frames_hello(ws: Any, raw_frames: bool = True) -> p.Welcome:
    ws.send(p.encode(p.Hello(client="frames", raw_frames=raw_frames)))
    welcome = p.decode_server_message(ws.recv(timeout=TIMEOUT))
    assert isinstance(welcome, p.Welcome)
    return welcome


def _job_end(ws: Any) -> list[Any]:
    """Every frame the bridge sends until a job ends: decoded messages, each followed by its raw frames as they came."""
    seen: list[Any] = []
    while True:
        message = p.decode_server_message(ws.recv(timeout=TIMEOUT))
        seen.append(message)
        seen.extend(ws.recv(timeout=TIMEOUT) for _ in range(p.frames_following(message)))
        if p.is_job_end(message):
            return seen


def test_pixels_travel_as_raw_frames_after_their_message_when_both_sides_agree(bridge: RunningBridge) -> None:
    pixels = photo(160, 128)
    job = request(pixels, steps=2, strength=1.0)
    head, (data,) = p.split_frames(job)
    assert head.image.frame == len(data) == pixels.nbytes and head.image.data == b""
    with ws_connect(bridge.url, max_size=None, proxy=None) as ws:
        assert _frames_hello(ws).raw_frames
        ws.send(p.encode(head))
        ws.send(data)
        seen = _job_end(ws)
    result = seen[-2]
    assert isinstance(result, p.Result) and result.image.data == b"" and result.image.frame == 160 * 128 * 4
    assert isinstance(seen[-1], bytes) and len(seen[-1]) == result.image.frame
    joined = p.join_frames(result, [seen[-1]])
    assert joined.image.frame == 0 and len(joined.image.raw_rgba()) == result.image.frame


def test_a_client_that_does_not_ask_for_raw_frames_gets_msgpack_as_before(bridge: RunningBridge) -> None:
    job = request(photo(160, 128), steps=1, strength=1.0)
    with ws_connect(bridge.url, max_size=None, proxy=None) as ws:
        ws.send(p.encode(p.Hello(client="older")))
        welcome_frame = ws.recv(timeout=TIMEOUT)
        assert "raw_frames" not in msgpack.unpackb(welcome_frame, raw=False)
        ws.send(p.encode(job))
        seen = _job_end(ws)
    assert all(isinstance(m, p.Message) for m in seen)
    assert isinstance(seen[-1], p.Result) and len(seen[-1].image.data) == 160 * 128 * 4 and seen[-1].image.frame == 0


def test_a_raw_frame_that_does_not_match_its_message_is_refused_and_the_connection_goes_on(bridge: RunningBridge) -> None:
    job = request(photo(160, 128), steps=1, strength=1.0)
    head, (data,) = p.split_frames(job)
    unreadable = {**head.to_wire(), "prompt": None}  # announces its frame but cannot be decoded
    with ws_connect(bridge.url, max_size=None, proxy=None) as ws:
        _frames_hello(ws)
        for first, second, code, field in (
            (p.encode(head), bytes(data)[:-4], p.ErrorCode.SIZE_MISMATCH, "image.frame"),
            (p.encode(head), "text, not pixels", p.ErrorCode.BAD_MESSAGE, "image.frame"),
            (msgpack.packb(unreadable, use_bin_type=True), data, p.ErrorCode.MISSING_FIELD, "prompt"),
        ):
            ws.send(first)
            ws.send(second)
            error = p.decode_server_message(ws.recv(timeout=TIMEOUT))
            assert isinstance(error, p.Error) and (error.code, error.field, error.job_id) == (code, field, job.job_id), error
        # the frames were taken as pixels, not as messages: nothing else was answered, and the next job runs
        again = replace(job, job_id=new_job_id())
        head, (data,) = p.split_frames(again)
        ws.send(p.encode(head))
        ws.send(data)
        seen = _job_end(ws)
    assert isinstance(seen[0], p.Queued)
    assert isinstance(seen[-2], p.Result)


def test_announced_frames_that_never_come_close_the_connection(model_cache: object) -> None:
    config = ServerConfig(model="tiny", device="cpu", bounds=ServerBounds(frame_timeout=0.3))
    head, _ = p.split_frames(request(photo(160, 128), steps=1))
    with running_bridge(config) as server, ws_connect(server.url, max_size=None, proxy=None) as ws:
        _frames_hello(ws)
        ws.send(p.encode(head))
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=TIMEOUT)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
    assert "did not follow within 0.3 s" in caught.value.rcvd.reason


def test_other_protocol_versions_are_told_to_update(bridge: RunningBridge) -> None:
    with ws_connect(bridge.url, max_size=None, proxy=None) as ws:
        ws.send(p.encode(p.Hello(client="future", protocol=p.PROTOCOL_VERSION + 1)))
        error = p.decode_server_message(ws.recv(timeout=10))
        assert isinstance(error, p.Error) and error.code is p.ErrorCode.UNSUPPORTED_PROTOCOL
        assert "update" in error.message


def test_browser_origins_are_rejected(bridge: RunningBridge) -> None:
    with pytest.raises(InvalidStatus) as caught:
        ws_connect(bridge.url, origin="https://evil.example", proxy=None)  # type: ignore[arg-type]
    assert caught.value.response.status_code == 403


def test_allowed_origin_may_connect(model_cache: object) -> None:
    config = ServerConfig(model="tiny", device="cpu", allowed_origins=("http://localhost:3000",))
    with running_bridge(config) as server:
        with ws_connect(server.url, origin="http://localhost:3000", proxy=None) as ws:  # type: ignore[arg-type]
            ws.send(p.encode(p.Hello(client="page")))
            assert isinstance(p.decode_server_message(ws.recv(timeout=10)), p.Welcome)
        with pytest.raises(InvalidStatus):
            ws_connect(server.url, origin="http://localhost:3001", proxy=None)  # type: ignore[arg-type]


def test_token_is_enforced(model_cache: object) -> None:
    with running_bridge(ServerConfig(model="tiny", device="cpu", token="s3cret")) as server:
        with pytest.raises(ClientError) as caught:
            BridgeClient(server.url).connect()
        assert caught.value.code is p.ErrorCode.UNAUTHORIZED
        with pytest.raises(ClientError):
            BridgeClient(server.url, token="wrong").connect()
        with pytest.raises(urllib.error.HTTPError) as http_error:
            server.health()
        assert http_error.value.code == 401
        assert server.health(token="s3cret")["status"] == "ready"
        with BridgeClient(server.url, token="s3cret") as client:
            assert client.run(request(photo(32, 32), steps=1), timeout=TIMEOUT).ok


def test_missing_model_keeps_the_server_up_and_says_how_to_fix_it(model_cache: object) -> None:
    with running_bridge(ServerConfig(model="someone/not-in-the-cache", device="cpu")) as server:
        health = server.health()
        assert health["status"] == "no-model"
        assert "--model" in health["message"]
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            outcome = client.run(request(photo(32, 32)), timeout=TIMEOUT)
            assert outcome.error is not None and outcome.error.code is p.ErrorCode.NO_MODEL
            assert "--model" in outcome.error.message
            client.load_model("tiny")
            events.wait(
                p.ModelStatusEvent,
                timeout=TIMEOUT,
                model=p.ModelState(name="tiny", status=p.ModelStatus.LOADING, message="loading tiny", progress=0.0),
            )
            ready = events.wait(p.ModelStatusEvent, timeout=TIMEOUT)
            while ready.model.status is not p.ModelStatus.READY:
                ready = events.wait(p.ModelStatusEvent, timeout=TIMEOUT)
            assert client.run(request(photo(32, 32)), timeout=TIMEOUT).ok
            client.list_models()
            models = events.wait(p.Models)
            assert models.current.name == "tiny" and "tiny" in {m.name for m in models.models}


def test_client_explains_when_no_bridge_runs() -> None:
    with pytest.raises(ClientError) as caught:
        BridgeClient(f"127.0.0.1:{free_port()}", timeout=5).connect()
    assert caught.value.code is p.ErrorCode.CONNECTION
    assert "img2img-bridge serve" in caught.value.message


def model_states(events: Events, until: p.ModelStatus, name: str) -> list[p.ModelState]:
    """The model states broadcast until ``name`` reaches ``until``."""
    states: list[p.ModelState] = []
    while not states or (states[-1].status, states[-1].name) != (until, name):
        states.append(events.wait(p.ModelStatusEvent, timeout=TIMEOUT).model)
    return states


def broken_model(tmp_path: Path, weights: bool = False) -> tuple[ModelSpec, ...]:
    """A catalog offering "broken-model": the tiny model without its UNet config, or (``weights``) with cut-off UNet weights."""
    from bridge.tiny_model import ensure_tiny_model

    broken = tmp_path / "broken-model"
    shutil.copytree(ensure_tiny_model(), broken)
    if weights:
        unet = next((broken / "unet").glob("*.safetensors"))
        unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    else:
        (broken / "unet" / "config.json").unlink()
    return (ModelSpec("broken-model", "folder", str(broken)),)


def test_weights_that_fail_after_the_switch_bring_the_previous_model_back(model_cache: object, tmp_path: Path) -> None:
    with running_bridge(ServerConfig(model="tiny", device="cpu", catalog=broken_model(tmp_path, weights=True))) as server:
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            client.load_model("broken-model")
            failed = model_states(events, p.ModelStatus.ERROR, "broken-model")[-1]
            assert "could not load" in failed.message
            model_states(events, p.ModelStatus.READY, "tiny")
            assert client.run(request(photo(32, 32), steps=1), timeout=TIMEOUT).ok
            assert server.health()["status"] == "ready"


def test_a_job_cancelled_while_a_model_loads_ends_once_and_its_id_is_free_again(model_cache: object, tmp_path: Path) -> None:
    config = ServerConfig(model="tiny", device="cpu", catalog=broken_model(tmp_path))
    with running_bridge(config) as server:
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            release = threading.Event()
            server.bridge.engine_thread.submit(release.wait)  # the load waits behind this, the job behind the load
            client.load_model("broken-model")
            job = request(photo(32, 32), steps=1)
            client.generate(job)
            events.wait(p.Queued, job_id=job.job_id)
            while server.call(lambda: [j.state for c in server.bridge.connections for j in c.jobs.values()]) != [JobState.RUNNING]:
                time.sleep(0.01)  # the worker took the job and now waits for the load
            client.cancel(job.job_id)
            release.set()
            events.wait(p.Cancelled, job_id=job.job_id)
            again = client.run(job, timeout=TIMEOUT)  # the same id: the first job is over
            assert again.ok
            ends = [e for e in events.seen if isinstance(e, p.Message) and getattr(e, "job_id", None) == job.job_id and p.is_job_end(e)]
            assert [type(e) for e in ends] == [p.Cancelled]


def test_a_duplicate_job_id_is_refused_naming_the_id(bridge: RunningBridge, connect: Connect) -> None:
    events = Events()
    client = connect(on_event=events)
    release = threading.Event()
    bridge.bridge.engine_thread.submit(release.wait)
    try:
        job = request(photo(32, 32), steps=1)
        client.generate(job)
        events.wait(p.Queued, job_id=job.job_id)
        client.send_raw(p.encode(job))
        error = events.wait(p.Error)
        assert (error.code, error.job_id) == (p.ErrorCode.DUPLICATE_JOB, job.job_id)
    finally:
        release.set()


def http_get(server: RunningBridge, path: str, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(server.http + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_foreign_host_name_is_refused_and_health_details_need_a_loopback_host(model_cache: object) -> None:
    config = ServerConfig(model="tiny", device="cpu", allowed_hosts=("bridge.lan",))
    with running_bridge(config) as server:
        status, text = http_get(server, "/health", {"Host": "evil.example"})
        assert status == 421 and "--allow-host" in text
        upgrade = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        }
        assert http_get(server, p.WS_PATH, {"Host": "evil.example", **upgrade})[0] == 421
        status, text = http_get(server, "/health", {"Host": f"bridge.lan:{server.port}"})
        assert status == 200
        summary = json.loads(text)
        assert summary["status"] == "ready" and "recent_jobs" not in summary and "model" not in summary
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]"):
            status, text = http_get(server, "/health", {"Host": host})
            assert status == 200 and json.loads(text)["model"] == "tiny"


def test_bearer_is_case_insensitive_and_the_token_is_never_echoed(model_cache: object) -> None:
    with running_bridge(ServerConfig(model="tiny", device="cpu", token="s3cret")) as server:
        assert http_get(server, "/health", {"Authorization": "bearer s3cret"})[0] == 200
        assert http_get(server, "/health", {"Authorization": "BEARER  s3cret"})[0] == 200
        status, text = http_get(server, "/health", {"Authorization": "Bearer not-the-token"})
        assert status == 401 and "not-the-token" not in text and "s3cret" not in text


def test_only_offered_models_load_and_errors_do_not_tell_what_exists(model_cache: object, tmp_path: Path) -> None:
    existing = tmp_path / "real.safetensors"
    existing.write_bytes(b"\0" * 16)
    with running_bridge(ServerConfig(model="tiny", device="cpu")) as server:
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            answers = []
            for name in (str(existing), str(tmp_path / "missing.safetensors"), str(tmp_path), "someone/some-model"):
                client.load_model(name)
                error = events.wait(p.Error)
                assert error.code is p.ErrorCode.UNKNOWN_MODEL
                answers.append(error.message.split(" is not a model ", 1)[1])  # the same sentence after the name
            assert len(set(answers)) == 1, answers
            assert server.health()["model"] == "tiny"
    with running_bridge(ServerConfig(model="tiny", device="cpu", allow_hub=True)) as server:
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            client.load_model("someone/some-model")  # offline: it cannot be found, but it was allowed to try
            states = model_states(events, p.ModelStatus.READY, "tiny")
            assert (states[0].status, states[0].name) == (p.ModelStatus.LOADING, "someone/some-model")
            assert (
                states[-1].message.startswith("could not load someone/some-model: ")
                and "not in the Hugging Face cache" in states[-1].message
            )


def test_loads_coalesce_and_cannot_starve_another_clients_job(model_cache: object, tmp_path: Path) -> None:
    config = ServerConfig(model="tiny", device="cpu", catalog=broken_model(tmp_path))
    with running_bridge(config) as server:
        loader_events, worker_events = Events(), Events()
        with BridgeClient(server.url, on_event=loader_events) as loader, BridgeClient(server.url, on_event=worker_events) as worker:
            loader.load_model("tiny")  # already loaded: nothing happens but an answer to the asker
            assert loader_events.wait(p.ModelStatusEvent).model.status is p.ModelStatus.READY
            release = threading.Event()
            server.bridge.engine_thread.submit(release.wait)
            for _ in range(30):
                loader.load_model("broken-model")
                loader.load_model("tiny")
            job = request(photo(32, 32), steps=1)
            worker.generate(job)
            release.set()
            worker_events.wait(p.Result, job_id=job.job_id)
            started = [
                e.model.name
                for e in worker_events.seen
                if isinstance(e, p.ModelStatusEvent) and e.model.status is p.ModelStatus.LOADING and e.model.progress == 0.0
            ]
            assert len(started) <= 3, started  # the running load, the newest wanted one, the restore of the previous model


@pytest.mark.parametrize(
    ("write", "says"),
    [
        (
            lambda folder: (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}'),
            "unet/config.json: cannot be read",
        ),
        (lambda folder: (folder / "img2img_bridge.json").write_text('{"steps": 0}'), "img2img_bridge.json: field 'steps' must be"),
    ],
    ids=["no unet config", "bad recipe file"],
)
def test_a_model_that_fails_to_load_leaves_the_current_one_serving(
    model_cache: object, tmp_path: Path, write: Callable[[Path], object], says: str
) -> None:
    from bridge.tiny_model import ensure_tiny_model

    catalog = broken_model(tmp_path)
    broken = Path(catalog[0].location)
    write(broken)
    if "recipe" in says:
        shutil.copy2(ensure_tiny_model() / "unet" / "config.json", broken / "unet" / "config.json")
    with running_bridge(ServerConfig(model="tiny", device="cpu", catalog=catalog)) as server:
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            client.load_model("broken-model")
            state = events.wait(p.ModelStatusEvent, timeout=TIMEOUT).model
            while state.status is p.ModelStatus.LOADING:
                state = events.wait(p.ModelStatusEvent, timeout=TIMEOUT).model
            assert (state.status, state.name) == (p.ModelStatus.READY, "tiny")
            assert state.message.startswith("could not load broken-model: ") and says in state.message
            assert state.message.endswith("still serving tiny") and "\n" not in state.message
            assert client.run(request(photo(32, 32)), timeout=TIMEOUT).ok
            assert server.health()["status"] == "ready"
