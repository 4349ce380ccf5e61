"""The generate request for one run, and the name of the layer it produces."""

from __future__ import annotations

from bridge import protocol as p

from .settings import JobSettings
from .source import Source

PREVIEW_MAX_SIZE = 256
MAX_NAME_PROMPT = 40


def build_request(settings: JobSettings, source: Source, job_id: str) -> p.Generate:
    rect = source.rect
    mask = None if source.mask is None else p.Mask(rect.width, rect.height, source.mask)
    return p.Generate(
        job_id=job_id,
        image=p.Image(rect.width, rect.height, source.rgba),
        mask=mask,
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        strength=settings.strength,
        steps=settings.steps,
        seed=settings.seed,
        preview=p.PreviewSettings(every=preview_every(settings.steps), max_size=PREVIEW_MAX_SIZE),
    )


def preview_every(steps: int) -> int:
    """About ten previews a job: enough to watch, few enough not to slow the bridge down."""
    return max(1, round(steps / 10))


def result_layer_name(prompt: str, seed: int) -> str:
    text = " ".join(prompt.split())
    if len(text) > MAX_NAME_PROMPT:
        text = text[: MAX_NAME_PROMPT - 1].rstrip() + "\u2026"
    return f"{text or 'Img2Img'} (seed {seed})"
