"""The generate request for one run, and the name of the layer it produces."""

from __future__ import annotations

from bridge import protocol as p

from .settings import JobSettings
from .source import Source

PREVIEW_MAX_SIZE = 256
MAX_NAME_PROMPT = 40


def build_request(settings: JobSettings, source: Source, job_id: str, recipe: p.Recipe | None = None) -> p.Generate:
    """The ``generate`` message; what the settings leave at auto is left unset for the model's recipe.

    ``recipe`` (the model's, when known) only sets how often previews come.
    """
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
        guidance=settings.guidance,
        seed=settings.seed,
        count=settings.count,
        preview=p.PreviewSettings(every=preview_every(settings, recipe), max_size=PREVIEW_MAX_SIZE),
        match_seams=None if mask is None else settings.match_seams,
    )


def preview_every(settings: JobSettings, recipe: p.Recipe | None) -> int:
    """About ten previews a job: enough to watch, few enough not to slow the bridge down.

    A job runs about steps × strength denoising steps; while that is unknown, every step gets one.
    """
    steps, _, strength = recipe.settings(live=False) if recipe is not None else (None, None, None)
    steps = settings.steps or steps
    strength = settings.strength or strength
    if steps is None or strength is None:
        return 1
    return max(1, round(steps * strength / 10))


def result_layer_name(prompt: str, seed: int) -> str:
    text = " ".join(prompt.split())
    if len(text) > MAX_NAME_PROMPT:
        text = text[: MAX_NAME_PROMPT - 1].rstrip() + "\u2026"
    return f"{text or 'Img2Img'} (seed {seed})"
