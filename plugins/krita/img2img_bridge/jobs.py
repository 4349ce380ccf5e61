"""A job as the plug-in sees it: what was captured, with which settings, and the request it becomes."""

from __future__ import annotations

from dataclasses import dataclass

from bridge import protocol as p
from bridge.client import new_job_id

from .settings import Settings
from .sources import Capture

#: Previews are small: they are blown up to the region's size on the canvas.
PREVIEW_SIZE = 256
_NAME_CHARS = 40


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    capture: Capture
    settings: Settings
    live: bool = False

    @classmethod
    def new(cls, capture: Capture, settings: Settings, *, live: bool = False) -> JobSpec:
        return cls(new_job_id(), capture, settings, live)


def build_request(spec: JobSpec, rgba: bytes) -> p.Generate:
    """The ``generate`` message for ``spec``; ``rgba`` is the capture converted to RGBA 8-bit.

    What the settings leave at auto stays unset: the bridge uses the model's recipe, its live recipe for live jobs.
    """
    capture, settings = spec.capture, spec.settings
    rect = capture.rect
    mask = None if capture.mask is None else p.Mask(rect.width, rect.height, capture.mask)
    return p.Generate(
        job_id=spec.job_id,
        image=p.Image(rect.width, rect.height, rgba),
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        mask=mask,
        strength=settings.strength,
        steps=settings.live_steps if spec.live else settings.steps,
        guidance=settings.guidance,
        seed=settings.request_seed,
        count=1 if spec.live else settings.count,
        # live results come fast and show in the docker; step previews would only slow them down
        preview=p.PreviewSettings(every=0 if spec.live else 1, max_size=PREVIEW_SIZE),
        live=spec.live,
        match_seams=None if mask is None else settings.match_seams,
    )


def result_layer_name(prompt: str, seed: int) -> str:
    """``"a red fox in snow (seed 42)"``: the prompt's start and the seed that made the result."""
    text = " ".join(prompt.split())
    if len(text) > _NAME_CHARS:
        text = text[: _NAME_CHARS - 1].rstrip() + "…"
    return f"{text or 'img2img'} (seed {seed})"
