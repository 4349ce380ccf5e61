"""Running out of GPU memory on purpose: a capped CUDA allocator, or, without CUDA, a UNet that raises what CUDA would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def exhausted_memory(engine: Any, headroom: int = 0) -> Iterator[str]:
    """Within the block ``engine``'s next job runs out of memory; says how.

    On CUDA the caching allocator is capped at what it holds now plus ``headroom``
    bytes, and the free blocks it still caches are taken up by ballast (the cap
    only bites when it must ask CUDA for more), so the job fails for real inside
    PyTorch; elsewhere the pipeline's UNet is swapped for one that raises
    ``torch.cuda.OutOfMemoryError``. Call it between jobs.
    """
    torch = engine.torch
    if engine.device.type == "cuda":
        device = engine.device
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        held = torch.cuda.memory_reserved(device)
        torch.cuda.set_per_process_memory_fraction(min(1.0, held / total), device)
        ballast = []
        try:
            cached = held - torch.cuda.memory_allocated(device)
            # the large pool's free blocks, then the small pool's, down to the allocator's smallest block
            for size in (64 << 20, 8 << 20, 2 << 20, (1 << 20) + 512, 1 << 20, 1 << 16, 1 << 12, 512):
                for _ in range(cached // size + 1):
                    try:
                        ballast.append(torch.empty(size, dtype=torch.uint8, device=device))
                    except torch.cuda.OutOfMemoryError:
                        break
            torch.cuda.set_per_process_memory_fraction(min(1.0, (held + headroom) / total), device)
            yield f"CUDA allocator capped at what it held + {headroom >> 20} MiB"
        finally:
            del ballast
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()
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
