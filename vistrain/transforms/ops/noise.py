"""Gaussian noise with a per-sample sigma, replayable from per-sample seeds.

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    >>> op = GaussianNoise((0.0, 0.05), p=0.5)
    >>> params = op.make_params(x, torch.Generator().manual_seed(0))
    >>> sorted(params), op.apply(x, params).dtype
    (['seed', 'sigma'], torch.uint8)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from vistrain.transforms.functional.batch import batch_shape
from vistrain.transforms.functional.noise import noise_float
from vistrain.transforms.ops.base import BatchOp, Params
from vistrain.transforms.ops.sampling import check_prob, draw_gate, draw_seeds, span, uniform

class GaussianNoise(BatchOp):
    """Add Gaussian noise, sigma uniform in ``sigma`` ([0, 1] scale), with probability ``p``.

    Params ``{"sigma": (N,), "seed": (N,) int64}``: the noise itself is regenerated from the seeds.
    """

    def __init__(self, sigma: Sequence[float] = (0.0, 0.05), p: float = 0.5):
        self.sigma = span(sigma, "sigma", lower=0.0)
        self.p = check_prob(p)

    def make_params(self, x, generator=None) -> Params:
        n = batch_shape(x)[0]
        gate = draw_gate(n, self.p, generator)
        sigma = uniform(n, *self.sigma, generator)
        return {"sigma": torch.where(gate, sigma, torch.zeros_like(sigma)),
                "seed": draw_seeds(n, generator)}

    def apply_float(self, xf, params):
        return noise_float(xf, params["sigma"], params["seed"])

    def describe(self) -> str:
        return f"Gaussian noise sigma {self.sigma[0]:g}-{self.sigma[1]:g} (p={self.p:g})"
