"""Noise kernels: per-sample Gaussian noise regenerated from per-sample seeds.

Example:
    >>> import torch
    >>> x = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
    >>> y = add_noise(x, torch.tensor([0.0, 0.1]), torch.tensor([1, 2]))
    >>> torch.equal(y[0], x[0]), torch.equal(y, add_noise(x, torch.tensor([0.0, 0.1]),
    ...                                                    torch.tensor([1, 2])))
    (True, True)
"""
from __future__ import annotations

import torch
from torch import Tensor

from vistrain.transforms.functional.batch import from_work, to_work

def noise_float(xf: Tensor, sigma: Tensor, seeds: Tensor) -> Tensor:
    """Per-sample Gaussian noise; each sample's noise comes from its own seed.

    The loop is over noisy samples only: a private generator per sample is what makes a sample's
    noise independent of its batch (replayable one sample at a time).
    """
    sigma_cpu, seeds_cpu = sigma.to("cpu"), seeds.to("cpu")
    idx = (sigma_cpu > 0).nonzero().squeeze(1).tolist()
    if not idx:
        return xf
    out = xf.clone()
    for i in idx:
        g = torch.Generator(device=xf.device).manual_seed(int(seeds_cpu[i]))
        noise = torch.randn(xf.shape[1:], generator=g, device=xf.device, dtype=xf.dtype)
        out[i] = (xf[i] + float(sigma_cpu[i]) * noise).clamp_(0.0, 1.0)
    return out


def add_noise(x: Tensor, sigma: Tensor, seeds: Tensor) -> Tensor:
    """Add N(0, sigma^2) per sample; sigma (N,) on the [0, 1] scale, seeds (N,) int64."""
    return from_work(noise_float(to_work(x), sigma, seeds), x.dtype)
