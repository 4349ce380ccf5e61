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
