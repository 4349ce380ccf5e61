"""The bridge's side of the same-machine hand-off: segments mapped in, written out, bounded and removed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from bridge.editor import protocol as p
from bridge.editor import shm
from bridge.editor.client import BridgeClient
from bridge.handoff import SharedMemoryHost
from tests.bridge_server import RunningBridge

pytestmark = pytest.mark.skipif(not shm.supported(), reason="the hand-off is POSIX only")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SharedMemoryHost]:
    made = SharedMemoryHost(tmp_path / "segments", spare_bytes=1 << 20)
    yield made
    made.close()


def settle(host: SharedMemoryHost) -> None:
    """Wait until the spare segments asked for so far exist."""
    host._spare_pool.submit(lambda: None).result()


def test_results_go_into_new_segments_within_the_budget_and_spares_are_reused(host: SharedMemoryHost) -> None:
    image = p.Image(4, 4, bytes(range(64)))
    first = host.hand_over("conn", image, budget=128)
    assert first.segment is not None and first.data == b""
    settle(host)
    spares = list(host._spares)
    assert len(spares) == 1 and host._spares[spares[0]] == 64
    second = host.hand_over("conn", image, budget=128)
    assert second.segment == spares[0]  # written into pages allocated in the background
    assert host.hand_over("conn", image, budget=128) is image  # two untaken segments fill the budget: inline
    assert bytes(shm.take(host.folder, first.segment, 64)) == bytes(range(64))
    assert host.hand_over("conn", image, budget=128).segment is not None  # taken: room again
    host.forget("conn")
    settle(host)
    assert sorted(os.listdir(host.folder)) == sorted([host.probe, *host._spares])
    host.close()
    assert os.listdir(host.folder) == []


def test_a_skipped_preview_leaves_no_segment(host: SharedMemoryHost) -> None:
    moved = host.hand_over("conn", p.Image(2, 2, bytes(16)), budget=1 << 20)
    host.discard("conn", moved)
    assert moved.segment not in os.listdir(host.folder)


def test_segments_are_read_in_place_and_bad_names_are_refused(host: SharedMemoryHost) -> None:
    name = shm.allocate(host.folder, "c", 4 * 4 * 4 + 16)
    shm.write_into(host.folder, name, bytes(range(80)))
    request = p.Generate(
        job_id="j",
        image=p.Image(4, 4, b"", segment=name),
        mask=p.Mask(4, 4, b"", segment=name, offset=64),
        prompt="x",
    )
    attached = host.attach(request)
    assert bytes(attached.image.data) == bytes(range(64)) and bytes(attached.mask.data) == bytes(range(64, 80))  # type: ignore[union-attr]
    assert memoryview(attached.image.data).readonly
    for segment, offset in (("../../etc/passwd", 0), (host.probe, 0), ("c-1-0123456789abcdef", 0), (name, 64)):
        with pytest.raises(p.ProtocolError) as info:
            host.attach(p.Generate(job_id="j", image=p.Image(4, 4, b"", segment=segment, offset=offset), prompt="x"))
        assert info.value.code is p.ErrorCode.INVALID_FIELD and info.value.field == "image.segment"


def test_a_segment_from_a_connection_without_the_offer_is_refused(bridge: RunningBridge) -> None:
    with ws_connect(bridge.url, max_size=None) as ws:
        ws.send(p.encode(p.Hello(client="old")))
        welcome = p.decode_server_message(ws.recv())
        assert isinstance(welcome, p.Welcome) and welcome.shm is None  # it did not ask
        ws.send(p.encode(p.Generate(job_id="j", image=p.Image(4, 4, b"", segment="c-1-0123456789abcdef"), prompt="x")))
        error = p.decode_server_message(ws.recv())
    assert isinstance(error, p.Error) and error.field == "image.segment" and error.job_id == "j"


def test_a_client_from_another_machine_is_not_offered_the_handoff(bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp import web

    monkeypatch.setattr(web.BaseRequest, "remote", property(lambda self: "192.0.2.9"))  # as if from another machine
    with BridgeClient(bridge.url) as client:
        assert client.welcome is not None and client.welcome.shm is None and not client.shares_memory
