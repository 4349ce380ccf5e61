"""What the benchmark ran on: processor, memory, library versions, and what a fresh 64 MiB buffer costs."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("torch", "diffusers", "transformers", "aiohttp", "websockets", "msgpack", "numpy", "pillow")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def copy_costs(size: int = 64 << 20, rounds: int = 5) -> dict[str, float]:
    """Milliseconds to fill a fresh buffer of ``size`` bytes versus copying into one already touched.

    Every large frame the transport builds is a fresh allocation; where first
    touching memory is slow (many VMs), that, not the copying, sets the pace.
    """
    source = os.urandom(size)
    fresh, warm = [], []
    target = bytearray(size)
    view = memoryview(target)
    for _ in range(rounds):
        started = time.perf_counter()
        buffer = bytearray(source)
        fresh.append((time.perf_counter() - started) * 1000)
        del buffer
        started = time.perf_counter()
        view[:] = source
        warm.append((time.perf_counter() - started) * 1000)
    return {"fresh_copy_64mib_ms": round(sorted(fresh)[rounds // 2], 1), "warm_copy_64mib_ms": round(sorted(warm)[rounds // 2], 1)}


def describe(device: str) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "device": device,
        "packages": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    info.update(copy_costs())
    return info
