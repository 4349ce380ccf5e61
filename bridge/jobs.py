"""The job queue: one GPU, several clients served in turn, live requests newest-wins."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Hashable

from .editor import protocol as p


class JobState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(eq=False)
class Job:
    request: p.Generate
    owner: Hashable
    state: JobState = JobState.QUEUED
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # inputs already decoded and checked at submit time, and the engine that did it
    prepared: object | None = None
    prepared_by: object | None = None
    #: decoded input bytes reserved against the server's budget until the job ends
    held_bytes: int = 0
    #: set once the job's terminal event has been sent
    ended: bool = False
    #: how it ended (done, cancelled, error) and the denoising steps it ran, for the log and the status page
    outcome: str = "cancelled"
    steps_run: int = 0
    submitted: float = field(default_factory=time.perf_counter)
    #: what the engine runs (steps, guidance, strength: the recipe where the request left them unset), once it started
    settings: tuple[int, float, float] | None = None
    #: the last step reported while it runs: (image index, step, steps), for the status page
    progress: tuple[int, int, int] | None = None

    @property
    def job_id(self) -> str:
        return self.request.job_id


class JobQueue:
    """Round-robin over the clients that have work queued, first come first served within a client.

    A client's new live job replaces its live job that is still waiting (not the running one),
    so live painting never builds a backlog.
    """

    def __init__(self, max_per_client: int = 64) -> None:
        self.max_per_client = max_per_client
        self._queues: dict[Hashable, deque[Job]] = {}
        self._turns: deque[Hashable] = deque()
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def submit(self, job: Job) -> tuple[int, Job | None]:
        """Queue ``job``; returns its position (jobs ahead of it) and the live job it replaced, if any."""
        queue = self._queues.setdefault(job.owner, deque())
        replaced = None
        if job.request.live:
            replaced = next((j for j in queue if j.request.live), None)
            if replaced is not None:
                queue.remove(replaced)
                replaced.state = JobState.DONE
        if len(queue) >= self.max_per_client:
            raise p.ProtocolError(
                p.ErrorCode.QUEUE_FULL, f"{len(queue)} jobs are already waiting for this client; wait or cancel some", job_id=job.job_id
            )
        queue.append(job)
        if job.owner not in self._turns:
            self._turns.append(job.owner)
        self._wakeup.set()
        return self.position(job), replaced

    def position(self, job: Job) -> int:
        """How many queued jobs will run before ``job``, given the round-robin."""
        queue = self._queues.get(job.owner)
        if queue is None or job not in queue:
            return 0
        mine = list(queue).index(job)
        ahead = mine
        for owner in self._turns:
            if owner != job.owner:
                ahead += min(len(self._queues[owner]), mine + (1 if self._before(owner, job.owner) else 0))
        return ahead

    def _before(self, owner: Hashable, other: Hashable) -> bool:
        turns = list(self._turns)
        return turns.index(owner) < turns.index(other)

    async def next(self) -> Job:
        """Wait for the next job, taking clients in turn."""
        while True:
            while self._turns:
                owner = self._turns.popleft()
                queue = self._queues.get(owner)
                if not queue:
                    self._queues.pop(owner, None)
                    continue
                job = queue.popleft()
                if queue:
                    self._turns.append(owner)
                else:
                    del self._queues[owner]
                job.state = JobState.RUNNING
                return job
            self._wakeup.clear()
            await self._wakeup.wait()

    def remove(self, job_id: str, owner: Hashable) -> Job | None:
        """Take a waiting job out of the queue; None when it is not waiting."""
        queue = self._queues.get(owner)
        if not queue:
            return None
        for job in queue:
            if job.job_id == job_id:
                queue.remove(job)
                job.state = JobState.DONE
                return job
        return None

    def remove_owner(self, owner: Hashable) -> list[Job]:
        """Drop every waiting job of a client (it disconnected)."""
        queue = self._queues.pop(owner, deque())
        for job in queue:
            job.state = JobState.DONE
        if owner in self._turns:
            self._turns.remove(owner)
        return list(queue)
