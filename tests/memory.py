"""Running out of GPU memory on purpose: a capped CUDA allocator, or, without CUDA, a UNet that raises what CUDA would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def exhausted_memory(engine: Any, headroom: int = 0) -> Iterator[str]:
    """Within the block ``engine``'s next job runs out of memory; says how.

    On CUDA the caching allocator is capped at what it holds now plus ``headroom``
    bytes (its free cached blocks released first), so the job fails for real
    inside PyTorch; elsewhere the pipeline's UNet is swapped for one that raises
    ``torch.cuda.OutOfMemoryError``. Call it between jobs.
    """
    torch = engine.torch
    if engine.device.type == "cuda":
        device = engine.device
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved(device) + headroom) / total), device)
        try:
            yield f"CUDA allocator capped at what it held + {headroom >> 20} MiB"
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        return
    pipe = engine.pipe
    unet = pipe.unet
    pipe.unet = _ExhaustedUNet(unet)
    try:
        yield "no CUDA: the UNet raises torch.cuda.OutOfMemoryError"
    finally:
        pipe.unet = unet


class _ExhaustedUNet:
    def __init__(self, unet: Any) -> None:
        self.config = unet.config

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised on purpose)")
