"""Every bound the server keeps, against the real server on loopback: budgets, caps and timeouts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from bridge.bounds import ByteBudget, ServerBounds, input_bytes
from bridge.editor import protocol as p
from bridge.editor.client import BridgeClient, Disconnected
from bridge.server import ServerConfig
from tests.bridge_server import RunningBridge, running_bridge
from tests.test_server import TIMEOUT, Events, photo, request


def test_budget_refuses_past_the_owners_share_and_past_the_total() -> None:
    budget = ByteBudget(per_owner=100, total=150)
    assert budget.reserve("a", 60) is None
    assert budget.reserve("a", 50) is not None  # 110 > 100 for one owner
    assert budget.reserve("b", 80) is None
    budget.release("a", 60)
    assert budget.used == 80 and budget.held("a") == 0
    assert budget.reserve("a", 71) is not None  # 80 + 71 > 150
    assert budget.reserve("a", 70) is None
    assert budget.used == 150


def test_inputs_count_the_encoded_and_the_decoded_bytes() -> None:
    assert input_bytes(10, 10, 7, masked=False) == 407
    assert input_bytes(10, 10, 7, masked=True) == 507


def test_bounds_that_cannot_hold_one_largest_message_are_refused() -> None:
    with pytest.raises(ValueError, match="outgoing budget"):
        ServerBounds(outbox_bytes=1 << 20).check(p.Limits().max_message_bytes)


@contextmanager
def engine_held(server: RunningBridge) -> Iterator[None]:
    """Keep the engine thread busy so that jobs stay queued until the block ends."""
    release = threading.Event()
    server.bridge.engine_thread.submit(release.wait)
    try:
        yield
    finally:
        release.set()


def wait_until(check: object, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def bounded(**bounds: object) -> ServerConfig:
    limits = p.Limits(max_pixels=256 * 256, max_side=256)
    outbox = max(ServerBounds().outbox_bytes, limits.max_message_bytes)
    values = {"outbox_bytes": outbox, **bounds}
    return ServerConfig(model="tiny", device="cpu", limits=limits, bounds=ServerBounds(**values))  # type: ignore[arg-type]


def test_queued_inputs_are_budgeted_per_client_and_in_all(model_cache: object) -> None:
    job_bytes = input_bytes(64, 64, 64 * 64 * 4, masked=False)
    config = bounded(client_queued_bytes=2 * job_bytes, total_queued_bytes=3 * job_bytes)
    with running_bridge(config) as server:
        first, second = Events(), Events()
        with BridgeClient(server.url, on_event=first) as a, BridgeClient(server.url, on_event=second) as b:
            with engine_held(server):
                jobs = [request(photo(64, 64), steps=1) for _ in range(3)]
                for job in jobs:
                    a.generate(job)
                first.wait(p.Queued, job_id=jobs[0].job_id)
                first.wait(p.Queued, job_id=jobs[1].job_id)
                refused = first.wait(p.Error, job_id=jobs[2].job_id)
                assert refused.code is p.ErrorCode.QUEUE_FULL and "this client" in refused.message
                others = [request(photo(64, 64), steps=1) for _ in range(2)]
                for job in others:
                    b.generate(job)
                second.wait(p.Queued, job_id=others[0].job_id)
                refused = second.wait(p.Error, job_id=others[1].job_id)
                assert refused.code is p.ErrorCode.QUEUE_FULL and "the bridge" in refused.message
            for job in (*jobs[:2], others[0]):
                events = first if job in jobs else second
                events.wait(p.Result, job_id=job.job_id)
        wait_until(lambda: server.call(lambda: server.bridge.inputs.used) == 0, "the budget was not released")


def test_a_client_that_never_reads_is_disconnected_and_its_jobs_freed(model_cache: object) -> None:
    config = bounded(outbox_bytes=2 << 20)
    with running_bridge(config) as server:
        pixels = photo(256, 256)
        # websockets stops reading from the socket once this many frames wait unread
        with ws_connect(server.url, max_size=None, max_queue=1, proxy=None) as ws:
            ws.send(p.encode(p.Hello(client="never-reads")))
            for _ in range(32):
                ws.send(p.encode(request(pixels, steps=1, strength=1.0, count=8)))
            wait_until(lambda: server.health()["clients"] == 0, "the bridge kept a client that does not read")
        wait_until(lambda: server.call(lambda: server.bridge.inputs.used) == 0, "the jobs' inputs were not freed")


def test_connections_beyond_the_cap_are_refused(model_cache: object) -> None:
    with running_bridge(bounded(max_connections=2)) as server:
        with ws_connect(server.url, proxy=None), ws_connect(server.url, proxy=None):
            with pytest.raises(InvalidStatus) as caught:
                ws_connect(server.url, proxy=None)
            assert caught.value.response.status_code == 503
        wait_until(lambda: server.call(lambda: server.bridge.sockets) == 0, "closed sockets were still counted")
        with BridgeClient(server.url) as client:
            assert client.welcome is not None


def test_a_connection_that_never_says_hello_is_closed(model_cache: object) -> None:
    with running_bridge(bounded(hello_timeout=0.3)) as server:
        with ws_connect(server.url, proxy=None) as ws, pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=TIMEOUT)
        assert caught.value.rcvd is not None
        assert caught.value.rcvd.code == 1008 and "no hello" in caught.value.rcvd.reason


def test_a_tcp_connection_that_sends_no_request_is_closed(model_cache: object) -> None:
    with (
        running_bridge(bounded(handshake_timeout=0.3)) as server,
        socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock,
    ):
        assert sock.recv(1) == b""  # the server hung up


def test_a_client_that_answers_no_ping_is_closed(model_cache: object) -> None:
    with (
        running_bridge(bounded(ping_interval=0.3, hello_timeout=TIMEOUT)) as server,
        socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        received = b""
        while chunk := sock.recv(4096):  # pings arrive and are never answered, until the server hangs up
            received += chunk
        assert received.startswith(b"HTTP/1.1 101")
        assert b"\x89" in received  # at least one ping was sent


def test_client_names_are_bounded_in_health(model_cache: object) -> None:
    with running_bridge(bounded()) as server:
        with BridgeClient(server.url, name="n" * 100_000) as client:
            job = request(photo(32, 32), steps=1)
            assert client.run(job, timeout=TIMEOUT).ok
        record = next(r for r in server.health()["recent_jobs"] if r["job_id"] == job.job_id)
        assert 0 < len(record["client"]) <= ServerBounds().max_name_chars


def test_a_huge_model_name_is_an_unknown_model(model_cache: object) -> None:
    with running_bridge(bounded()) as server:
        events = Events()
        with BridgeClient(server.url, on_event=events) as client:
            client.load_model("m" * 100_000)
            error = events.wait(p.Error)
            assert error.code is p.ErrorCode.UNKNOWN_MODEL and len(error.message) < 200


def test_a_disconnected_clients_queued_jobs_free_their_inputs(model_cache: object) -> None:
    with running_bridge(bounded()) as server:
        events = Events()
        client = BridgeClient(server.url, on_event=events)
        client.connect()
        with engine_held(server):
            client.generate(request(photo(32, 32), steps=1))
            events.wait(p.Queued)
            client.close()
            events.wait(Disconnected)
        wait_until(lambda: server.call(lambda: server.bridge.inputs.used) == 0, "a disconnected client's inputs were kept")
