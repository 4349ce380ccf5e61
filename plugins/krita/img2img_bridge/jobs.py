"""A job as the plug-in sees it: what was captured, with which settings, and the request it becomes."""

from __future__ import annotations

from dataclasses import dataclass

from .bridge_package import generate_request, new_job_id, p
from .settings import Settings
from .sources import Capture


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
    return generate_request(
        spec.job_id,
        rgba,
        capture.rect,
        capture.mask,
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        strength=settings.strength,
        steps=settings.live_steps if spec.live else settings.steps,
        guidance=settings.guidance,
        seed=settings.request_seed,
        match_seams=settings.match_seams,
        count=1 if spec.live else settings.count,
        # live results come fast and show in the docker; step previews would only slow them down
        preview_every=0 if spec.live else 1,
        live=spec.live,
    )
