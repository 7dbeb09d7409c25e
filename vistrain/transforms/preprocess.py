"""The exact evaluation preprocessing of a model, as one serialisable object.

:class:`Preprocess` is saved in ``model.json`` and re-applied verbatim by ``predict`` and
``evaluate``: the most common silent bug in deployed classifiers is preprocessing at inference
that differs from training (other resize, other statistics, BGR instead of RGB).

It has two stages, so that pixels can stay uint8 until the last moment:

1. :meth:`Preprocess.pixels` — file or PIL image -> ``(C, size, size)`` uint8 tensor
   (decode, EXIF, mode conversion, resize/crop); runs in data-loader workers.
2. :meth:`Preprocess.normalize` — uint8 batch -> normalized float batch; runs on the device.

Example:
    >>> from PIL import Image
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> pre = Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x = pre(Image.new("RGB", (64, 48), (255, 0, 0)))
    >>> tuple(x.shape), round(float(x[0, 0, 0]), 3)
    ((3, 32, 32), 1.0)
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from vistrain.transforms.normalize import normalize_batch
from vistrain.transforms.pixels import PixelPrep, pil_to_array


class Preprocess(PixelPrep):
    """:class:`~vistrain.transforms.pixels.PixelPrep` (the record, decode, resize) plus the torch
    stages: :meth:`pixels` (a uint8 tensor) and :meth:`normalize`."""

    # -- stage 1: pixels (decode and resize: PixelPrep) ------------------------------
    def pixels(self, source: str | Path | Image.Image) -> torch.Tensor:
        """``(C, size, size)`` uint8 tensor: decode + resize, no normalization."""
        return torch.from_numpy(self.array(source))

    # -- stage 2: normalize -------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` or ``(C, H, W)`` -> normalized float32 on x's device."""
        return normalize_batch(x, self.scale, self.mean, self.std)

    def __call__(self, source: str | Path | Image.Image) -> torch.Tensor:
        """File or PIL image -> normalized ``(C, size, size)`` float tensor."""
        return self.normalize(self.pixels(source))


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> ``(C, H, W)`` uint8 tensor (no copy of the pixel data beyond one)."""
    return torch.from_numpy(pil_to_array(img))
