"""CUDA-graph capture of the UNet for live jobs (opt-in: ``serve --cuda-graphs``).

At batch 1 an eager UNet call is bound by the CPU launching kernels; replaying
a captured graph launches them all at once. One graph is captured per input
shape (a few hundred milliseconds each, no compilation), so live jobs of a
fixed canvas size pay it once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class _Captured:
    graph: Any
    inputs: dict[str, Any]
    output: Any


class GraphedUNet:
    """Calls ``unet`` through captured CUDA graphs, one per distinct set of input shapes."""

    def __init__(self, unet: Any, max_graphs: int = 4, warmup_calls: int = 2) -> None:
        import torch

        self.torch = torch
        self.unet = unet
        self.max_graphs = max_graphs
        self.warmup_calls = warmup_calls
        self._graphs: OrderedDict[tuple[Any, ...], _Captured] = OrderedDict()
        self._pool: Any = None

    def __call__(self, sample: Any, timestep: Any, encoder_hidden_states: Any, added_cond_kwargs: dict[str, Any] | None) -> Any:
        torch = self.torch
        tensors = {
            "sample": sample,
            "timestep": torch.as_tensor(timestep, device=sample.device),
            "encoder_hidden_states": encoder_hidden_states,
        }
        for name, value in (added_cond_kwargs or {}).items():
            tensors["added." + name] = value
        key = tuple((name, tuple(t.shape), t.dtype) for name, t in sorted(tensors.items()))
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(key, tensors)
        else:
            self._graphs.move_to_end(key)
        for name, value in tensors.items():
            captured.inputs[name].copy_(value)
        captured.graph.replay()
        # the next replay overwrites the output buffer: hand out a copy
        return captured.output.clone()

    def capture(self, sample: Any, timestep: Any, encoder_hidden_states: Any, added_cond_kwargs: dict[str, Any] | None = None) -> None:
        """Capture ahead of time (at model load) so the first live frame is already fast."""
        self(sample, timestep, encoder_hidden_states, added_cond_kwargs)

    def _run(self, inputs: dict[str, Any]) -> Any:
        added = {name[6:]: value for name, value in inputs.items() if name.startswith("added.")}
        return self.unet(
            inputs["sample"],
            inputs["timestep"],
            encoder_hidden_states=inputs["encoder_hidden_states"],
            added_cond_kwargs=added or None,
            return_dict=False,
        )[0]

    def _capture(self, key: tuple[Any, ...], tensors: dict[str, Any]) -> _Captured:
        torch = self.torch
        inputs = {name: value.clone() for name, value in tensors.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_calls):  # lets cuDNN/cuBLAS pick their kernels outside the capture
                self._run(inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self._run(inputs)
        captured = _Captured(graph=graph, inputs=inputs, output=output)
        self._graphs[key] = captured
        if len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return captured


class OneStepFrame:
    """A whole live frame of one Euler step, TAESD in and out, as fixed tensor arithmetic: eager, or one CUDA graph.

    A prototype that the benchmark measures beside the engine (the engine does not use
    it yet): uint8 pixels in through a pinned buffer, TAESD encode, the noise at the
    step's sigma, the UNet, Euler's step to the clean latents, TAESD decode and the
    uint8 conversion, for one working size and one (steps, strength) that leaves one
    denoising step. It follows ``Engine._run`` operation for operation, so its frames
    match the engine's live frames; ``supports`` says when that holds.
    """

    def __init__(self, pipe: Any, tiny_vae: Any, steps: int, strength: float, height: int, width: int, *, capture: bool) -> None:
        import torch

        self.torch = torch
        self.pipe, self.tiny_vae = pipe, tiny_vae
        self.device, self.dtype = pipe.unet.device, pipe.unet.dtype
        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps, device=self.device)
        start = (steps - max(1, min(int(steps * strength), steps))) * scheduler.order
        self.timestep = scheduler.timesteps[start]
        self.sigma, self.sigma_next = scheduler.sigmas[start], scheduler.sigmas[start + 1]
        self.noise_sigma = scheduler.sigmas.to(device=self.device, dtype=self.dtype)[start]
        self.height, self.width = height, width
        with torch.inference_mode():
            self._pixels = torch.zeros((height, width, 3), dtype=torch.uint8, device=self.device)
        self._noise: Any = None
        self._embeds: Any = None
        self._noise_seed: int | None = None
        self._graph: Any = None
        self._output: Any = None
        self._capture = capture and self.device.type == "cuda"
        self._pinned_in: Any = None
        self._pinned_out: Any = None

    @staticmethod
    def supports(pipe: Any, tiny_vae: Any, steps: int, strength: float) -> bool:
        """Euler, epsilon prediction, a TAESD, a 4-channel UNet without added conditions, and one denoising step."""
        scheduler = pipe.scheduler
        return (
            tiny_vae is not None
            and type(scheduler).__name__ == "EulerDiscreteScheduler"
            and scheduler.config.prediction_type == "epsilon"
            and not getattr(scheduler.config, "s_churn", 0)
            and pipe.unet.config.in_channels == 4
            and pipe.unet.config.addition_embed_type is None
            and max(1, min(int(steps * strength), steps)) == 1
        )

    def __call__(self, rgb: Any, embeds: Any, seed: int) -> Any:
        """``rgb``: height×width×3 uint8 (the padded working image); ``embeds``: the prompt's, without guidance."""
        with self.torch.inference_mode():
            return self._call(rgb, embeds, seed)

    def _call(self, rgb: Any, embeds: Any, seed: int) -> Any:
        import numpy as np

        torch = self.torch
        if self._noise is None or self._noise_seed != seed:
            generator = torch.Generator("cpu").manual_seed(seed)
            shape = (1, 4, self.height // 8, self.width // 8)
            noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)
            self._noise = noise if self._noise is None else self._noise.copy_(noise)
            self._noise_seed = seed
        if self._embeds is None:
            self._embeds = embeds.clone()
        else:
            self._embeds.copy_(embeds)
        host = torch.from_numpy(np.require(rgb, requirements=["C", "W"]))
        if not self._capture:
            self._pixels.copy_(host)
            return np.asarray(self._frame().cpu().numpy())
        if self._pinned_in is None:
            self._pinned_in = torch.empty_like(host).pin_memory()
            self._pinned_out = torch.empty_like(host).pin_memory()
        self._pinned_in.copy_(host)
        self._pixels.copy_(self._pinned_in, non_blocking=True)
        if self._graph is None:
            self._graph, self._output = self._record()
        self._graph.replay()
        self._pinned_out.copy_(self._output, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return np.array(self._pinned_out.numpy())

    def _frame(self) -> Any:
        torch = self.torch
        pixels = self._pixels.permute(2, 0, 1)[None].to(self.dtype).div_(127.5).sub_(1.0)
        latents = self.tiny_vae.encode(pixels).latents
        noisy = latents + self._noise * self.noise_sigma
        model_in = noisy / ((self.sigma**2 + 1) ** 0.5)
        eps = self.pipe.unet(model_in, self.timestep, encoder_hidden_states=self._embeds, return_dict=False)[0]
        # EulerDiscreteScheduler.step without churn, to the last sigma
        sample = noisy.to(torch.float32)
        clean = sample - self.sigma * eps
        denoised = (sample + (sample - clean) / self.sigma * (self.sigma_next - self.sigma)).to(eps.dtype)
        image = self.tiny_vae.decode(denoised).sample
        return ((image[0].float() + 1.0) * 127.5).clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0)

    def _record(self) -> tuple[Any, Any]:
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # lets cuDNN/cuBLAS pick their kernels outside the capture
                self._frame()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self._frame()
        return graph, output
