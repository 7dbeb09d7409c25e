"""MixUp and CutMix on batches, with soft targets and the matching losses.

Each sample ``i`` is mixed with a partner ``j = partner[i]`` (always another sample when
``N >= 2``) with its own ``lam ~ Beta(alpha, alpha)``; with both on, each sample uses CutMix with
probability ``switch_prob``.  CutMix's ``lam`` is the *kept* area fraction after the box is clipped
to the image, so the target weights equal the pixel fractions exactly.  Targets become soft
``(N, K)`` rows summing to 1: ``lam * y_i + (1 - lam) * y_j``.

Mixing is linear, so it may run on the uint8 batch (rounded to uint8) or on the normalised float
batch (no rounding, no clipping: values outside [0, 1] are fine).  Recommended training step::

    mix = BatchMix(num_classes, mixup_alpha=0.2, cutmix_alpha=1.0)   # or from build_augmentation
    loss_fn = SoftTargetCrossEntropy()
    x, target = mix(x, y, generator=g)        # x (N, C, H, W), y (N,) int -> target (N, K)
    loss = loss_fn(model(x), target)

Example:
    >>> import torch
    >>> mix = BatchMix(num_classes=3, mixup_alpha=0.4)
    >>> x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    >>> xm, target = mix(x, y, generator=torch.Generator().manual_seed(0))
    >>> target.shape, torch.allclose(target.sum(1), torch.ones(4))
    (torch.Size([4, 3]), True)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import batch_shape
from vistrain.transforms.functional.mix import mix_batch
from vistrain.transforms.ops.base import Params
from vistrain.transforms.ops.sampling import check_prob, generator_device, rand

def sample_beta(alpha: float, n: int, generator: torch.Generator | None) -> Tensor:
    """(n,) draws from Beta(alpha, alpha), reproducible from the torch generator.

    torch's Beta sampler takes no generator, so a seed drawn from ``generator`` seeds NumPy's.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator,
                             device=generator_device(generator)))
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.from_numpy(lam).to(torch.float32)


def cutmix_boxes(lam: Tensor, size: tuple[int, int], generator: torch.Generator | None) -> Tensor:
    """Boxes (N, 4) ``(top, left, height, width)`` of area ~ ``(1 - lam)``, clipped to the image.

    As in the CutMix paper: side ratio ``sqrt(1 - lam)``, centre uniform over the image.
    """
    h, w = size
    cut = torch.sqrt(1.0 - lam)
    ch, cw = (h * cut).floor(), (w * cut).floor()
    centre = (rand((len(lam), 2), generator).to(lam.device) * lam.new_tensor([h, w])).floor()
    top = (centre[:, 0] - (ch / 2).floor()).clamp(0, h)
    bottom = (centre[:, 0] + (ch / 2).floor()).clamp(0, h)
    left = (centre[:, 1] - (cw / 2).floor()).clamp(0, w)
    right = (centre[:, 1] + (cw / 2).floor()).clamp(0, w)
    return torch.stack([top, left, bottom - top, right - left], 1)


class BatchMix:
    """MixUp and/or CutMix with per-sample partners, weights and choice.

    Args:
        num_classes: K, the width of the soft targets.
        mixup_alpha: Beta(alpha, alpha) for MixUp; 0 disables.
        cutmix_alpha: Beta(alpha, alpha) for CutMix; 0 disables.
        switch_prob: with both on, probability that a sample uses CutMix.
        p: probability that a sample is mixed at all (others keep lam = 1).
        label_smoothing: applied to the targets before mixing.

    Params: ``{"partner": (N,) long, "lam": (N,), "cutmix": (N,) bool, "box": (N, 4)}`` where
    ``lam`` is the effective weight (CutMix: exact kept-area fraction).  A training loop that
    prefers index targets can use ``mixed_cross_entropy(logits, y, y[partner], lam)``.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 switch_prob: float = 0.5, p: float = 1.0, label_smoothing: float = 0.0):
        if num_classes < 1:
            raise VistrainError(f"num_classes must be >= 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0 or (mixup_alpha == 0 and cutmix_alpha == 0):
            raise VistrainError(f"mixup/cutmix alphas must be >= 0 with at least one > 0, got "
                                f"mixup={mixup_alpha}, cutmix={cutmix_alpha}")
        self.num_classes = int(num_classes)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.switch_prob = check_prob(switch_prob, "mix_switch_prob")
        self.p = check_prob(p)
        self.label_smoothing = check_prob(label_smoothing, "label_smoothing")

    def make_params(self, x: Tensor | tuple, generator: torch.Generator | None = None) -> Params:
        n, _, h, w = batch_shape(x)
        device = generator_device(generator)
        # pairing along a random cycle: everyone gets a partner other than itself
        order = torch.randperm(n, generator=generator, device=device)
        partner = torch.empty_like(order)
        partner[order] = order.roll(-1)
        gate = rand(n, generator) < self.p
        if self.mixup_alpha and self.cutmix_alpha:
            use_cut = rand(n, generator) < self.switch_prob
        else:
            use_cut = torch.full((n,), self.cutmix_alpha > 0, device=device)
        ones = torch.ones(n, device=device)
        lam_mix = sample_beta(self.mixup_alpha, n, generator).to(device) \
            if self.mixup_alpha else ones
        lam_cut = sample_beta(self.cutmix_alpha, n, generator).to(device) \
            if self.cutmix_alpha else ones
        boxes = cutmix_boxes(lam_cut, (h, w), generator)
        use_cut = use_cut & gate
        boxes = torch.where(use_cut[:, None], boxes, torch.zeros_like(boxes))
        kept = 1.0 - boxes[:, 2] * boxes[:, 3] / (h * w)
        lam = torch.where(use_cut, kept, torch.where(gate, lam_mix, ones))
        return {"partner": partner, "lam": lam, "cutmix": use_cut, "box": boxes}

    def apply(self, x: Tensor, targets: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return mix_batch(x, targets, params["partner"], params["lam"], params["box"],
                         params["cutmix"], self.num_classes, self.label_smoothing)

    def __call__(self, x: Tensor, targets: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
        return self.apply(x, targets, self.make_params(x, generator))

    def describe(self) -> str:
        parts = []
        if self.mixup_alpha:
            parts.append(f"MixUp (alpha {self.mixup_alpha:g})")
        if self.cutmix_alpha:
            parts.append(f"CutMix (alpha {self.cutmix_alpha:g})")
        switch = (f", CutMix for {self.switch_prob:.0%} of samples"
                  if self.mixup_alpha and self.cutmix_alpha else "")
        return " + ".join(parts) + switch + f" (p={self.p:g}); soft targets"

    def __repr__(self) -> str:
        return f"BatchMix({self.describe()})"


class MixUp(BatchMix):
    """MixUp only: ``BatchMix(num_classes, mixup_alpha=alpha)``."""

    def __init__(self, num_classes: int, alpha: float = 0.2, p: float = 1.0,
                 label_smoothing: float = 0.0):
        super().__init__(num_classes, mixup_alpha=alpha, p=p, label_smoothing=label_smoothing)


class CutMix(BatchMix):
    """CutMix only: ``BatchMix(num_classes, cutmix_alpha=alpha)``."""

    def __init__(self, num_classes: int, alpha: float = 1.0, p: float = 1.0,
                 label_smoothing: float = 0.0):
        super().__init__(num_classes, cutmix_alpha=alpha, p=p, label_smoothing=label_smoothing)
