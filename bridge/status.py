"""What the status page at ``/`` shows: the model, memory, queue, clients, recent jobs and their thumbnails.

The server hands every ended job to a ``StatusBoard``; ``snapshot`` turns the board and the server's state
into the JSON the page polls. Everything kept here is bounded: a few records, a few small thumbnails.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from .editor import protocol as p
from .jobs import Job, JobState

#: a client is live while its last live frame is at most this many seconds old
LIVE_WINDOW = 5.0


@dataclass(frozen=True)
class JobRecord:
    """One job that ended, as the log line, /health and the status page tell it."""

    job_id: str
    client: str
    connection: int
    outcome: str  # done, cancelled or error
    width: int
    height: int
    masked: bool
    steps: int  # denoising steps the engine ran, over all images
    asked_steps: int | None  # None: the model's recipe
    strength: float | None
    guidance: float | None
    count: int
    live: bool
    used: tuple[int, float, float] | None  # steps, guidance, strength the engine ran with; None: it never started
    ms: float  # from submission to the terminal event
    ended: float  # time.time()

    @classmethod
    def of(cls, job: Job, client: str, connection: int) -> JobRecord:
        ms = round((time.perf_counter() - job.submitted) * 1000, 1)
        return cls(
            job_id=job.job_id,
            client=client,
            connection=connection,
            outcome=job.outcome,
            steps=job.steps_run,
            ms=ms,
            ended=time.time(),
            **_settings(job),
        )

    def log_line(self) -> str:
        size = f"{self.width}x{self.height}{' masked' if self.masked else ''}"
        settings = f"{self.steps} steps run (asked {_or_recipe(self.asked_steps)}), strength {_or_recipe(self.strength)}"
        return f"job {self.job_id} from {self.client!r} #{self.connection}: {size}, {settings}, {self.ms:.0f} ms, {self.outcome}"


def _or_recipe(value: float | None) -> str:
    return "recipe" if value is None else f"{value:g}"


@dataclass(frozen=True)
class ActiveJob:
    """A job that is waiting or running, as the page lists it."""

    job_id: str
    client: str
    connection: int
    running: bool
    width: int
    height: int
    masked: bool
    asked_steps: int | None
    strength: float | None
    guidance: float | None
    count: int
    live: bool
    used: tuple[int, float, float] | None
    progress: tuple[int, int, int] | None  # image index, step, steps of its last reported step
    ms: float  # since submission

    @classmethod
    def of(cls, job: Job, client: str, connection: int) -> ActiveJob:
        ms = round((time.perf_counter() - job.submitted) * 1000, 1)
        running = job.state is JobState.RUNNING
        return cls(job_id=job.job_id, client=client, connection=connection, running=running, progress=job.progress, ms=ms, **_settings(job))


def _settings(job: Job) -> dict[str, Any]:
    """What a job asked for and ran with, the same for the jobs that run and the jobs that ended."""
    request = job.request
    return {
        "width": request.image.width,
        "height": request.image.height,
        "masked": request.mask is not None,
        "asked_steps": request.steps,
        "strength": request.strength,
        "guidance": request.guidance,
        "count": request.count,
        "live": request.live,
        "used": job.settings,
    }


@dataclass(frozen=True)
class ClientView:
    """One connected client as the page lists it."""

    connection: int
    name: str
    peer: str
    since: float  # time.time() of the hello
    jobs: int  # queued or running


class StatusBoard:
    """The last jobs, the last results' thumbnails and each live client's frame times (thread-safe)."""

    def __init__(self, jobs: int = 50, thumbnails: int = 4, thumbnail_side: int = 128, live_window: float = LIVE_WINDOW) -> None:
        self._jobs: deque[JobRecord] = deque(maxlen=jobs)
        self._thumbnails: deque[dict[str, Any]] = deque(maxlen=thumbnails)
        self.thumbnail_side = thumbnail_side
        self.live_window = live_window
        self._frames: dict[int, deque[float]] = {}
        self._lock = threading.Lock()

    def job_ended(self, record: JobRecord) -> None:
        with self._lock:
            if record.live:
                frames = self._frames.setdefault(record.connection, deque(maxlen=32))
                frames.append(time.monotonic())
            # a live stream would push every ordinary job out of the list: only its last frame stays
            if record.live and self._jobs and self._jobs[-1].live and self._jobs[-1].connection == record.connection:
                self._jobs.pop()
            self._jobs.append(record)

    def forget(self, connection: int) -> None:
        with self._lock:
            self._frames.pop(connection, None)

    def add_thumbnail(self, job_id: str, index: int, pixels: Any) -> None:
        """Keep a small PNG of a result (an H×W×4 uint8 array); meant for a worker thread, not the event loop."""
        from PIL import Image as PILImage

        image = PILImage.fromarray(pixels, "RGBA")
        image.thumbnail((self.thumbnail_side, self.thumbnail_side))
        buffer = io.BytesIO()
        image.save(buffer, "PNG", compress_level=1)
        entry = {
            "job_id": job_id,
            "index": index,
            "width": image.width,
            "height": image.height,
            "src": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        }
        with self._lock:
            self._thumbnails.append(entry)

    def recent(self, count: int) -> list[JobRecord]:
        with self._lock:
            return list(self._jobs)[-count:]

    def frame_rates(self) -> dict[int, float]:
        """Frames per second of each live client, over its last frames that came at most ``live_window`` apart."""
        now = time.monotonic()
        rates = {}
        with self._lock:
            for connection, frames in self._frames.items():
                if len(frames) < 2 or now - frames[-1] > self.live_window:
                    continue
                times = list(frames)
                first = len(times) - 1
                while first > 0 and times[first] - times[first - 1] <= self.live_window:
                    first -= 1
                span = times[-1] - times[first]
                if span > 0:
                    rates[connection] = round((len(times) - 1 - first) / span, 1)
        return rates

    def snapshot(
        self, *, model: p.ModelState, device: str, queued: int, clients: list[ClientView], active: list[ActiveJob]
    ) -> dict[str, Any]:
        """The page's JSON: everything the person at the machine may want to see, in one bounded object."""
        rates = self.frame_rates()
        with self._lock:
            thumbnails = list(self._thumbnails)
        return {
            "time": time.time(),
            "model": _model(model),
            "device": device,
            "memory": memory(device),
            "queue": queued,
            "active": [asdict(a) for a in active],
            "clients": [dict(asdict(c), fps=rates.get(c.connection)) for c in clients],
            "live_fps": round(sum(rates.values()), 1) if rates else None,
            "jobs": [asdict(r) for r in reversed(self.recent(20))],
            "thumbnails": thumbnails[::-1],
        }


def _model(state: p.ModelState) -> dict[str, Any]:
    return {
        "name": state.name,
        "status": state.status.value,
        "message": state.message,
        "progress": state.progress,
        "test_model": state.test_model,
        "inpaint": state.inpaint,
        "downloaded": state.downloaded,
        "download_size": state.download_size,
    }


def memory(device: str) -> dict[str, int | None]:
    """This process's resident memory and, on a CUDA device, the GPU memory torch holds (bytes)."""
    result: dict[str, int | None] = {"rss": _rss(), "vram_allocated": None, "vram_reserved": None, "vram_total": None}
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            result["vram_allocated"] = int(torch.cuda.memory_allocated())
            result["vram_reserved"] = int(torch.cuda.memory_reserved())
            result["vram_total"] = int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return result


def _rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:  # macOS and other Unixes: the peak, the best the standard library offers there
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return None
