"""Colour ops: brightness, contrast, saturation, hue, and :class:`ColorJitter` (all four).

They are ``pointwise`` (a function of each pixel's colour and of image-wide statistics), which
lets a pipeline run them before a crop that enlarges the image, on fewer pixels.

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    >>> jitter = ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
    >>> params = jitter.make_params(x, torch.Generator().manual_seed(0))
    >>> sorted(params), jitter.apply(x, params).dtype
    (['brightness', 'contrast', 'hue', 'saturation'], torch.uint8)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import batch_shape, on_subset
from vistrain.transforms.functional.colour import (brightness_float, colour_float,
                                                   contrast_float, hue_float, saturation_float)
from vistrain.transforms.ops.base import BatchOp, Params
from vistrain.transforms.ops.sampling import check_prob, draw_gate, span, uniform

class _ScalarPhotometric(BatchOp):
    """A pointwise op with one per-sample strength drawn uniformly from ``range``.

    Where the op is not applied the strength is ``neutral``, for which the kernel is the identity.
    """

    pointwise = True  # a function of each pixel's colour (and of image-wide statistics)

    key = "value"
    neutral = 0.0

    def __init__(self, value_range: tuple[float, float], p: float):
        self.range = value_range
        self.p = check_prob(p)

    def make_params(self, x, generator=None) -> Params:
        n = batch_shape(x)[0]
        gate = draw_gate(n, self.p, generator)
        v = uniform(n, *self.range, generator)
        return {self.key: torch.where(gate, v, torch.full_like(v, self.neutral))}

    def kernel(self, xf: Tensor, value: Tensor) -> Tensor:
        raise NotImplementedError

    def apply_float(self, xf, params):
        value = params[self.key]
        return on_subset(xf, value != self.neutral, self.kernel, value)


class RandomBrightness(_ScalarPhotometric):
    """Add a uniform ``delta`` in ``brightness`` (v -> (-v, v), [0, 1] scale): ``{"delta": (N,)}``.

    Additive, unlike torchvision's multiplicative brightness: it also lifts black pixels.
    """

    key, neutral = "delta", 0.0

    def __init__(self, brightness: float | Sequence[float] = 0.2, p: float = 1.0):
        super().__init__(span(brightness, "brightness", lower=-1.0, upper=1.0), p)

    def kernel(self, xf, value):
        return brightness_float(xf, value)

    def describe(self) -> str:
        return f"brightness {self.range[0]:+g} to {self.range[1]:+g} (p={self.p:g})"


class RandomContrast(_ScalarPhotometric):
    """Scale contrast about the per-image luma mean by a factor in ``contrast`` (v -> 1 +- v)."""

    key, neutral = "factor", 1.0

    def __init__(self, contrast: float | Sequence[float] = 0.2, p: float = 1.0):
        super().__init__(span(contrast, "contrast", center=1.0, lower=0.0), p)

    def kernel(self, xf, value):
        return contrast_float(xf, value)

    def describe(self) -> str:
        return f"contrast x{self.range[0]:g} to x{self.range[1]:g} (p={self.p:g})"


class RandomSaturation(_ScalarPhotometric):
    """Scale saturation (blend with luma) by a factor in ``saturation`` (v -> 1 +- v)."""

    key, neutral = "factor", 1.0

    def __init__(self, saturation: float | Sequence[float] = 0.2, p: float = 1.0):
        super().__init__(span(saturation, "saturation", center=1.0, lower=0.0), p)

    def kernel(self, xf, value):
        return saturation_float(xf, value)

    def describe(self) -> str:
        return f"saturation x{self.range[0]:g} to x{self.range[1]:g} (p={self.p:g})"


class RandomHue(_ScalarPhotometric):
    """Rotate hue by a uniform shift in ``hue`` turns (v -> (-v, v), within [-0.5, 0.5])."""

    key, neutral = "shift", 0.0

    def __init__(self, hue: float | Sequence[float] = 0.05, p: float = 1.0):
        lo, hi = span(hue, "hue")
        if lo < -0.5 or hi > 0.5:
            raise VistrainError(f"hue must lie in [-0.5, 0.5], got ({lo}, {hi})")
        super().__init__((lo, hi), p)

    def kernel(self, xf, value):
        return hue_float(xf, value)

    def describe(self) -> str:
        return f"hue {self.range[0]:+g} to {self.range[1]:+g} turns (p={self.p:g})"


class ColorJitter(BatchOp):
    """Brightness (additive), contrast, saturation, hue: per-sample strengths, this fixed order.

    Arguments as in :class:`RandomBrightness` etc.; 0 disables a part.  ``p`` gates all four
    together.  Params ``{"brightness", "contrast", "saturation", "hue"}``, each (N,).

    ``fused=True`` (default) applies the four as **one 3x3 colour matrix + offset per sample**,
    clamped once at the end (as NVIDIA DALI's colour twist does): brightness and saturation are
    exactly the kernels below, contrast blends with the image's mean luma, and hue is a rotation
    about the grey axis (:func:`hue_matrix`) rather than an HSV round trip.  One batched
    matmul instead of ~30 passes over the pixels: ~10x faster at 224 px.  It differs from
    ``fused=False`` only where an intermediate step would have clipped, and in the hue model.
    ``fused=False`` runs the exact kernels one after another, as torchvision (with HSV hue);
    unlike torchvision the order is fixed (cheaper to batch, replayable from params alone).
    """

    pointwise = True

    def __init__(self, brightness: float | Sequence[float] = 0.0,
                 contrast: float | Sequence[float] = 0.0,
                 saturation: float | Sequence[float] = 0.0,
                 hue: float | Sequence[float] = 0.0, p: float = 1.0, fused: bool = True):
        self.parts = {"brightness": RandomBrightness(brightness),
                      "contrast": RandomContrast(contrast),
                      "saturation": RandomSaturation(saturation), "hue": RandomHue(hue)}
        self.p = check_prob(p)
        self.fused = bool(fused)

    def make_params(self, x, generator=None) -> Params:
        n = batch_shape(x)[0]
        gate = draw_gate(n, self.p, generator)
        params = {}
        for name, part in self.parts.items():
            v = part.make_params(x, generator)[part.key]
            params[name] = torch.where(gate, v, torch.full_like(v, part.neutral))
        return params

    def apply_float(self, xf, params):
        if self.fused and xf.shape[1] == 3:
            values = [params[name] for name in self.parts]
            active = torch.zeros_like(values[0], dtype=torch.bool)
            for part, v in zip(self.parts.values(), values):
                active |= v != part.neutral
            return on_subset(xf, active, colour_float, *values)
        for name, part in self.parts.items():
            xf = part.apply_float(xf, {part.key: params[name]})
        return xf

    def describe(self) -> str:
        active = [part.describe().rsplit(" (p=", 1)[0] for part in self.parts.values()
                  if part.range != (part.neutral, part.neutral)]
        how = "one colour matrix" if self.fused else "sequential, HSV hue"
        return f"colour jitter: {', '.join(active) or 'nothing'} ({how}, p={self.p:g})"
