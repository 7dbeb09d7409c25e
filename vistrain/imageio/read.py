"""Robust image decoding: every file becomes an 8-bit RGB (or L) PIL image, or a clear error.

What is handled, and why:

* **EXIF orientation** is applied (phones store portrait photos as rotated landscape pixels).
* **Modes**: ``1``, ``L``, ``P``, ``I;16*``, ``I``, ``F``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and
  alpha modes ``LA``, ``PA``, ``RGBA`` are converted to RGB.  Alpha is composited on a stated
  background (white by default) instead of dropped: dropping alpha turns transparent regions into
  whatever colour the encoder left there, often black.  16-bit and 32-bit images are scaled by
  their *nominal* range (I;16 -> /257, I -> min/max of the image), not clipped at 255.
* **Bad files** (zero bytes, truncated, not an image, decompression bombs) raise
  :class:`~vistrain.errors.ImageLoadError` naming the file and the reason.
* **One size limit**: images above ``MAX_PIXELS`` (300 MP unless :func:`set_max_image_pixels`,
  the ``data.max_image_pixels`` setting, raises it) are refused as possible decompression bombs.
  Pillow's own guard (89.5 MP by default) is set to the same number; left alone it refused valid
  100 MP scans first, with a message quoting a limit they were below.
* **Reduced-scale JPEG decode** (``draft``): when the caller says how large the image must stay
  (``min_side``), JPEGs are decoded at 1/2, 1/4 or 1/8 scale directly by libjpeg while keeping the
  shorter side >= 1.5·min_side (``DRAFT_MARGIN``), so the final antialiased resize sees enough
  pixels, and never below 1/4 scale (libjpeg's 1/8 scale keeps only each 8x8 block's mean: a box
  filter that costs ~2.5 grey levels on detailed photos).  This is 2-4x faster for baseline
  multi-megapixel JPEGs (progressive JPEGs gain less: their entropy decoding, which dominates, is
  not reduced); the difference to full decode + resize is bounded in the tests and measured in
  ``benchmarks/decode.py``.
* **Large progressive JPEGs** (shorter side >= 8 * 8/7 * min_side) are decoded at 1/8 scale from
  their DC scans only (:mod:`vistrain.imageio.jpeg`; bit-identical to libjpeg's own 1/8 decode and
  7-14x faster than any full decode, whose entropy decoding of the AC scans dominates).  Cost:
  the 1/8 image is 8x8 block means, ~2-3 grey levels (mean absolute) from full decode + bicubic
  resize where the 1/4 path is ~0.6-1.1 (``benchmarks/jpeg_dc.py``).

Example:
    >>> from vistrain.imageio.read import load_image
    >>> img = load_image("examples/fashion-mnist-small/Bag/00000.png")  # doctest: +SKIP
    >>> img.mode                                                             # doctest: +SKIP
    'RGB'
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vistrain.imageio.jpeg import decode_dc_only
from vistrain.errors import ImageLoadError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm"}
# Larger than any real photo (18 MP cameras, 100 MP scans) but far below a decompression bomb.
DEFAULT_MAX_PIXELS = 300_000_000
# set_max_image_pixels also exports the limit in this variable, so that decode workers started
# with "spawn" (which import this module afresh) apply the same limit as the parent.
MAX_PIXELS_ENV = "VISTRAIN_MAX_IMAGE_PIXELS"
DEFAULT_BACKGROUND = (255, 255, 255)
# Reduced-scale JPEG decode keeps the shorter side >= DRAFT_MARGIN * min_side (see _draft).
DRAFT_MARGIN = 1.5
DRAFT_MAX_REDUCTION = 4   # 1/2 or 1/4 scale; 1/8 (DC coefficients only) is too coarse ...
# ... except for progressive JPEGs, whose AC scans cost 5-10x more to entropy-decode than the
# whole 1/8 image: there the DC scans alone are decoded when the 1/8 image still covers the eval
# resize (min_side / crop_pct, crop_pct >= 0.875) without enlarging it.
DC_MARGIN = 8 / 7


def _limit_from_environment() -> int:
    try:
        return max(1, int(os.environ.get(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)))
    except ValueError:
        return DEFAULT_MAX_PIXELS


MAX_PIXELS = _limit_from_environment()
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # one limit: Pillow's guard would otherwise fire at 89.5 MP


def set_max_image_pixels(n: int) -> None:
    """Refuse images with more than ``n`` pixels (width x height) from now on, in this process
    and in the decode workers it starts; sets Pillow's ``Image.MAX_IMAGE_PIXELS`` to the same ``n``.

    Raises:
        ValueError: ``n`` is not a whole number >= 1 (config validation reports it to the user).
    """
    global MAX_PIXELS
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"max_image_pixels must be a whole number >= 1, not {n!r}")
    MAX_PIXELS = int(n)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    os.environ[MAX_PIXELS_ENV] = str(MAX_PIXELS)


def max_image_pixels() -> int:
    """The current limit on width x height (see :func:`set_max_image_pixels`)."""
    return MAX_PIXELS


def is_image_file(path: str | Path) -> bool:
    """True for names with a known image extension (case-insensitive), hidden files excluded."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def load_image(path: str | Path, *, background=DEFAULT_BACKGROUND, min_side: int | None = None,
               grayscale: bool = False) -> Image.Image:
    """Decode ``path`` into an RGB (or ``L`` if ``grayscale``) PIL image.

    Args:
        path: image file.
        background: RGB colour that transparent pixels are composited on.
        min_side: if given, JPEGs may be decoded at reduced scale keeping the shorter side
            >= DRAFT_MARGIN * min_side (a margin keeps the later antialiased resize accurate).
        grayscale: return a single-channel ``L`` image.

    Raises:
        ImageLoadError: the file is empty, truncated, not an image or too large.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes); delete it or re-export the image")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            _check_size(path, img)
            if min_side and img.format == "JPEG":
                dc = _progressive_dc(path, img, min_side)
                if dc is not None:
                    img.close()
                    img = dc
                else:
                    _draft(img, min_side)
            img.load()
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file PIL can read; remove it from the data folder") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow refuses in Image.open, before _check_size sees the image: its message has the count
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_large(path, int(found.group(1)) if found else None) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(path, f"corrupt or truncated image ({err}); re-export or remove it") from None
    try:
        # exif_transpose copies the whole image even when there is nothing to do: ask first
        if img.getexif().get(0x0112, 1) not in (0, 1):
            img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the image: keep the stored orientation
        pass
    return to_rgb(img, background=background, grayscale=grayscale)


def _check_size(path: Path, img: Image.Image) -> None:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise _too_large(path, w * h, f"{w}x{h} = ")
    if w == 0 or h == 0:
        raise ImageLoadError(path, "image has zero width or height")


def _too_large(path: Path, pixels: int | None, dims: str = "") -> ImageLoadError:
    count = f"{dims}{pixels:,} pixels" if pixels else "more pixels than the limit"
    fix = f"--max-image-pixels {pixels}" if pixels else "--max-image-pixels N"
    return ImageLoadError(path, f"{count} exceeds the limit of {MAX_PIXELS:,} (a guard against "
                                f"decompression bombs); if the image is genuine, allow it with {fix}")


def _progressive_dc(path: Path, img: Image.Image, min_side: int) -> Image.Image | None:
    """1/8-scale decode of a large progressive JPEG from its DC scans (vistrain.imageio.jpeg), when
    the 1/8 image still reaches ``DC_MARGIN * min_side``; None otherwise (decode as usual)."""
    if not (img.info.get("progressive") or img.info.get("progression")):
        return None
    if min(img.size) // 8 < DC_MARGIN * min_side:
        return None
    return decode_dc_only(path, mode="RGB")


def _draft(img: Image.Image, min_side: int) -> None:
    """Ask libjpeg for the smallest DCT scale that keeps the shorter side >= DRAFT_MARGIN*min_side."""
    w, h = img.size
    scale = min(min(w, h) / (DRAFT_MARGIN * min_side), DRAFT_MAX_REDUCTION)
    if scale >= 2:
        img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))


def to_rgb(img: Image.Image, *, background=DEFAULT_BACKGROUND, grayscale: bool = False) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (or L), compositing alpha on ``background``."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _high_bit_depth_to_l(img)
    elif mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        img = Image.alpha_composite(canvas, rgba).convert("RGB")
    target = "L" if grayscale else "RGB"
    if img.mode == "CMYK":
        # PIL's CMYK->RGB is the naive 255-(c+k) formula; good enough without an ICC profile.
        img = img.convert("RGB")
    return img if img.mode == target else img.convert(target)


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float images to 8-bit L by their range (PIL's convert would clip)."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0  # full 16-bit range -> 0..255
    else:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
