"""Mixing kernels: MixUp/CutMix of a batch with given partners, weights and boxes, and the
soft targets ``lam * y_i + (1 - lam) * y_j`` (the random draws are
:class:`~vistrain.transforms.ops.mix.BatchMix`'s).

Example:
    >>> import torch
    >>> x = torch.zeros(2, 1, 2, 2, dtype=torch.uint8); x[1] = 100
    >>> xm, t = mix_batch(x, torch.tensor([0, 1]), partner=torch.tensor([1, 0]),
    ...                   lam=torch.tensor([0.75, 1.0]), boxes=torch.zeros(2, 4),
    ...                   use_cutmix=torch.tensor([False, False]), num_classes=2)
    >>> xm[:, 0, 0, 0].tolist(), t.tolist()
    ([25, 100], [[0.75, 0.25], [0.0, 1.0]])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import from_work, to_work
from vistrain.transforms.functional.erasing import box_mask

def soft_targets(targets: Tensor, num_classes: int, label_smoothing: float = 0.0) -> Tensor:
    """(N,) class indices or (N, K) soft targets -> (N, K) float32 rows summing to 1."""
    if targets.dim() == 1:
        t = F.one_hot(targets.long(), num_classes).to(torch.float32)
    elif targets.dim() == 2 and targets.shape[1] == num_classes:
        t = targets.to(torch.float32)
    else:
        raise VistrainError(f"targets must be (N,) class indices or (N, {num_classes}) "
                            f"probabilities, got shape {tuple(targets.shape)}")
    return t * (1.0 - label_smoothing) + label_smoothing / num_classes if label_smoothing else t


def mix_batch(x: Tensor, targets: Tensor, partner: Tensor, lam: Tensor, boxes: Tensor,
              use_cutmix: Tensor, num_classes: int, label_smoothing: float = 0.0
              ) -> tuple[Tensor, Tensor]:
    """The pure kernel: mixed images (``x.dtype``) and soft targets (N, K).

    Args:
        x: (N, C, H, W) uint8 or float (any range for floats).
        targets: (N,) int or (N, K) soft.
        partner: (N,) long, the sample each one is mixed with.
        lam: (N,) weight of the sample's own image and label.
        boxes: (N, 4) pasted boxes for the CutMix samples (ignored for the others).
        use_cutmix: (N,) bool, paste the partner's box instead of blending.
    """
    xf = to_work(x)
    device = xf.device
    partner_d = partner.to(device)
    other = xf[partner_d]
    lam4 = lam.to(device=device, dtype=xf.dtype).view(-1, 1, 1, 1)
    blended = xf * lam4 + other * (1.0 - lam4)
    pasted = torch.where(box_mask(boxes, tuple(xf.shape[-2:]), device), other, xf)
    mixed = torch.where(use_cutmix.to(device).view(-1, 1, 1, 1), pasted, blended)
    t = soft_targets(targets.to(device), num_classes, label_smoothing)
    lam2 = lam.to(device=device, dtype=t.dtype).view(-1, 1)
    return from_work(mixed, x.dtype), t * lam2 + t[partner_d] * (1.0 - lam2)
