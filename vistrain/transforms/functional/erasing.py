"""Erasing kernels: fill one box per sample with a value or with seeded uniform noise.

Boxes are ``(N, 4)`` ``(top, left, height, width)`` in pixels; a box of size 0 leaves its sample
unchanged.  Noise comes from each sample's own seed, so a sample's result does not depend on its
batch.

Example:
    >>> import torch
    >>> x = torch.ones(1, 1, 3, 3)
    >>> box_mask(torch.tensor([[0, 1, 2, 2]]), (3, 3), x.device)[0, 0].int().tolist()
    [[0, 1, 1], [0, 1, 1], [0, 0, 0]]
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import fill_tensor, from_work, to_work

def box_mask(boxes: Tensor, size: tuple[int, int], device: torch.device) -> Tensor:
    """(N, 4) boxes ``(top, left, height, width)`` -> (N, 1, H, W) bool masks, vectorised."""
    h, w = size
    top, left, bh, bw = boxes.to(device).unbind(1)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


def erase_float(xf: Tensor, boxes: Tensor, value: float | Sequence[float] | str = 0.0,
                seeds: Tensor | None = None) -> Tensor:
    """Fill each sample's box with ``value`` (on [0, 1]) or, for ``"random"``, uniform noise."""
    if value != "random":
        mask = box_mask(boxes, tuple(xf.shape[-2:]), xf.device)
        return torch.where(mask, fill_tensor(value, xf.shape[1], xf), xf)
    if seeds is None:
        raise VistrainError("erase with value='random' needs per-sample seeds")
    out = xf.clone()
    for i, (t, l, bh, bw) in enumerate(boxes.to("cpu").long().tolist()):
        if bh > 0 and bw > 0:  # only erased samples pay for noise; each from its own seed
            g = torch.Generator(device=xf.device).manual_seed(int(seeds[i]))
            out[i, :, t:t + bh, l:l + bw] = torch.rand((xf.shape[1], bh, bw), generator=g,
                                                       device=xf.device, dtype=xf.dtype)
    return out


def erase(x: Tensor, boxes: Tensor, value: float | Sequence[float] | str = 0.0,
          seeds: Tensor | None = None) -> Tensor:
    """Fill boxes (N, 4) ``(top, left, height, width)`` with a [0, 1]-scale value or noise.

    >>> x = torch.ones(1, 1, 3, 3)
    >>> erase(x, torch.tensor([[0, 1, 2, 2]]))[0, 0].tolist()
    [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    """
    return from_work(erase_float(to_work(x), boxes, value, seeds), x.dtype)
