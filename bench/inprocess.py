"""(a) the raw diffusers pipeline call and (b) the bridge's engine, in this process, on one loaded model."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image as PILImage

from bridge import imaging
from bridge.editor import protocol as p
from bridge.engine import Engine, PreviewFrame, render_preview
from bridge.models import LoadedModel

from .profiles import JobSettings


def sample_rgba(side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (side, side, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return pixels


def request_for(job: JobSettings, pixels: np.ndarray) -> p.Generate:
    return p.Generate(
        job_id="bench",
        image=p.Image(job.side, job.side, pixels.tobytes()),
        prompt=job.prompt,
        steps=job.steps,
        strength=job.strength,
        guidance=job.guidance,
        seed=job.seed,
        preview=p.PreviewSettings(every=job.preview_every, max_size=job.preview_max),
        live=job.live,
    )


class Sync:
    """Waits for the device to finish its queued work (CUDA), so that wall times cover it."""

    def __init__(self, engine: Engine) -> None:
        self.torch = engine.torch
        self.cuda = engine.device.type == "cuda"

    def __call__(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()


class RawPipeline:
    """The diffusers img2img pipeline called directly, on the image the engine would hand the model.

    The engine scales the image to the model's working size first; the raw call
    gets that image ready-made, so both do the same model work. ``pipe`` is a
    pipeline of its own on the same weights: the engine may change its
    pipeline's VAE dtype (it upcasts when the VAE config asks), which a direct
    call on that pipeline does not expect.
    """

    def __init__(self, pipe: Any, engine: Engine) -> None:
        self.engine = engine
        self.pipe = pipe
        self._sync = Sync(engine)

    def working_image(self, job: JobSettings) -> PILImage.Image:
        size = imaging.working_size(job.side, job.side, self.engine.model.resolution, self.engine.multiple)
        rgb = imaging.resize_rgb(sample_rgba(job.side)[..., :3], size.padded_width, size.padded_height)
        return PILImage.fromarray(np.ascontiguousarray(rgb))

    def prime(self, job: JobSettings, image: PILImage.Image, calls: int = 3) -> float:
        """Call it ``calls`` times (compilation, CUDA-graph recording); seconds taken."""
        started = time.perf_counter()
        for _ in range(calls):
            self.call(job, image)
        return time.perf_counter() - started

    def call(self, job: JobSettings, image: PILImage.Image) -> float:
        """One call; wall milliseconds."""
        torch = self.engine.torch
        self._sync()
        started = time.perf_counter()
        with torch.inference_mode():
            self.pipe(
                prompt=job.prompt,
                image=image,
                strength=job.strength,
                num_inference_steps=job.steps,
                guidance_scale=job.guidance,
                generator=torch.Generator("cpu").manual_seed(job.seed),
                output_type="pil",
            )
        self._sync()
        return (time.perf_counter() - started) * 1000


RAW = "raw"
RAW_TAESD = "raw_taesd"
RAW_COMPILED = "raw_taesd_compiled"


def diffusers_setups(loaded: LoadedModel, engine: Engine, *, compiled: bool) -> dict[str, RawPipeline]:
    """The diffusers img2img pipeline as loaded, and the best set-ups built from it for live frames.

    ``raw_taesd`` swaps its VAE for the model's TAESD, as diffusers' docs suggest for
    speed; with ``compiled``, ``raw_taesd_compiled`` also runs the UNet and TAESD
    through ``torch.compile(mode="reduce-overhead")`` (CUDA graphs), which takes
    minutes to compile. ``loaded`` is a load of its own, apart from the engine's.
    """
    from diffusers import AutoPipelineForImage2Image

    setups = {RAW: RawPipeline(loaded.img2img, engine)}
    if loaded.tiny_vae is None:
        return setups
    taesd_pipe = AutoPipelineForImage2Image.from_pipe(loaded.img2img, vae=loaded.tiny_vae)
    taesd_pipe.set_progress_bar_config(disable=True)
    setups[RAW_TAESD] = RawPipeline(taesd_pipe, engine)
    if compiled:
        import copy

        torch = engine.torch
        taesd = copy.deepcopy(loaded.tiny_vae)
        taesd.encoder = torch.compile(taesd.encoder, mode="reduce-overhead", fullgraph=True)
        taesd.decoder = torch.compile(taesd.decoder, mode="reduce-overhead", fullgraph=True)
        pipe = AutoPipelineForImage2Image.from_pipe(loaded.img2img, vae=taesd)
        pipe.unet = torch.compile(loaded.img2img.unet, mode="reduce-overhead", fullgraph=True)
        pipe.set_progress_bar_config(disable=True)
        setups[RAW_COMPILED] = RawPipeline(pipe, engine)
    return setups


class _RenderingHooks:
    """Engine hooks that render each preview on the calling thread, as a client of the engine would."""

    def __init__(self, settings: p.PreviewSettings, started: float) -> None:
        self.settings = settings
        self.started = started
        self.first_preview_ms: float | None = None
        self.previews = 0

    def cancelled(self) -> bool:
        return False

    def progress(self, index: int, step: int, steps: int) -> None:
        pass

    def preview(self, frame: PreviewFrame) -> None:
        render_preview(frame, self.settings)
        self.previews += 1
        if self.first_preview_ms is None:
            self.first_preview_ms = (time.perf_counter() - self.started) * 1000


class InProcessEngine:
    """The bridge's engine called directly: decode and check, then run (previews rendered in-line)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sync = Sync(engine)

    def call(self, job: JobSettings, request: p.Generate) -> dict[str, Any]:
        """One job; wall milliseconds, time to the first rendered preview, preview count."""
        self._sync()
        started = time.perf_counter()
        hooks = _RenderingHooks(request.preview, started)
        prepared = self.engine.prepare(request)
        for _ in self.engine.run(request, hooks, prepared):
            pass
        self._sync()
        return {
            "wall_ms": (time.perf_counter() - started) * 1000,
            "first_preview_ms": hooks.first_preview_ms,
            "previews": hooks.previews,
        }
