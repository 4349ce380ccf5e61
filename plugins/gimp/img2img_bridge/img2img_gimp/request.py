"""The generate request for one run, from the dialog's settings and the source's pixels."""

from __future__ import annotations

from .bridge_package import generate_request, p, preview_every
from .settings import JobSettings
from .source import Source


def build_request(settings: JobSettings, source: Source, job_id: str, recipe: p.Recipe | None = None) -> p.Generate:
    """The ``generate`` message; what the settings leave at auto is left unset for the model's recipe.

    ``recipe`` (the model's, when known) only sets how often previews come.
    """
    return generate_request(
        job_id,
        source.rgba,
        source.rect,
        source.mask,
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        strength=settings.strength,
        steps=settings.steps,
        guidance=settings.guidance,
        seed=settings.seed,
        count=settings.count,
        match_seams=settings.match_seams,
        preview_every=preview_every(settings.steps, settings.strength, recipe),
    )
