"""The fuzzer (bench/fuzz.py) against the real bridge: mutated messages never make it fail inside or hang."""

from __future__ import annotations

from bench.fuzz import frames, run
from bridge.editor.client import BridgeClient
from tests.bridge_server import RunningBridge
from tests.test_server import TIMEOUT, photo, request


def test_the_same_seed_gives_the_same_frames() -> None:
    assert frames(3, 50) == frames(3, 50)
    assert frames(3, 50) != frames(4, 50)


def test_mutated_messages_get_no_internal_error_and_no_hang(bridge: RunningBridge) -> None:
    report = run(bridge.url, messages=1500, seed=1)
    assert report.messages == 1500
    assert report.internal == []
    assert report.hangs == 0
    assert report.answers >= report.messages // 2  # the bridge answered, it did not drop the frames
    with BridgeClient(bridge.url) as client:
        assert client.run(request(photo(32, 32), steps=1), timeout=TIMEOUT).ok
