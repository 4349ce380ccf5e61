"""The same-machine hand-off from the client's side: a bridge started as a user starts it; runs under Python 3.10 too."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.editor import protocol as p
from bridge.editor import shm
from bridge.editor.client import BridgeClient, new_job_id
from bridge.handoff import SPARE_BYTES
from tests.served import ROOT, Served, serve

pytestmark = pytest.mark.skipif(not shm.supported(), reason="the hand-off is POSIX only")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shm") / "segments"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Iterator[Served]:
    with serve("--model", "tiny", "--device", "cpu", "--shm-folder", str(folder), log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def pattern(width: int, height: int, seed: int = 0) -> bytes:
    return bytes((x * 7 + y * 3 + seed) % 256 if c < 3 else 255 for y in range(height) for x in range(width) for c in range(4))


def masked_job(width: int = 64, height: int = 48) -> p.Generate:
    mask = bytes(255 if 16 <= x < width - 24 and 8 <= y < height - 18 else 0 for y in range(height) for x in range(width))
    return p.Generate(
        job_id=new_job_id(),
        image=p.Image(width, height, pattern(width, height)),
        mask=p.Mask(width, height, mask),
        prompt="a lighthouse",
        steps=4,
        strength=0.8,
        seed=11,
        count=2,
        preview=p.PreviewSettings(every=1, max_size=32),
    )


def segments(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_every_path_gives_byte_identical_results(served: Served, folder: Path) -> None:
    # large enough that the layer and the results travel as raw frames on the socket (the mask, smaller, stays in msgpack)
    job = masked_job(200, 160)
    assert len(job.image.data) >= p.RAW_FRAME_BYTES > len(job.mask.data)  # type: ignore[union-attr]
    outcomes = {}
    for path, shared, raw in (("shared memory", True, True), ("raw frames", False, True), ("msgpack", False, False)):
        with BridgeClient(served.url, shared_memory=shared, raw_frames=raw) as client:
            assert client.shares_memory is shared and client.shm_refused is None
            assert client.welcome is not None and client.welcome.raw_frames is raw
            outcomes[path] = client.run(replace(job, job_id=new_job_id()), timeout=120)
    fast, frames, packed = outcomes.values()
    assert fast.ok and frames.ok and packed.ok and len(fast.results) == len(frames.results) == len(packed.results) == 2
    for a, b, c in zip(fast.results, frames.results, packed.results, strict=True):
        assert isinstance(a.image.data, memoryview) and a.image.segment is None  # mapped, not copied
        assert isinstance(b.image.data, bytes) and isinstance(c.image.data, bytes) and b.image.frame == 0
        assert len(b.image.data) >= p.RAW_FRAME_BYTES
        for other in (b, c):
            assert (a.x, a.y, a.image.width, a.image.height, a.seed) == (
                other.x,
                other.y,
                other.image.width,
                other.image.height,
                other.seed,
            )
            assert a.image.raw_rgba() == other.image.raw_rgba()
    assert fast.previews >= 1 and frames.previews >= 1
    # the results were taken (their files removed) and the upload segment went with the client; what is left is
    # the bridge's spare segments for the next frames: its own, bounded, removed when it stops
    left = [name for name in segments(folder) if not name.startswith("probe-")]
    assert all(name.startswith(f"s-{served.process.pid}-") for name in left), left
    assert sum((folder / name).stat().st_size for name in left) <= SPARE_BYTES


def test_segments_and_their_folder_are_private(served: Served, folder: Path) -> None:
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    with BridgeClient(served.url) as client:
        assert client.run(masked_job(), timeout=120).ok
        names = segments(folder)
        assert any(n.startswith(f"c-{os.getpid()}-") for n in names)
        for name in names:
            assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    previous = os.umask(0)
    try:
        written = shm.write_new(folder, "s", b"pixels")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(folder / written).st_mode) == 0o600
    assert bytes(shm.take(folder, written, 6)) == b"pixels" and not (folder / written).exists()


def test_a_folder_open_to_others_or_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o755)
    os.chmod(open_folder, 0o755)
    with pytest.raises(shm.ShmUnavailable, match="open to other users"):
        shm.private_folder(open_folder, create=False)
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(shm.ShmUnavailable, match="another user"):
            shm.private_folder(theirs, create=False)


def test_an_offer_the_client_cannot_use_falls_back_to_the_socket(served: Served, folder: Path) -> None:
    with BridgeClient(served.url) as client:
        assert client.welcome is not None and client.welcome.shm is not None
        probe = folder / client.welcome.shm.probe
    token = probe.read_bytes()
    # another user's bridge: a probe this user may not rely on; another machine or namespace: another token
    for spoil, reason in (
        (lambda: os.chmod(probe, 0o644), "cannot read the bridge's probe"),
        (lambda: probe.write_bytes(b"x"), "another token"),
    ):
        spoil()
        try:
            with BridgeClient(served.url) as client:
                assert not client.shares_memory and reason in (client.shm_refused or "")
                outcome = client.run(masked_job(), timeout=120)
        finally:
            os.chmod(probe, 0o600)
            probe.write_bytes(token)
        assert outcome.ok and all(isinstance(r.image.data, bytes) for r in outcome.results)


def test_a_bridge_without_shared_memory_and_a_remote_url_use_the_socket(tmp_path: Path) -> None:
    with (
        serve("--model", "tiny", "--device", "cpu", "--no-shared-memory", log_dir=tmp_path) as running,
        BridgeClient(running.url) as client,
    ):
        assert client.welcome is not None and client.welcome.shm is None and not client.shares_memory
        assert client.run(masked_job(), timeout=120).ok
    # a bridge on another machine is never asked for the hand-off
    assert not BridgeClient("ws://192.0.2.7:7421")._may_share_memory()
    assert BridgeClient("ws://[::1]:7421")._may_share_memory()


def test_a_full_budget_sends_the_pixels_over_the_socket(tmp_path: Path) -> None:
    folder = shm.private_folder(tmp_path / "budget", create=True)
    handoff = shm.ClientHandoff(folder, max_bytes=64 * 48 * 5)
    first = handoff.outgoing(masked_job())
    second = handoff.outgoing(masked_job())
    assert first.image.segment is not None and first.mask is not None and first.mask.offset == 64 * 48 * 4
    assert second.image.segment is None and bytes(second.image.data) == pattern(64, 48) and second.shm
    handoff.release(first.job_id)
    third = handoff.outgoing(masked_job())
    assert third.image.segment == first.image.segment  # reused, not made again
    handoff.close()
    assert segments(folder) == []


_CLIENT = """
import sys, time
sys.path.insert(0, {root!r})
from bridge.editor import protocol as p
from bridge.editor.client import BridgeClient, new_job_id
client = BridgeClient({url!r})
client.connect()
assert client.shares_memory
side = 256
client.generate(p.Generate(job_id=new_job_id(), image=p.Image(side, side, bytes(side * side * 4)), prompt="x", steps=50, strength=1.0))
print("sent", flush=True)
time.sleep(600)
"""


def test_no_segment_survives_a_killed_client(served: Served, folder: Path) -> None:
    script = textwrap.dedent(_CLIENT.format(root=str(ROOT), url=served.url))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "sent"
        assert any(n.startswith(f"c-{child.pid}-") for n in segments(folder))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with BridgeClient(served.url) as client:  # the next start removes what the dead one left
        assert client.shares_memory
        assert not any(f"-{child.pid}-" in n for n in segments(folder))


def test_no_segment_survives_a_killed_bridge(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    folder = tmp_path / "segments"
    args = ("--model", "tiny", "--device", "cpu", "--shm-folder", str(folder))
    with serve(*args, log_dir=tmp_path) as first:
        # a client that asks for segments and never takes them: the bridge's result stays in the folder
        with connect(first.url, max_size=None) as ws:
            ws.send(p.encode(p.Hello(client="raw", shm=True)))
            assert isinstance(p.decode_server_message(ws.recv()), p.Welcome)
            ws.send(p.encode(p.Generate(job_id="j", image=p.Image(32, 32, pattern(32, 32)), prompt="x", steps=2, shm=True)))
            while not isinstance(event := p.decode_server_message(ws.recv()), p.Result):
                pass
            assert event.image.segment is not None and (folder / event.image.segment).exists()
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
        dead = first.process.pid
        assert any(n.startswith(f"s-{dead}-") for n in segments(folder)) and any(n.startswith(f"probe-{dead}-") for n in segments(folder))
    with serve(*args, log_dir=tmp_path) as second:
        left = segments(folder)
        assert not any(f"-{dead}-" in n for n in left)
        assert left == [n for n in left if n.startswith(f"probe-{second.process.pid}-")]
