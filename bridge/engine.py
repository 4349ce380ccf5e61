"""The engine: img2img (masked or whole) on a loaded model, one job at a time, on the GPU worker thread.

A thin layer over the diffusers pipelines' components: it validates before
touching the GPU, then runs the numbered steps of ``Engine.run``; progress,
previews and cancellation go through the ``JobHooks`` it is given.
"""

from __future__ import annotations

import inspect
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np

from . import imaging, seams
from .editor import protocol as p
from .editor.regions import Rect
from .families import FAMILIES
from .models import LoadedModel

_PROMPT_CACHE_SIZE = 32


class JobCancelled(Exception):
    pass


class EngineError(Exception):
    def __init__(self, code: p.ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JobHooks(Protocol):
    def cancelled(self) -> bool: ...

    def progress(self, index: int, step: int, steps: int) -> None: ...

    def preview(self, frame: PreviewFrame) -> None: ...


@dataclass(frozen=True)
class PreviewFrame:
    """A look at the predicted result, still to be blended, scaled and encoded (off the GPU thread)."""

    index: int
    step: int
    steps: int
    rgb: np.ndarray  # H×W×3 uint8, covering ``region`` at reduced size
    region: Rect
    source: np.ndarray  # the region's RGBA source pixels
    mask: np.ndarray | None  # the region's mask


def render_preview(frame: PreviewFrame, settings: p.PreviewSettings) -> p.Image:
    """Blend the preview over the source through the mask, at preview size, and encode it."""
    region = frame.region
    scale = min(1.0, settings.max_size / max(region.width, region.height))
    width, height = max(1, round(region.width * scale)), max(1, round(region.height * scale))
    small = imaging.resize_rgb(frame.rgb, width, height)
    source = imaging.resize_rgba(frame.source, width, height)
    mask = None if frame.mask is None else imaging.resize_gray(frame.mask, width, height)
    return imaging.encode_rgba(imaging.blend(source, small, mask), settings.encoding)


@dataclass(frozen=True)
class GeneratedImage:
    index: int
    seed: int
    pixels: np.ndarray  # RGBA uint8 for ``rect``
    rect: Rect
    timings: dict[str, float]


@dataclass(frozen=True)
class _Prepared:
    source: np.ndarray
    mask: np.ndarray | None
    region: Rect  # what the model sees, in the sent image
    box: Rect  # what comes back, in the sent image
    working: imaging.WorkingSize


@dataclass(frozen=True)
class _Denoising:
    """What every batch of one job's variations shares: its settings, the encoded image and the conditioning."""

    request: p.Generate
    steps: int
    strength: float
    guidance: float
    do_cfg: bool
    image_latents: Any
    latent_mask: Any
    masked_latents: Any
    embeds: tuple[Any, ...]
    added: dict[str, Any] | None
    guidance_cond: Any
    working: imaging.WorkingSize
    region: Rect
    source: np.ndarray
    mask: np.ndarray | None


class Engine:
    """Runs jobs on one loaded model; not thread-safe (the server calls it from one worker thread)."""

    def __init__(self, model: LoadedModel, *, cuda_graphs: bool = False, max_batch: int = 8) -> None:
        import torch

        self.model = model
        self.pipe = model.img2img
        self.torch = torch
        self.device = torch.device(model.device)
        self.dtype = model.dtype
        #: the most variations denoised together; a batch that runs out of memory is halved and run again
        self.max_batch = max_batch
        self._prompts: OrderedDict[tuple[str, str, bool], tuple[Any, ...]] = OrderedDict()
        up_factor = 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)
        self.multiple = int(self.pipe.vae_scale_factor) * up_factor
        self.family = FAMILIES[model.family]
        factors, bias = self.family.latent_rgb
        self._latent_rgb = torch.tensor(factors, dtype=torch.float32, device=self.device)
        self._latent_rgb_bias = torch.tensor(bias, dtype=torch.float32, device=self.device)
        if self.family.upcast_vae(self.pipe, self.dtype == torch.float16):
            self.pipe.vae.to(dtype=torch.float32)
        # distilled LCM UNets take guidance as an embedding of the timestep, not as a second (unconditional) batch
        self._guidance_dim: int | None = self.pipe.unet.config.get("time_cond_proj_dim")
        # some schedulers (PNDM, SD 1.5's published default) take no generator in step()
        self._step_takes_generator = "generator" in inspect.signature(self.pipe.scheduler.step).parameters
        self._pinned: dict[tuple[int, ...], Any] = {}
        self._graphed: Any = None
        if cuda_graphs and self.device.type == "cuda":
            from .graphs import GraphedUNet

            self._graphed = GraphedUNet(self.pipe.unet)

    def warm_up(self, size: int) -> None:
        """Run one live frame of ``size``² so the first real one is fast (and its CUDA graph is captured)."""

        class _Quiet:
            def cancelled(self) -> bool:
                return False

            def progress(self, index: int, step: int, steps: int) -> None:
                pass

            def preview(self, frame: PreviewFrame) -> None:
                pass

        pixels = bytes(size * size * 4)
        request = p.Generate(
            job_id="warm-up", image=p.Image(size, size, pixels), prompt="", live=True,  # the live recipe, as live frames run
            preview=p.PreviewSettings(every=0),
        )  # fmt: skip
        for _ in self.run(request, _Quiet()):
            pass

    def settings(self, request: p.Generate) -> tuple[int, float, float]:
        """Steps, guidance and strength for ``request``: what it asks for, the model's recipe where it left them unset."""
        steps, guidance, strength = self.model.recipe.settings(request.live)
        return (
            steps if request.steps is None else request.steps,
            guidance if request.guidance is None else request.guidance,
            strength if request.strength is None else request.strength,
        )

    def prepare(self, request: p.Generate) -> _Prepared:
        """Decode and check the inputs; raises ProtocolError before any GPU work."""
        source = imaging.decode_rgba(request.image)
        mask = None if request.mask is None else imaging.decode_mask(request.mask)
        full = Rect(0, 0, request.image.width, request.image.height)
        if mask is None:
            region = box = full
        else:
            found = imaging.mask_box(mask)
            if found is None:
                raise p.ProtocolError(
                    p.ErrorCode.INVALID_FIELD,
                    "the mask is empty (all 0), so there is nothing to regenerate",
                    field="mask",
                    job_id=request.job_id,
                )
            box = found
            region = imaging.context_box(box, full.width, full.height, self.model.resolution)
        working = imaging.working_size(region.width, region.height, self.model.resolution, self.multiple)
        return _Prepared(source=source, mask=mask, region=region, box=box, working=working)

    def run(self, request: p.Generate, hooks: JobHooks, prepared: _Prepared | None = None) -> Iterator[GeneratedImage]:
        """Yield one GeneratedImage per variation, in index order; raises JobCancelled or EngineError.

        Variations are denoised together, up to ``max_batch`` at a time; a batch that runs out of
        memory starts again as two halves (its progress and previews start again too).
        """
        torch = self.torch
        try:
            with torch.inference_mode():
                yield from self._run(request, hooks, prepared or self.prepare(request))
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise EngineError(
                p.ErrorCode.OUT_OF_MEMORY, "the GPU ran out of memory: try a smaller image or selection, or fewer variations"
            ) from exc

    def _run(self, request: p.Generate, hooks: JobHooks, job: _Prepared) -> Iterator[GeneratedImage]:
        torch = self.torch
        started = time.perf_counter()
        fast = request.live and self.model.tiny_vae is not None
        steps, guidance, strength = self.settings(request)
        do_cfg = guidance > 1.0 and self._guidance_dim is None

        # 1. the region the model sees, scaled to its working size and padded to what the UNet needs
        region = job.region
        src = job.source[region.y : region.bottom, region.x : region.right]
        region_mask = None if job.mask is None else job.mask[region.y : region.bottom, region.x : region.right]
        ws = job.working
        rgb = imaging.pad_edges(imaging.resize_rgb(imaging.flatten_for_model(src), ws.width, ws.height), ws.padded_width, ws.padded_height)
        pixels = self._to_tensor(rgb)

        # 2. encode the image (and, for 9-channel inpainting UNets, the masked image)
        t0 = time.perf_counter()
        image_latents = self._encode(pixels, fast)
        latent_mask = None
        masked_latents = None
        if region_mask is not None:
            mask_small = imaging.pad_edges(imaging.resize_gray(region_mask, ws.width, ws.height), ws.padded_width, ws.padded_height)
            mask_t = torch.from_numpy(np.require(mask_small, requirements=["C", "W"])).to(self.device, torch.float32)[None, None] / 255.0
            latent_mask = torch.nn.functional.interpolate(mask_t, size=image_latents.shape[-2:], mode="bilinear").to(self.dtype)
            if self.model.inpaint_unet:
                binary = (mask_t >= 0.5).to(self.dtype)
                masked_latents = self._encode(pixels * (1 - binary), fast)
                latent_mask = (latent_mask >= 0.5).to(self.dtype)
        elif self.model.inpaint_unet:
            latent_mask = torch.ones((1, 1, *image_latents.shape[-2:]), device=self.device, dtype=self.dtype)
            masked_latents = torch.zeros_like(image_latents)
        encode_ms = (time.perf_counter() - t0) * 1000

        # 3. the prompt, encoded once per distinct text
        embeds = self._prompt_embeds(request.prompt, request.negative_prompt, do_cfg)
        added = self.family.added_conditions(self.pipe, embeds, ws.padded_height, ws.padded_width, do_cfg, self.dtype)
        guidance_cond = self._guidance_embedding(guidance)

        # 4. the variations, as many to a batch as memory allows: one UNet call per step for the whole batch,
        #    each variation with its own seed's generator, so each comes out as its seed alone would
        denoising = _Denoising(
            request=request, steps=steps, strength=strength, guidance=guidance, do_cfg=do_cfg,
            image_latents=image_latents, latent_mask=latent_mask, masked_latents=masked_latents,
            embeds=embeds, added=added, guidance_cond=guidance_cond, working=ws, region=region, source=src, mask=region_mask,
        )  # fmt: skip
        base_seed = request.seed if request.seed is not None else random.randrange(2**32)
        batch = min(request.count, self.max_batch)
        index = 0
        while index < request.count:
            size = min(batch, request.count - index)
            seeds = [(base_seed + index + i) % 2**32 for i in range(size)]
            t1 = time.perf_counter()
            try:
                latents = self._denoise(denoising, index, seeds, hooks)
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                # 5a. out of memory: these variations start again in smaller batches (nothing of them was yielded yet)
                torch.cuda.empty_cache()
                batch = size // 2
                continue
            denoise_ms = (time.perf_counter() - t1) * 1000 / size

            # 6. decode each variation alone, restore the region's size and paste through the mask
            for offset, seed in enumerate(seeds):
                t2 = time.perf_counter()
                generated = self._decode(latents[offset : offset + 1], fast)[: ws.height, : ws.width]
                generated = imaging.resize_rgb(generated, region.width, region.height)
                if region_mask is not None and request.matches_seams:
                    generated = seams.match(src, generated, region_mask)
                merged = imaging.blend(src, generated, region_mask)
                box = job.box
                inner = merged[box.y - region.y : box.bottom - region.y, box.x - region.x : box.right - region.x]
                decode_ms = (time.perf_counter() - t2) * 1000
                timings = {
                    "encode_ms": encode_ms,
                    "denoise_ms": denoise_ms,
                    "decode_ms": decode_ms,
                    "total_ms": (time.perf_counter() - started) * 1000,
                    "batch": float(size),
                }
                yield GeneratedImage(index=index + offset, seed=seed, pixels=np.ascontiguousarray(inner), rect=box, timings=timings)
                started = time.perf_counter()
                encode_ms = 0.0
            index += size

    def _denoise(self, job: _Denoising, first: int, seeds: list[int], hooks: JobHooks) -> Any:
        """Denoise variations ``first``, ``first + 1``, … (one per seed) as one batch; returns their latents."""
        torch = self.torch
        request, size = job.request, len(seeds)

        # 4. the timesteps that strength leaves, and each seed's noise
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(job.steps, device=self.device)
        keep = max(1, min(int(job.steps * job.strength), job.steps))
        start = (job.steps - keep) * scheduler.order
        timesteps = scheduler.timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        shape = (1, *job.image_latents.shape[1:])
        noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]).to(self.device, self.dtype)
        image_latents = job.image_latents.expand(size, -1, -1, -1)
        latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
        total = len(timesteps)
        # the conditioning, repeated per variation ([uncond × size, cond × size] with guidance)
        embeds = job.embeds[0].repeat_interleave(size, dim=0)
        added = None if job.added is None else {k: v.repeat_interleave(size, dim=0) for k, v in job.added.items()}
        guidance_cond = None if job.guidance_cond is None else job.guidance_cond.repeat_interleave(size, dim=0)
        extra = None
        if job.masked_latents is not None and job.latent_mask is not None:
            extra = torch.cat([job.latent_mask, job.masked_latents], dim=1).expand(size, -1, -1, -1)
            if job.do_cfg:
                extra = torch.cat([extra] * 2)
        # a scheduler's own noise (ancestral, LCM) comes from each variation's generator; diffusers takes a list
        step_args: dict[str, Any] = {}
        if self._step_takes_generator:
            step_args["generator"] = generators[0] if size == 1 else generators

        # 5. denoise, blending the kept area back in for ordinary checkpoints
        for step, t in enumerate(timesteps, start=1):
            if hooks.cancelled():
                raise JobCancelled()
            model_in = torch.cat([latents] * 2) if job.do_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            if extra is not None:
                model_in = torch.cat([model_in, extra], dim=1)
            if request.live and self._graphed is not None and guidance_cond is None:
                noise_pred = self._graphed(model_in, t, embeds, added)
            else:
                noise_pred = self.pipe.unet(
                    model_in,
                    t,
                    encoder_hidden_states=embeds,
                    timestep_cond=guidance_cond,
                    added_cond_kwargs=added,
                    return_dict=False,
                )[0]
            if job.do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + job.guidance * (cond - uncond)
            out = scheduler.step(noise_pred, t, latents, return_dict=True, **step_args)
            latents = out.prev_sample
            predicted = getattr(out, "pred_original_sample", None)
            if predicted is None:
                predicted = getattr(out, "denoised", latents)
            if job.latent_mask is not None and job.masked_latents is None:
                # the kept area follows the source, noised to where the next step starts
                kept = scheduler.add_noise(image_latents, noise, timesteps[step : step + 1]) if step < total else image_latents
                latents = kept * (1 - job.latent_mask) + latents * job.latent_mask
                predicted = image_latents * (1 - job.latent_mask) + predicted * job.latent_mask
            every = request.preview.every
            for offset in range(size):
                hooks.progress(first + offset, step, total)
                if every and step < total and step % every == 0:
                    frame = self._preview_frame(
                        first + offset, step, total, predicted[offset : offset + 1], job.working,
                        job.region, job.source, job.mask, request.preview.decoder,
                    )  # fmt: skip
                    hooks.preview(frame)
        return latents

    # --- pieces ---------------------------------------------------------------------------

    def _to_tensor(self, rgb: np.ndarray) -> Any:
        torch = self.torch
        host = torch.from_numpy(np.require(rgb, requirements=["C", "W"]))  # torch wants writable memory
        if self.device.type == "cuda":
            staging = self._pinned_buffer(tuple(host.shape))
            staging.copy_(host)
            tensor = staging.to(self.device, non_blocking=True)
        else:
            tensor = host.to(self.device)
        return tensor.permute(2, 0, 1)[None].to(self.dtype).div_(127.5).sub_(1.0)

    def _pinned_buffer(self, shape: tuple[int, ...]) -> Any:
        """Page-locked host memory, reused per shape, for non-blocking copies to and from the GPU."""
        buffer = self._pinned.get(shape)
        if buffer is None:
            if len(self._pinned) > 8:
                self._pinned.clear()
            buffer = self._pinned[shape] = self.torch.empty(shape, dtype=self.torch.uint8).pin_memory()
        return buffer

    def _encode(self, pixels: Any, fast: bool) -> Any:
        tiny = self.model.tiny_vae
        if fast and tiny is not None:
            return tiny.encode(pixels).latents
        vae = self.pipe.vae
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).to(self.dtype)

    def _decode(self, latents: Any, fast: bool) -> np.ndarray:
        tiny = self.model.tiny_vae
        if fast and tiny is not None:
            image = tiny.decode(latents).sample
        else:
            vae = self.pipe.vae
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            image = vae.decode((latents / vae.config.scaling_factor + shift).to(vae.dtype)).sample
        return self._to_uint8(image)

    def _to_uint8(self, image: Any) -> np.ndarray:
        out = ((image[0].float() + 1.0) * 127.5).clamp_(0, 255).round_().to(self.torch.uint8).permute(1, 2, 0)
        if self.device.type != "cuda":
            return np.asarray(out.cpu().numpy())
        staging = self._pinned_buffer(tuple(out.shape))
        staging.copy_(out, non_blocking=True)
        self.torch.cuda.current_stream().synchronize()
        return np.array(staging.numpy())  # a copy: the staging buffer is reused

    def _preview_frame(
        self,
        index: int,
        step: int,
        total: int,
        predicted: Any,
        ws: imaging.WorkingSize,
        region: Rect,
        src: np.ndarray,
        region_mask: np.ndarray | None,
        decoder: p.PreviewDecoder,
    ) -> PreviewFrame:
        tiny = self.model.tiny_vae
        if decoder is p.PreviewDecoder.FULL:
            rgb = self._decode(predicted, fast=False)[: ws.height, : ws.width]
        elif decoder in (p.PreviewDecoder.AUTO, p.PreviewDecoder.TINY) and tiny is not None:
            rgb = self._decode(predicted, fast=True)[: ws.height, : ws.width]
        else:
            projected = self.torch.einsum("bchw,cr->bhwr", predicted.float(), self._latent_rgb) + self._latent_rgb_bias
            scale = self.pipe.vae_scale_factor
            rgb = self._to_uint8(projected.permute(0, 3, 1, 2))[: -(-ws.height // scale), : -(-ws.width // scale)]
        return PreviewFrame(index=index, step=step, steps=total, rgb=rgb, region=region, source=src, mask=region_mask)

    def _prompt_embeds(self, prompt: str, negative: str, do_cfg: bool) -> tuple[Any, ...]:
        key = (prompt, negative, do_cfg)
        cached = self._prompts.get(key)
        if cached is not None:
            self._prompts.move_to_end(key)
            return cached
        embeds = self.family.encode_prompt(self.pipe, prompt, negative, self.device, do_cfg)
        self._prompts[key] = embeds
        if len(self._prompts) > _PROMPT_CACHE_SIZE:
            self._prompts.popitem(last=False)
        return embeds

    def _guidance_embedding(self, guidance: float) -> Any:
        """LCM's guidance input: an embedding of (guidance - 1), as diffusers' pipelines build it."""
        if self._guidance_dim is None:
            return None
        w = self.torch.tensor([guidance - 1.0])
        return self.pipe.get_guidance_scale_embedding(w, embedding_dim=self._guidance_dim).to(self.device, self.dtype)
