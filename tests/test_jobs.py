from __future__ import annotations

import asyncio

import pytest

from bridge.editor import protocol as p
from bridge.jobs import Job, JobQueue, JobState


def job(owner: str, job_id: str, *, live: bool = False) -> Job:
    request = p.Generate(job_id=job_id, image=p.Image(1, 1, b"\x00\x00\x00\xff"), prompt="", live=live)
    return Job(request=request, owner=owner)


async def drain(queue: JobQueue) -> list[str]:
    order = []
    while len(queue):
        order.append((await queue.next()).job_id)
    return order


async def test_owners_are_served_in_turn() -> None:
    queue = JobQueue()
    for item in (job("A", "A1"), job("A", "A2"), job("A", "A3"), job("B", "B1")):
        queue.submit(item)
    assert await drain(queue) == ["A1", "B1", "A2", "A3"]


async def test_next_marks_the_job_running() -> None:
    queue = JobQueue()
    first = job("A", "A1")
    queue.submit(first)
    assert first.state is JobState.QUEUED
    assert await queue.next() is first
    assert first.state is JobState.RUNNING
    assert len(queue) == 0


def test_submit_returns_the_position_at_that_moment() -> None:
    queue = JobQueue()
    assert [queue.submit(j)[0] for j in (job("A", "A1"), job("A", "A2"), job("A", "A3"), job("B", "B1"))] == [0, 1, 2, 1]


@pytest.mark.parametrize("started", range(9))
async def test_positions_match_the_order_jobs_run_in(started: int) -> None:
    queue = JobQueue()
    jobs = [job(owner, f"{owner}{n}") for n, owner in enumerate("AABCABCCA")]
    for item in jobs:
        queue.submit(item)
    for _ in range(started):
        await queue.next()
    positions = {j.job_id: queue.position(j) for j in jobs if j.state is JobState.QUEUED}
    order = await drain(queue)
    assert positions == {job_id: order.index(job_id) for job_id in order}


async def test_positions_after_a_job_has_started() -> None:
    queue = JobQueue()
    a1, a2, b1, b2 = job("A", "A1"), job("A", "A2"), job("B", "B1"), job("B", "B2")
    for item in (a1, a2, b1, b2):
        queue.submit(item)
    assert await queue.next() is a1
    # A went to the back of the line: B1, A2, B2
    assert (queue.position(b1), queue.position(a2), queue.position(b2)) == (0, 1, 2)
    assert queue.position(a1) == 0


async def test_a_new_live_job_replaces_the_owners_waiting_live_job() -> None:
    queue = JobQueue()
    plain, first, second = job("A", "plain"), job("A", "live-1", live=True), job("A", "live-2", live=True)
    assert queue.submit(plain) == (0, None)
    assert queue.submit(first) == (1, None)
    position, replaced = queue.submit(second)
    assert replaced is first
    assert first.state is JobState.DONE
    assert position == 1
    assert await drain(queue) == ["plain", "live-2"]


async def test_a_live_job_does_not_replace_another_owners_live_job() -> None:
    queue = JobQueue()
    queue.submit(job("A", "A-live", live=True))
    assert queue.submit(job("B", "B-live", live=True))[1] is None
    assert await drain(queue) == ["A-live", "B-live"]


async def test_a_live_job_does_not_replace_the_running_one() -> None:
    queue = JobQueue()
    running = job("A", "live-1", live=True)
    queue.submit(running)
    assert await queue.next() is running
    assert queue.submit(job("A", "live-2", live=True)) == (0, None)
    assert running.state is JobState.RUNNING


def test_a_plain_job_does_not_replace_a_live_one() -> None:
    queue = JobQueue()
    queue.submit(job("A", "live", live=True))
    assert queue.submit(job("A", "plain"))[1] is None
    assert len(queue) == 2


async def test_remove_takes_a_waiting_job_out() -> None:
    queue = JobQueue()
    a1, a2 = job("A", "A1"), job("A", "A2")
    queue.submit(a1)
    queue.submit(a2)
    assert queue.remove("A1", "A") is a1
    assert a1.state is JobState.DONE
    assert queue.remove("A1", "A") is None
    assert queue.position(a2) == 0
    assert await drain(queue) == ["A2"]


async def test_remove_only_touches_the_owners_own_jobs() -> None:
    queue = JobQueue()
    queue.submit(job("A", "A1"))
    assert queue.remove("A1", "B") is None
    assert queue.remove("nope", "A") is None
    assert await drain(queue) == ["A1"]


async def test_an_owner_emptied_by_remove_is_skipped() -> None:
    queue = JobQueue()
    queue.submit(job("A", "A1"))
    queue.submit(job("B", "B1"))
    queue.remove("A1", "A")
    assert await drain(queue) == ["B1"]
    queue.submit(job("A", "A2"))
    assert await drain(queue) == ["A2"]


async def test_remove_owner_drops_every_waiting_job_of_that_owner() -> None:
    queue = JobQueue()
    for item in (job("A", "A1"), job("B", "B1"), job("A", "A2"), job("B", "B2")):
        queue.submit(item)
    removed = queue.remove_owner("A")
    assert [j.job_id for j in removed] == ["A1", "A2"]
    assert all(j.state is JobState.DONE for j in removed)
    assert queue.remove_owner("A") == []
    assert await drain(queue) == ["B1", "B2"]


def test_a_full_queue_refuses_more_from_that_owner_only() -> None:
    queue = JobQueue(max_per_client=2)
    queue.submit(job("A", "A1"))
    queue.submit(job("A", "A2"))
    with pytest.raises(p.ProtocolError) as info:
        queue.submit(job("A", "A3"))
    assert (info.value.code, info.value.job_id) == (p.ErrorCode.QUEUE_FULL, "A3")
    assert len(queue) == 2
    assert queue.submit(job("B", "B1"))[0] == 1


def test_a_live_job_fits_a_full_queue_by_replacing_the_waiting_one() -> None:
    queue = JobQueue(max_per_client=2)
    queue.submit(job("A", "A1"))
    queue.submit(job("A", "live-1", live=True))
    position, replaced = queue.submit(job("A", "live-2", live=True))
    assert replaced is not None and replaced.job_id == "live-1"
    assert position == 1


async def test_next_waits_for_a_submit() -> None:
    queue = JobQueue()
    waiter = asyncio.ensure_future(queue.next())
    await asyncio.sleep(0)  # let the waiter reach its wait
    assert not waiter.done()
    submitted = job("A", "A1")
    queue.submit(submitted)
    assert await asyncio.wait_for(waiter, 5) is submitted
