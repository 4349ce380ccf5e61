"""The client library against a bridge started as a user starts it; runs under Python 3.10 too (no numpy, no Pillow)."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import sys
import threading
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from bridge.editor import protocol as p
from bridge.editor import wire
from bridge.editor.client import (
    LARGE_FRAME_BYTES,
    BridgeClient,
    ClientError,
    Disconnected,
    JobOutcome,
    LargeFrameReader,
    new_job_id,
    normalize_url,
    shown_url,
)
from bridge.editor.dependencies import websockets_streams
from tests.served import Served, free_port, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve("--model", "tiny", "--device", "cpu", log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def gradient(width: int, height: int) -> bytes:
    return bytes((x * 7 + y * 3) % 256 if c < 3 else 255 for y in range(height) for x in range(width) for c in range(4))


def job(width: int = 48, height: int = 40, **fields: object) -> p.Generate:
    settings: dict[str, object] = {"prompt": "a lighthouse", "steps": 3, "strength": 0.8, "seed": 3}
    settings.update(fields)
    return p.Generate(job_id=new_job_id(), image=p.Image(width, height, gradient(width, height)), **settings)  # type: ignore[arg-type]


def test_python_version_is_one_the_editors_use() -> None:
    assert sys.version_info >= (3, 10)


def test_normalize_url() -> None:
    assert normalize_url("localhost:7421") == "ws://localhost:7421/ws"
    assert normalize_url("http://127.0.0.1:9000") == "ws://127.0.0.1:9000/ws"
    assert normalize_url("https://example.org/") == "wss://example.org/ws"
    assert normalize_url("ws://h:1/custom") == "ws://h:1/custom"
    with pytest.raises(ClientError):
        normalize_url("ftp://nope")


def test_handshake_and_job(served: Served) -> None:
    with BridgeClient(served.url, name="py3.10-check") as client:
        assert client.welcome is not None and client.welcome.model.name == "tiny"
        outcome = client.run(job(preview=p.PreviewSettings(every=1, max_size=32)), timeout=60)
    assert outcome.ok and outcome.previews >= 1
    (result,) = outcome.results
    data = result.image.raw_rgba()
    assert len(data) == 48 * 40 * 4
    assert data[3::4] == b"\xff" * (48 * 40)


def test_events_reach_the_global_callback_in_order(served: Served) -> None:
    events: queue.Queue[p.Message | Disconnected] = queue.Queue()
    with BridgeClient(served.url, on_event=events.put) as client:
        request = job()
        client.generate(request)
        kinds = []
        while True:
            event = events.get(timeout=60)
            kinds.append(type(event))
            if isinstance(event, Disconnected) or p.is_job_end(event):
                break
    assert kinds[0] is p.Queued and kinds[-1] is p.Result
    assert p.Progress in kinds


def test_a_failing_callback_does_not_kill_the_reader(served: Served) -> None:
    def broken(event: p.Message | Disconnected) -> None:
        raise RuntimeError("host bug")

    with BridgeClient(served.url, on_event=broken) as client:
        assert client.run(job(), timeout=60).ok
        assert client.connected


def test_cancel_through_the_client(served: Served) -> None:
    started = threading.Event()
    with BridgeClient(served.url) as client:
        request = job(128, 128, steps=100, strength=1.0, preview=p.PreviewSettings(every=0))
        outcome_box: list[JobOutcome] = []
        thread = threading.Thread(
            target=lambda: outcome_box.append(
                client.run(request, lambda e: started.set() if isinstance(e, p.Progress) else None, timeout=60)
            )
        )
        thread.start()
        assert started.wait(60)
        client.cancel(request.job_id)
        thread.join(60)
    assert outcome_box[0].cancelled and not outcome_box[0].results


def test_server_going_away_becomes_a_disconnected_event(tmp_path: Path) -> None:
    events: queue.Queue[p.Message | Disconnected] = queue.Queue()
    with serve("--model", "tiny", "--device", "cpu", log_dir=tmp_path) as running:
        client = BridgeClient(running.url, on_event=events.put)
        client.connect()
        running.process.terminate()
        while True:
            event = events.get(timeout=60)
            if isinstance(event, Disconnected):
                break
    assert "img2img-bridge serve" in event.reason
    with pytest.raises(ClientError):
        client.generate(job())


def test_no_bridge_running_says_how_to_start_it() -> None:
    with pytest.raises(ClientError) as caught:
        BridgeClient(f"127.0.0.1:{free_port()}", timeout=5).connect()
    assert caught.value.code is p.ErrorCode.CONNECTION
    assert "start it with: img2img-bridge serve" in caught.value.message


def test_sending_without_connecting_is_a_clear_error() -> None:
    with pytest.raises(ClientError) as caught:
        BridgeClient().generate(job())
    assert "not connected" in caught.value.message


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP to freeze the server")
def test_a_frozen_bridge_is_an_error_within_seconds_not_a_wait_forever(tmp_path: Path) -> None:
    with serve("--model", "tiny", "--device", "cpu", log_dir=tmp_path) as frozen:
        client = BridgeClient(frozen.url, keepalive=0.5)
        client.connect()
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            outcome = client.run(job(steps=50))  # no timeout: only the pings can end this wait
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
            client.close()
    assert outcome.error is not None and outcome.error.code is p.ErrorCode.CONNECTION
    assert "stopped answering" in outcome.error.message


def test_messages_become_sentences_for_the_artist() -> None:
    from bridge.editor.client import sentence

    assert sentence("nothing is selected") == "Nothing is selected."
    assert sentence(" Lost the bridge. ") == "Lost the bridge."
    assert sentence("loading\u2026") == "Loading\u2026"
    assert sentence("") == ""


def test_a_loading_model_in_words() -> None:
    from bridge.editor.client import describe_loading, loading_fraction

    downloading = p.ModelState("sd-turbo", p.ModelStatus.LOADING, progress=0.1, downloaded=350_000_000, download_size=2_600_000_000)
    assert describe_loading(downloading) == "Downloading sd-turbo: 350 MB of 2.6 GB"
    assert loading_fraction(downloading) == 350 / 2600
    unknown_size = p.ModelState("sd-turbo", p.ModelStatus.LOADING, downloaded=5_000_000)
    assert describe_loading(unknown_size) == "Downloading sd-turbo: 5 MB" and loading_fraction(unknown_size) is None
    loading = p.ModelState(None, p.ModelStatus.LOADING, progress=0.4)
    assert describe_loading(loading) == "Loading the model: 40%" and loading_fraction(loading) == 0.4


def test_urls_in_messages_never_show_the_token() -> None:
    assert shown_url("ws://127.0.0.1:7421/ws?token=s3cret") == "ws://127.0.0.1:7421/ws?token=***"
    assert shown_url("ws://h:1/ws?a=1&TOKEN=s3cret&b=2") == "ws://h:1/ws?a=1&TOKEN=***&b=2"
    assert shown_url("ws://127.0.0.1:7421/ws") == "ws://127.0.0.1:7421/ws"
    with pytest.raises(ClientError) as caught:
        BridgeClient("ftp://h/ws?token=s3cret")
    assert "s3cret" not in caught.value.message


def test_raw_frames_that_do_not_fit_their_message_are_errors_and_the_reader_goes_on() -> None:
    # the real bridge never sends such frames, so a stand-in sends them (websockets' own server, as the client's peer)
    def bridge(ws: ServerConnection) -> None:
        ws.recv()  # hello
        ready = p.ModelState(name="fake", status=p.ModelStatus.READY)
        welcome = p.Welcome(
            protocol=p.PROTOCOL_VERSION,
            server_version="fake",
            device="cpu",
            model=ready,
            limits=p.Limits(),
            models=(),
            encodings=p.BASIC_ENCODINGS,
        )
        ws.send(p.encode(replace(welcome, raw_frames=True)))
        request = p.decode_client_message(ws.recv())
        for _ in range(p.frames_following(request)):
            ws.recv()
        assert isinstance(request, p.Generate)
        job_id = request.job_id
        short = p.Image(2, 1, b"", frame=8)
        frames: list[bytes] = [
            p.encode(p.Queued(job_id=job_id, position=0)),
            # a message that cannot be decoded announces a frame: the frame is skipped, not read as a message
            b"".join(wire.pack_parts({"type": "preview", "image": {"width": 2, "height": 1, "data": b"", "frame": 4}})),
            b"\x91\x01\x02\x03",
            # a preview whose frame is short is dropped; a result whose frame is short ends its job
            p.encode(p.Preview(job_id=job_id, index=0, step=1, steps=2, image=short, x=0, y=0, width=2, height=1)),
            bytes(7),
            p.encode(p.Result(job_id=job_id, index=0, count=1, image=short, x=0, y=0, seed=1)),
            bytes(7),
            p.encode(p.ModelStatusEvent(model=ready)),
        ]
        for frame in frames:
            ws.send(frame)
        with contextlib.suppress(Exception):
            ws.recv()  # until the client goes

    port = free_port()
    events: queue.Queue[object] = queue.Queue()
    with ws_serve(bridge, "127.0.0.1", port) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with BridgeClient(f"ws://127.0.0.1:{port}/ws", on_event=events.put, shared_memory=False) as client:
            assert client.welcome is not None and client.welcome.raw_frames
            outcome = client.run(job(160, 128), timeout=10)
            assert outcome.previews == 0 and not outcome.results
            assert outcome.error is not None and outcome.error.job_id == outcome.job_id
            assert outcome.error.code is p.ErrorCode.SIZE_MISMATCH and "announced 8" in outcome.error.message
            seen = [events.get(timeout=10) for _ in range(4)]
        seen.append(events.get(timeout=10))
        server.shutdown()
    kinds = [type(event).__name__ for event in seen]
    assert kinds == ["Queued", "Error", "Error", "ModelStatusEvent", "Disconnected"], kinds
    assert isinstance(seen[1], p.Error) and seen[1].job_id is None and "job_id" in seen[1].message  # the unreadable one


def test_large_frames_are_read_whole_however_the_socket_splits_them() -> None:
    rng = random.Random(5)
    big = LARGE_FRAME_BYTES
    sizes = [2, 5, big + 3, 1, 3 * big, big, 7, 2 * big + 1, 4]
    stream = rng.randbytes(sum(sizes))
    expected, start = [], 0
    for size in sizes:
        expected.append(stream[start : start + size])
        start += size
    for trial in range(12):
        for reader in (LargeFrameReader(), websockets_streams.StreamReader()):
            got: list[bytes | bytearray] = []

            def parser(reader: Any = reader, got: list[bytes | bytearray] = got) -> Generator[None, None, None]:
                for size in sizes:
                    got.append((yield from reader.read_exact(size)))

            steps = parser()
            next(steps)
            at = 0
            while at < len(stream):
                step = rng.choice([1, 3, 700, 1 << 16, big // 2, big + 11, 3 * big])
                reader.feed_data(stream[at : at + step])
                at += step
                with contextlib.suppress(StopIteration):
                    next(steps)
            assert [bytes(frame) for frame in got] == expected, f"trial {trial}: {type(reader).__name__}"
            assert not reader.buffer
            if isinstance(reader, LargeFrameReader):  # handed on as bytes: websockets passes them on without a copy
                assert all(type(frame) is bytes for frame in got if len(frame) >= big)


def test_a_large_frame_cut_short_is_an_eof_error() -> None:
    reader = LargeFrameReader()
    steps = reader.read_exact(2 * LARGE_FRAME_BYTES)
    next(steps)
    reader.feed_data(bytes(LARGE_FRAME_BYTES))
    next(steps)
    reader.feed_eof()
    with pytest.raises(EOFError, match="after 1048576 bytes"):
        next(steps)
    assert len(reader.buffer) == LARGE_FRAME_BYTES  # what came is kept, as the stock reader keeps it


def test_a_message_larger_than_the_bridge_accepts_ends_the_connection() -> None:
    # the client reads nothing larger than the bridge's own limit (from the welcome): a stand-in sends more
    limits = p.Limits(max_pixels=16)

    def bridge(ws: ServerConnection) -> None:
        ws.recv()  # hello
        ready = p.ModelState(name="fake", status=p.ModelStatus.READY)
        welcome = p.Welcome(
            protocol=p.PROTOCOL_VERSION, server_version="fake", device="cpu", model=ready, limits=limits, models=(), encodings=()
        )
        ws.send(p.encode(welcome))
        ws.recv()  # list_models: the client has taken in the welcome's limit
        ws.send(bytes(limits.max_message_bytes + 1))
        with contextlib.suppress(Exception):
            ws.recv()

    port = free_port()
    events: queue.Queue[object] = queue.Queue()
    with ws_serve(bridge, "127.0.0.1", port) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = BridgeClient(f"ws://127.0.0.1:{port}/ws", on_event=events.put, shared_memory=False)
        client.connect()
        client.list_models()
        lost = events.get(timeout=10)
        client.close()
        server.shutdown()
    assert isinstance(lost, Disconnected) and "too big" in lost.reason.lower(), lost
