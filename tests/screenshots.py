"""The README's pictures: taken by the tests from the real programs, checked, and kept unless they changed.

A picture is rewritten only when it differs visibly from the one in ``docs/images`` (another size, or more
than ``CHANGED`` of its pixels differ), so clocks and job ids on a page do not churn the repository on every
run. ``IMG2IMG_REWRITE_SCREENSHOTS=1`` rewrites them anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from tests.served import ROOT

IMAGES = ROOT / "docs" / "images"
#: share of pixels that must differ (by more than ``NOTICEABLE`` in a channel) for a picture to count as changed
CHANGED = 0.03
NOTICEABLE = 24
#: the most a README picture may weigh
MAX_BYTES = 400_000


def checked(shot: Path, smallest: tuple[int, int], largest: tuple[int, int], colours: int = 16) -> PILImage.Image:
    """The picture at ``shot``, asserted to be a real one: its size within bounds, and not blank."""
    with PILImage.open(shot) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    assert smallest[0] <= width <= largest[0] and smallest[1] <= height <= largest[1], f"{shot.name} is {width}x{height}"
    grey = np.asarray(image.convert("L"))
    assert len(np.unique(grey)) >= colours, f"{shot.name} is nearly uniform: nothing was drawn"
    assert grey.std() > 8, f"{shot.name} has almost no contrast"
    return image


def changed(old: PILImage.Image, new: PILImage.Image) -> bool:
    if old.size != new.size:
        return True
    a, b = np.asarray(old.convert("RGB"), dtype=np.int16), np.asarray(new.convert("RGB"), dtype=np.int16)
    return float((np.abs(a - b).max(axis=2) > NOTICEABLE).mean()) > CHANGED


def keep(image: PILImage.Image, name: str) -> Path:
    """Write ``image`` as ``docs/images/NAME`` (an optimised PNG), unless the one there looks the same."""
    dest = IMAGES / name
    if dest.exists() and os.environ.get("IMG2IMG_REWRITE_SCREENSHOTS") != "1":
        with PILImage.open(dest) as old:
            if not changed(old, image):
                return dest
    IMAGES.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part.png")
    image.save(part, "PNG", optimize=True)
    assert part.stat().st_size <= MAX_BYTES, f"{name} would weigh {part.stat().st_size} bytes"
    part.replace(dest)
    return dest
