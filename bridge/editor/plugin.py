"""What both editor plug-ins do with a job, without their host: the request, the result's name, preview pixels, sentences.

The plug-ins keep only host code (reading and writing layers, their dialogs and
dockers, their event loops); what they decide about a job is decided here once.
"""

from __future__ import annotations

from array import array

from . import protocol as p
from .client import START_HINT, ClientError, sentence
from .regions import Rect

#: previews are small: a plug-in blows them up to the region's size on the canvas
PREVIEW_SIZE = 256
#: how much of the prompt a result layer's name shows
NAME_CHARS = 40


def generate_request(
    job_id: str,
    rgba: bytes,
    rect: Rect,
    mask: bytes | None,
    *,
    prompt: str,
    negative_prompt: str,
    strength: float | None,
    steps: int | None,
    guidance: float | None,
    seed: int | None,
    match_seams: bool,
    preview_every: int,
    live: bool = False,
    count: int = 1,
) -> p.Generate:
    """The ``generate`` message for ``rect``'s pixels; settings left at ``None`` are the model's recipe's to choose."""
    region_mask = None if mask is None else p.Mask(rect.width, rect.height, mask)
    return p.Generate(
        job_id=job_id,
        image=p.Image(rect.width, rect.height, rgba),
        mask=region_mask,
        prompt=prompt,
        negative_prompt=negative_prompt,
        strength=strength,
        steps=steps,
        guidance=guidance,
        seed=seed,
        count=count,
        preview=p.PreviewSettings(every=preview_every, max_size=PREVIEW_SIZE),
        live=live,
        match_seams=None if region_mask is None else match_seams,
    )


def preview_every(steps: int | None, strength: float | None, recipe: p.Recipe | None) -> int:
    """About ten previews a job: enough to watch, few enough not to slow the bridge down.

    A job runs about steps × strength denoising steps (the settings', else the
    model's recipe's); while that is unknown, every step gets one.
    """
    recipe_steps, _, recipe_strength = recipe.settings(live=False) if recipe is not None else (None, None, None)
    steps = steps or recipe_steps
    strength = strength or recipe_strength
    if steps is None or strength is None:
        return 1
    return max(1, round(steps * strength / 10))


def result_layer_name(prompt: str, seed: int) -> str:
    """``"a red fox in snow (seed 42)"``: the prompt's start and the seed that made the result."""
    text = " ".join(prompt.split())
    if len(text) > NAME_CHARS:
        text = text[: NAME_CHARS - 1].rstrip() + "\u2026"
    return f"{text or 'Img2Img'} (seed {seed})"


def scale_nearest(rgba: bytes, width: int, height: int, new_width: int, new_height: int) -> bytes:
    """Nearest-neighbour resize of RGBA 8-bit pixels (previews are small; this blows them up)."""
    if len(rgba) != width * height * 4:
        raise ValueError(f"{len(rgba)} bytes are not a {width}x{height} RGBA image")
    if (width, height) == (new_width, new_height):
        return rgba
    pixels = memoryview(rgba).cast("I")
    columns = [(2 * x + 1) * width // (2 * new_width) for x in range(new_width)]
    rows: dict[int, bytes] = {}
    out: list[bytes] = []
    for y in range(new_height):
        source_row = (2 * y + 1) * height // (2 * new_height)
        row = rows.get(source_row)
        if row is None:
            line = pixels[source_row * width : (source_row + 1) * width]
            row = rows[source_row] = array("I", map(line.__getitem__, columns)).tobytes()
        out.append(row)
    return b"".join(out)


def alpha_from_mask(rgba: bytes, mask: bytes) -> bytes:
    """``rgba`` with its alpha replaced by ``mask``: a preview shows only where the selection regenerates."""
    if len(rgba) != len(mask) * 4:
        raise ValueError(f"{len(rgba)} RGBA bytes do not match a mask of {len(mask)} pixels")
    out = bytearray(rgba)
    out[3::4] = mask
    return bytes(out)


def preview_pixels(preview: p.Preview, mask: bytes | None) -> bytes:
    """A preview blown up to its region's size, RGBA 8-bit; ``mask`` (the region's, when the job has one) becomes its alpha."""
    small = preview.image.raw_rgba()
    rgba = scale_nearest(small, preview.image.width, preview.image.height, preview.width, preview.height)
    return rgba if mask is None else alpha_from_mask(rgba, mask)


# --- the artist's sentences ----------------------------------------------------------------


#: the sentence for each error code the artist can act on: {detail} is the bridge's message, {model_hint} where to
#: pick a model, {run_again} how to retry, both in the host's words
_ERROR_SENTENCES = {
    p.ErrorCode.NO_MODEL: "The bridge has no model loaded: {model_hint}.",
    p.ErrorCode.MODEL_LOADING: "The bridge is still loading its model; {run_again} in a moment.",
    p.ErrorCode.MODEL_LOAD_FAILED: "The bridge could not load the model ({detail}): {model_hint}.",
    p.ErrorCode.UNKNOWN_MODEL: "The bridge does not know that model ({detail}): pick one from the Model list.",
    p.ErrorCode.OUT_OF_MEMORY: "The bridge ran out of memory ({detail}): select a smaller region or scale the image down.",
    p.ErrorCode.TOO_LARGE: "The region is too large for the bridge ({detail}): select a smaller region.",
    p.ErrorCode.QUEUE_FULL: "The bridge is busy ({detail}): wait for its other jobs, then {run_again}.",
    p.ErrorCode.UNAUTHORIZED: "The bridge refused the connection ({detail}): check its token.",
    p.ErrorCode.CONNECTION: "Lost the bridge: {detail}.",
}


def describe_error(error: p.Error, *, choose_model: str, run_again: str) -> str:
    """The sentence for an error event from the bridge, with what to do next.

    ``choose_model`` says where the host lets the artist pick a model ("in the Img2Img dialog"), ``run_again`` how
    to retry ("run Img2Img again").
    """
    template = _ERROR_SENTENCES.get(error.code, "The bridge could not run the job: {detail}.")
    return template.format(
        detail=error.message.rstrip("."),
        model_hint=f"choose a model {choose_model}, or start the bridge with: img2img-bridge serve --model NAME",
        run_again=run_again,
    )


def describe_client_error(exc: ClientError) -> str:
    """The sentence for a failure to connect or send."""
    message = exc.message.rstrip(".")
    if exc.code is p.ErrorCode.CONNECTION and START_HINT not in message:
        message = f"{message}; {START_HINT}"
    return sentence(message)


def describe_disconnect(reason: str) -> str:
    """The sentence for a connection lost while a job ran."""
    reason = reason.rstrip(".")
    if START_HINT not in reason:
        reason = f"{reason}; {START_HINT}"
    return f"Lost the bridge before the job ended: {reason}."
