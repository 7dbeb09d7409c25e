"""Normalization layers for the from-scratch networks, built by name.

Every activation normalization computes ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` and
differs only in *which axes* of the ``(N, C, H, W)`` batch the mean and variance are taken over
(one mean/variance per remaining index).  ``gamma``/``beta`` are always one per channel here.

==========  ========================  ==================  =========================================
name        averages over             one statistic per   layer
==========  ========================  ==================  =========================================
batch       N, H, W                   channel             ``nn.BatchNorm2d`` (running stats at eval)
layer       C, H, W                   sample              ``nn.GroupNorm(1, C)``
instance    H, W                      sample x channel    ``nn.InstanceNorm2d(C, affine=True)``
group       C/G (within group), H, W  sample x group      ``nn.GroupNorm(G, C)``
weight      (none: reparametrises     (conv filter)       ``weight_norm`` on the conv, no layer
            the conv weight)
none        (nothing)                 -                   ``nn.Identity``
==========  ========================  ==================  =========================================

Why ``layer`` is ``GroupNorm(1, C)``: it normalizes each sample over all of ``(C, H, W)``, which is
exactly ``nn.LayerNorm([C, H, W])``, but its affine part is one ``gamma``/``beta`` per *channel*
rather than per ``(c, h, w)`` element, so the layer does not depend on the input resolution
(the usual choice for CNNs, e.g. in the GroupNorm paper, Wu & He 2018).

``weight`` is weight normalization (Salimans & Kingma 2016): the conv weight of each output filter
is written ``w = g * v / ||v||`` so its norm ``g`` is learnt separately from its direction; the
activations themselves are not normalized, so :func:`make_norm` returns ``nn.Identity`` and
:func:`make_conv` applies the parametrization.

Example:
    >>> import torch
    >>> from vistrain.models.norms import make_conv, make_norm
    >>> conv, norm = make_conv(3, 16, 3, norm="group"), make_norm("group", 16)
    >>> norm(conv(torch.randn(2, 3, 8, 8))).shape
    torch.Size([2, 16, 8, 8])
"""
from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrizations

from vistrain.errors import VistrainError

NORMS = ("batch", "layer", "instance", "group", "weight", "none")

#: Axes of an (N, C, H, W) batch that each normalization averages over (see the table above);
#: "C/G" means the channels of one group.
NORM_AXES: dict[str, tuple[str, ...]] = {
    "batch": ("N", "H", "W"),
    "layer": ("C", "H", "W"),
    "instance": ("H", "W"),
    "group": ("C/G", "H", "W"),
    "weight": (),
    "none": (),
}

DEFAULT_GROUPS = 8


def check_norm(name: str) -> str:
    """Return ``name`` if it is a known normalization, else raise a :class:`VistrainError`."""
    if name not in NORMS:
        raise VistrainError(f"unknown normalization {name!r}; valid: {', '.join(NORMS)}")
    return name


def default_groups(num_channels: int, groups: int | None = None) -> int:
    """The number of GroupNorm groups for ``num_channels``.

    ``groups=None`` picks the largest divisor of ``num_channels`` that is at most 8 (8 groups is a
    good default per Wu & He; narrow layers get fewer so every group has whole channels).

    Example:
        >>> default_groups(32), default_groups(12), default_groups(3)
        (8, 6, 3)
    """
    if groups is None:
        return max(g for g in range(1, min(DEFAULT_GROUPS, num_channels) + 1)
                   if num_channels % g == 0)
    if groups < 1 or num_channels % groups:
        raise VistrainError(f"group norm: {groups} groups do not divide {num_channels} channels; "
                            f"use a divisor of {num_channels}")
    return groups


def make_norm(name: str, num_channels: int, groups: int | None = None) -> nn.Module:
    """Build the activation normalization ``name`` for ``num_channels`` channels.

    Input and output are ``(N, C, H, W)``.  ``weight`` and ``none`` return ``nn.Identity`` (weight
    norm lives on the conv, see :func:`make_conv`).  ``groups`` only applies to ``group``.

    Example:
        >>> make_norm("layer", 16)
        GroupNorm(1, 16, eps=1e-05, affine=True, bias=True)
    """
    check_norm(name)
    if name == "batch":
        return nn.BatchNorm2d(num_channels)
    if name == "layer":
        return nn.GroupNorm(1, num_channels)
    if name == "instance":
        return nn.InstanceNorm2d(num_channels, affine=True)
    if name == "group":
        return nn.GroupNorm(default_groups(num_channels, groups), num_channels)
    return nn.Identity()


def make_conv(in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1,
              norm: str = "batch") -> nn.Module:
    """A ``kernel_size`` conv with "same" padding, ready to be followed by ``make_norm(norm, ...)``.

    The conv has a bias only when no normalization with a shift follows (``none``/``weight``):
    a bias before BatchNorm & co. is cancelled by the mean subtraction, so it would be a wasted
    parameter.  With ``norm="weight"`` the weight is reparametrised by
    ``torch.nn.utils.parametrizations.weight_norm`` (one magnitude ``g`` per output filter).
    Maps ``(N, in_chans, H, W)`` to ``(N, out_chans, ceil(H/stride), ceil(W/stride))``.
    """
    check_norm(norm)
    conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=kernel_size // 2,
                     bias=norm in ("none", "weight"))
    if norm == "weight":
        conv = parametrizations.weight_norm(conv)
    return conv
