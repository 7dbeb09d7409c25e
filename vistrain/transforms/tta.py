"""Test-time augmentation: the views of a preprocessed batch whose predictions are averaged.

``flip``: the image and its mirror image (2 views).  ``flip+crops``: also the four corner crops
of 90 % of the side, each resized back to the input size (6 views), a cheap cousin of the
ten-crop evaluation of the ImageNet papers, made from the pixels the model already gets.  The
probabilities of the views are averaged (not the logits: a mean of probabilities stays a
probability and is the usual choice).

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> [tuple(v.shape) for v in tta_views(x, "flip")]
    [(2, 3, 32, 32), (2, 3, 32, 32)]
    >>> len(tta_views(x, "flip+crops")), torch.equal(tta_views(x, "flip")[1], x.flip(-1))
    (6, True)
"""
from __future__ import annotations

import torch
from torch import Tensor

from vistrain.config import TTA_MODES
from vistrain.transforms.functional.resample import crop_resize

CROP_FRACTION = 0.9


def corner_boxes(size: int, n: int, fraction: float = CROP_FRACTION) -> list[Tensor]:
    """``(n, 4)`` boxes ``(top, left, height, width)`` of the four corners of a ``size``-pixel
    square, each ``round(fraction * size)`` pixels wide."""
    side = max(1, int(round(fraction * size)))
    far = size - side
    return [torch.tensor([[top, left, side, side]] * n) for top, left in ((0, 0), (0, far), (far, 0), (far, far))]


def tta_views(x: Tensor, mode: str) -> list[Tensor]:
    """The views of ``x`` (N, C, S, S), uint8 or float, for ``mode`` in :data:`TTA_MODES`."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    views = [x]
    if mode == "none":
        return views
    views.append(x.flip(-1))
    if mode == "flip+crops":
        n, size = x.shape[0], x.shape[-1]
        no = torch.zeros(n, dtype=torch.bool)
        views += [crop_resize(x, boxes, no, no, (size, size)) for boxes in corner_boxes(size, n)]
    return views
