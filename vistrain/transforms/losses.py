"""Losses for the soft ``(N, K)`` targets that MixUp/CutMix make (``(N,)`` indices work too).

Example:
    >>> import torch
    >>> logits, target = torch.zeros(2, 3), torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    >>> round(SoftTargetCrossEntropy()(logits, target).item(), 4)  # log 3
    1.0986
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistrain.errors import VistrainError


def soft_target_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """``-sum_k target_k * log_softmax(logits)_k`` per sample; (N,) int targets are one-hot.

    Computed in float32 at least, so AMP half logits do not lose the loss's precision.
    """
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    if target.dim() == 1:
        loss = -logp.gather(1, target.long().view(-1, 1)).squeeze(1)
    else:
        loss = -(target.to(logp.dtype) * logp).sum(dim=-1)
    return _reduce(loss, reduction)


def mixed_cross_entropy(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: Tensor | float,
                        reduction: str = "mean") -> Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``, lam scalar or (N,) per sample.

    Equal to :func:`soft_target_cross_entropy` on the mixed one-hot targets.
    """
    ce_a = soft_target_cross_entropy(logits, y_a, reduction="none")
    ce_b = soft_target_cross_entropy(logits, y_b, reduction="none")
    lam_t = torch.as_tensor(lam, dtype=ce_a.dtype, device=ce_a.device)
    return _reduce(lam_t * ce_a + (1.0 - lam_t) * ce_b, reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise VistrainError(f"reduction must be mean, sum or none, got {reduction!r}")


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy for soft (N, K) targets (or (N,) indices), mean over the batch."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_target_cross_entropy(logits, target, self.reduction)
