"""Random draws for the ops' ``make_params``, and the checks of their arguments.

Draws are made on the generator's device (CPU by default, the global RNG when the generator is
None), so one seed gives the same parameters for CPU and CUDA batches.  Every draw is made
whatever ``p`` is (a gate, then the values), so ``p`` never shifts the random stream.

Example:
    >>> import torch
    >>> boxes, found = sample_boxes(4, (32, 32), (0.25, 1.0), (3 / 4, 4 / 3),
    ...                             torch.Generator().manual_seed(0))
    >>> boxes.shape, bool(found.all())
    (torch.Size([4, 4]), True)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vistrain.errors import VistrainError

def generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def rand(shape, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) on the generator's device (the global RNG when ``generator`` is None)."""
    return torch.rand(shape, generator=generator, device=generator_device(generator))


def uniform(shape, lo: float, hi: float, generator: torch.Generator | None) -> Tensor:
    return rand(shape, generator).mul_(hi - lo).add_(lo)


def draw_gate(n: int, p: float, generator: torch.Generator | None) -> Tensor:
    """(N,) bool: which samples the op applies to.  Always drawn, so p never shifts the stream."""
    return rand(n, generator) < p


def draw_seeds(n: int, generator: torch.Generator | None) -> Tensor:
    """(N,) int64 seeds for per-pixel noise, so noise is replayable and per-sample."""
    return torch.randint(0, 2**62, (n,), generator=generator, device=generator_device(generator))


def sample_boxes(n: int, size: tuple[int, int], scale: tuple[float, float],
                 ratio: tuple[float, float], generator: torch.Generator | None,
                 attempts: int = 10) -> tuple[Tensor, Tensor]:
    """torchvision's RandomResizedCrop box search, vectorised over the batch.

    Each sample draws ``attempts`` (area fraction, log-uniform aspect w/h) candidates at once and
    keeps the first that fits.  Returns boxes (N, 4) float ``(top, left, height, width)`` in whole
    pixels and ``found`` (N,) bool (boxes of not-found samples are meaningless).
    """
    h, w = size
    area = uniform((n, attempts), scale[0], scale[1], generator) * (h * w)
    aspect = torch.exp(uniform((n, attempts), math.log(ratio[0]), math.log(ratio[1]), generator))
    bw = torch.sqrt(area * aspect).round_()
    bh = torch.sqrt(area / aspect).round_()
    fits = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # first True; 0 when none fits
    bh, bw = bh.gather(1, first).squeeze(1), bw.gather(1, first).squeeze(1)
    u = rand((n, 2), generator)
    top = (u[:, 0] * (h - bh + 1)).floor_()
    left = (u[:, 1] * (w - bw + 1)).floor_()
    return torch.stack([top, left, bh, bw], 1), fits.any(1)


def span(value: float | Sequence[float], name: str, center: float = 0.0,
         lower: float | None = None, upper: float | None = None) -> tuple[float, float]:
    """A number ``v`` means ``(center - v, center + v)``; a pair is ``(lo, hi)``; then clipped."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise VistrainError(f"{name} must be >= 0, got {value}")
        lo, hi = center - float(value), center + float(value)
    else:
        lo, hi = (float(v) for v in value)
    lo = lo if lower is None else max(lo, lower)
    hi = hi if upper is None else min(hi, upper)
    if lo > hi:
        raise VistrainError(f"{name}: empty range ({lo}, {hi})")
    return lo, hi


def check_prob(p: float, name: str = "p") -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise VistrainError(f"{name} must be a probability in [0, 1], got {p}")
    return float(p)
