"""Resizing a PIL image to the model's square input, three ways.

Modes (``size`` is the model input side, e.g. 224):

``crop`` (default, what timm/torchvision evaluation does)
    Resize the *shorter* side to ``floor(size / crop_pct)`` keeping the aspect ratio, then take the
    centre ``size x size`` crop.  ``crop_pct=0.875`` reproduces the classic "resize 256, crop 224".
    Nothing is distorted; a border of the image is lost.
``stretch``
    Resize both sides to ``size`` independently.  Keeps the whole image, distorts its shape.
``letterbox``
    Resize the *longer* side to ``size``, pad the short side symmetrically with ``fill``.
    Keeps everything undistorted; wastes input pixels on padding.

Interpolation: ``nearest``, ``bilinear``, ``bicubic``, ``lanczos``.  PIL's filters (used by
torchvision for PIL inputs) widen their support by the scale factor when shrinking, i.e. they are
antialiased; ``nearest`` is never antialiased (by definition it picks one source pixel).

Example:
    >>> from PIL import Image
    >>> from vistrain.transforms.resize import resize_image
    >>> img = Image.new("RGB", (640, 480))
    >>> resize_image(img, 224, mode="crop", interpolation="bicubic", crop_pct=0.875).size
    (224, 224)
"""
from __future__ import annotations

import math

from PIL import Image

from vistrain.errors import VistrainError

RESIZE_MODES = ("crop", "stretch", "letterbox")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def pil_interpolation(name: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise VistrainError(f"unknown interpolation {name!r}; choose one of "
                            f"{', '.join(INTERPOLATIONS)}") from None


def crop_scale_size(size: int, crop_pct: float) -> int:
    """Shorter-side length before the centre crop (timm: ``floor(size / crop_pct)``)."""
    if not 0 < crop_pct <= 1:
        raise VistrainError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return math.floor(size / crop_pct)


def resize_image(img: Image.Image, size: int, *, mode: str = "crop", interpolation: str = "bicubic",
                 crop_pct: float = 0.875, fill: int = 0) -> Image.Image:
    """Return a ``size x size`` image made from ``img`` by ``mode`` (see the module docstring)."""
    resample = pil_interpolation(interpolation)
    if mode == "stretch":
        return img.resize((size, size), resample)
    if mode == "crop":
        return _shorter_side_center_crop(img, size, crop_scale_size(size, crop_pct), resample)
    if mode == "letterbox":
        return _letterbox(img, size, resample, fill)
    raise VistrainError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")


def shorter_side_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(w, h) scaled so that min(w, h) == short; torchvision's rounding (int, not round)."""
    if w <= h:
        return short, int(short * h / w)
    return int(short * w / h), short


def resize_shorter_side(img: Image.Image, short: int, resample) -> Image.Image:
    """``img`` resized so that its shorter side is ``short`` (unchanged if it already is)."""
    w, h = img.size
    new_w, new_h = shorter_side_size(w, h, short)
    return img if (new_w, new_h) == (w, h) else img.resize((new_w, new_h), resample)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The centre ``size x size`` crop, at torchvision.transforms.functional.center_crop's
    offsets (round half to even of a .5 value)."""
    w, h = img.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _shorter_side_center_crop(img: Image.Image, size: int, scale_size: int, resample) -> Image.Image:
    return center_crop(resize_shorter_side(img, scale_size, resample), size)


def _letterbox(img: Image.Image, size: int, resample, fill: int) -> Image.Image:
    w, h = img.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = img.resize((new_w, new_h), resample)
    colour = fill if img.mode == "L" else (fill,) * len(img.getbands())
    canvas = Image.new(img.mode, (size, size), colour)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas
