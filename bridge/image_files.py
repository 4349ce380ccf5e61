"""Image files for the command line: inputs and masks read exactly, outputs checked before any work is done.

Pillow's own ``convert`` clips 16-bit and 32-bit grayscale to 255 (a 16-bit grayscale PNG becomes white) and
turns a coloured mask into luminance; here deep grayscale is scaled, and a mask must say what it means.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .editor import protocol as p

#: Pillow modes that hold one grayscale channel deeper than 8 bits, with the value that means white
_DEEP_GRAY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
#: formats Pillow writes without an alpha channel: results are flattened to RGB for them
_NO_ALPHA = ("JPEG", "MPO", "PPM", "PCX", "EPS", "SGI", "XBM", "DDS")


class ImageFileError(Exception):
    """A file the command cannot use; ``message`` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def read_image(path: Path) -> PILImage.Image:
    """The image at ``path`` as RGBA, 16-bit and float grayscale scaled to 8 bits (rounded)."""
    with _open(path) as image:
        if image.mode in _DEEP_GRAY:
            return _gray8(image).convert("RGBA")
        return image.convert("RGBA")


def read_mask(path: Path, size: tuple[int, int]) -> p.Mask:
    """A grayscale mask (white regenerates), or the alpha of an image with transparency (opaque regenerates).

    A coloured mask without transparency is refused: its meaning is a guess.
    """
    with _open(path) as image:
        if image.size != size:
            raise ImageFileError(f"the mask is {image.width}x{image.height} but the image is {size[0]}x{size[1]}")
        gray = _mask_channel(image, path)
    return p.Mask(width=gray.width, height=gray.height, data=gray.tobytes())


def _mask_channel(image: PILImage.Image, path: Path) -> PILImage.Image:
    if image.mode in _DEEP_GRAY:
        return _gray8(image)
    if image.mode in ("1", "L"):
        return image.convert("L")
    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    rgba = image.convert("RGBA")
    if has_alpha:
        alpha = rgba.getchannel("A")
        lowest, _ = alpha.getextrema()
        if isinstance(lowest, int) and lowest < 255:
            return alpha
    pixels = np.asarray(rgba.convert("RGB"))
    if not (np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])):
        raise ImageFileError(
            f"the mask {path} is coloured: save it as grayscale (white regenerates, black keeps) "
            "or with transparency (opaque regenerates, transparent keeps)"
        )
    return PILImage.fromarray(np.ascontiguousarray(pixels[..., 0]), "L")


def _gray8(image: PILImage.Image) -> PILImage.Image:
    white = _DEEP_GRAY[image.mode]
    values = np.asarray(image, dtype=np.float64)
    scaled = np.rint(np.clip(values, 0, white) * (255.0 / white))
    return PILImage.fromarray(scaled.astype(np.uint8), "L")


def _open(path: Path) -> PILImage.Image:
    try:
        image = PILImage.open(path)
        image.load()
    except FileNotFoundError:
        raise ImageFileError(f"{path} does not exist") from None
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise ImageFileError(f"could not read {path}: {exc}") from None
    return image


def check_limits(width: int, height: int, limits: p.Limits) -> str | None:
    """Why the bridge would refuse an image this size (from the limits in its welcome), or None."""
    megapixels = width * height / 1e6
    if width > limits.max_side or height > limits.max_side:
        return (
            f"the image is {width}x{height} but this bridge takes at most {limits.max_side} pixels a side: "
            "scale it down, or start the bridge with a larger serve --max-side"
        )
    if width * height > limits.max_pixels:
        return (
            f"the image is {width}x{height} ({megapixels:.1f} megapixels) but this bridge takes at most "
            f"{limits.max_pixels / 1e6:.1f} megapixels: scale it down, or start the bridge with a larger serve --max-pixels"
        )
    return None


def output_format(path: Path) -> str:
    """The Pillow format that ``path``'s extension names; raises ImageFileError when it cannot be written there."""
    PILImage.init()
    fmt = PILImage.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in PILImage.SAVE:
        what = f"'{path.suffix}' files" if path.suffix else "files without an extension"
        raise ImageFileError(f"--out {path}: cannot write {what}; use .png (keeps transparency), .webp, .tif or .jpg")
    folder = path.parent
    if path.is_dir():
        raise ImageFileError(f"--out {path} is a folder: give a file name, e.g. {path / 'out.png'}")
    if not folder.is_dir():
        raise ImageFileError(f"--out {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ImageFileError(f"--out {path}: the folder {folder} is not writable")
    return fmt


def save_image(image: PILImage.Image, path: Path) -> None:
    """Write ``image``, flattened to RGB for formats without alpha; raises ImageFileError when writing fails."""
    fmt = output_format(path)
    try:
        (image.convert("RGB") if fmt in _NO_ALPHA else image).save(path, fmt)
    except (OSError, ValueError) as exc:
        raise ImageFileError(f"could not write {path}: {exc}") from None
