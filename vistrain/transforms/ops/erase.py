"""Random erasing (cutout): one random box per sample, filled with a value or noise.

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    >>> op = RandomErasing(p=1.0, value="random")
    >>> params = op.make_params(x, torch.Generator().manual_seed(0))
    >>> params["box"].shape, op.apply(x, params).shape
    (torch.Size([4, 4]), torch.Size([4, 3, 16, 16]))
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import batch_shape
from vistrain.transforms.functional.erasing import erase_float
from vistrain.transforms.ops.base import BatchOp, Params
from vistrain.transforms.ops.sampling import check_prob, draw_gate, draw_seeds, sample_boxes, span

class RandomErasing(BatchOp):
    """Cutout / random erasing: fill one random box per sample with probability ``p``.

    The box has an area fraction in ``scale`` and aspect w/h in ``ratio`` (torchvision's search;
    no box after 10 tries means no erasing).  ``value``: a [0, 1]-scale value, one per channel,
    or ``"random"`` (uniform noise).  Params ``{"box": (N, 4), "seed": (N,)}``; box size 0 = off.
    """

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                 ratio: Sequence[float] = (0.3, 3.3), value: float | Sequence[float] | str = 0.0):
        self.p = check_prob(p)
        self.scale = span(scale, "scale", lower=0.0, upper=1.0)
        self.ratio = span(ratio, "ratio", lower=1e-3)
        if isinstance(value, str) and value != "random":
            raise VistrainError(f"erasing value must be a number, one per channel, or 'random', "
                                f"got {value!r}")
        self.value = value

    def make_params(self, x, generator=None) -> Params:
        n, _, h, w = batch_shape(x)
        gate = draw_gate(n, self.p, generator)
        boxes, found = sample_boxes(n, (h, w), self.scale, self.ratio, generator)
        keep = (gate & found)[:, None]
        return {"box": torch.where(keep, boxes, torch.zeros_like(boxes)),
                "seed": draw_seeds(n, generator)}

    def apply_float(self, xf, params):
        return erase_float(xf, params["box"], self.value, params["seed"])

    def describe(self) -> str:
        return (f"random erasing of {self.scale[0]:.0%}-{self.scale[1]:.0%} of the area "
                f"(value {self.value}, p={self.p:g})")
