"""RandAugment and TrivialAugment on batches, with a per-sample choice of operation.

Each sample draws its own operation (and, for TrivialAugment, its own magnitude) in
``make_params``; ``apply`` then groups samples by operation -- one loop over the 14 operation
types, never over samples -- and all geometric choices of one layer share a single resample.

Magnitudes follow torchvision (``num_magnitude_bins=31``; a magnitude is a fraction ``m`` of the
maximum below, with a random sign for the signed ops), with two deliberate differences: shears
act about the image centre (torchvision: the top-left corner) and solarize is the identity at
magnitude 0 (torchvision inverts pure white), so RandAugment with magnitude 0 is the identity
apart from AutoContrast and Equalize, which have no magnitude.

==============  ==========================  ===========================
op              RandAugment max             TrivialAugment (wide) max
==============  ==========================  ===========================
ShearX/Y        0.3                         0.99
TranslateX/Y    150/331 of the width/height 32 pixels
Rotate          30 degrees                  135 degrees
Brightness,     factor 1 +- 0.9             factor 1 +- 0.99
Color (satur.),
Contrast,
Sharpness
Posterize       8 -> 4 bits                 8 -> 2 bits
Solarize        threshold 1 -> 0            threshold 1 -> 0
==============  ==========================  ===========================

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> ra = RandAugment(num_ops=2, magnitude=9)
    >>> params = ra.make_params(x, torch.Generator().manual_seed(0))
    >>> params["op"].shape, ra.apply(x, params).dtype
    (torch.Size([8, 2]), torch.uint8)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import batch_shape, on_subset
from vistrain.transforms.functional.colour import (autocontrast_float, blend, contrast_float,
                                                   equalize_float, posterize_float,
                                                   saturation_float, sharpness_float,
                                                   solarize_float)
from vistrain.transforms.functional.geometry import (rotation_theta, shear_theta,
                                                     translation_theta, warp_float)
from vistrain.transforms.ops.base import BatchOp, Params
from vistrain.transforms.ops.sampling import generator_device

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
       "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


class _Policy(BatchOp):
    """Shared machinery: params ``{"op": (N, L) long, "magnitude": (N, L) signed fraction}``."""

    shear_max = 0.3
    rotate_max = 30.0
    enhance_max = 0.9
    posterize_drop = 4

    def __init__(self, ops: Sequence[str] | None, num_magnitude_bins: int,
                 fill: float | Sequence[float], interpolation: str):
        self.ops = tuple(ops) if ops is not None else OPS
        unknown = sorted(set(self.ops) - set(OPS))
        if unknown or not self.ops:
            raise VistrainError(f"unknown augmentation policy ops {unknown or '(none given)'}; "
                                f"valid: {', '.join(OPS)}")
        if num_magnitude_bins < 2:
            raise VistrainError(f"num_magnitude_bins must be >= 2, got {num_magnitude_bins}")
        self.num_bins = int(num_magnitude_bins)
        self.fill, self.interpolation = fill, interpolation

    def translate_pixels(self, size: int) -> float:
        raise NotImplementedError

    def _draw(self, n: int, layers: int, bins: Tensor, generator) -> Params:
        """Op indices into ``OPS`` and signed magnitude fractions, one per sample and layer."""
        device = generator_device(generator)
        choice = torch.randint(0, len(self.ops), (n, layers), generator=generator, device=device)
        codes = torch.tensor([OPS.index(o) for o in self.ops], device=device)
        sign = torch.randint(0, 2, (n, layers), generator=generator, device=device) * 2 - 1
        magnitude = bins.float() / (self.num_bins - 1) * sign
        return {"op": codes[choice], "magnitude": magnitude}

    def apply_float(self, xf: Tensor, params: Params) -> Tensor:
        for layer in range(params["op"].shape[1]):
            xf = self._apply_layer(xf, params["op"][:, layer].cpu(),
                                   params["magnitude"][:, layer].cpu())
        return xf

    def _apply_layer(self, xf: Tensor, op: Tensor, m: Tensor) -> Tensor:
        xf = warp_float(xf, self._thetas(op, m, tuple(xf.shape[-2:])), None, "fill", self.fill,
                        self.interpolation)
        a = m.abs()
        enhance = 1.0 + self.enhance_max * m
        steps = {
            "Brightness": (lambda x, f: blend(x, torch.zeros_like(x), f), enhance),
            "Color": (saturation_float, enhance),
            "Contrast": (contrast_float, enhance),
            "Sharpness": (sharpness_float, enhance),
            "Posterize": (posterize_float, 8.0 - (a * self.posterize_drop).round()),
            # threshold > 1 (magnitude 0) inverts nothing: the op is the identity there
            "Solarize": (solarize_float, torch.where(a > 0, 1.0 - a, torch.full_like(a, 2.0))),
            "AutoContrast": (lambda x, _: autocontrast_float(x), a),
            "Equalize": (lambda x, _: equalize_float(x), a),
        }
        for name, (fn, value) in steps.items():
            xf = on_subset(xf, op == OPS.index(name), fn, value)
        return xf

    def _thetas(self, op: Tensor, m: Tensor, hw: tuple[int, int]) -> Tensor:
        """(N, 3, 3): the chosen geometric op per sample, identity for every other sample."""
        h, w = hw
        zero = torch.zeros_like(m)
        is_ = {name: (op == OPS.index(name)).view(-1, 1, 1) for name in GEOMETRIC}
        # torchvision translates by int(pixels): truncation toward zero
        tx = (m * self.translate_pixels(w)).trunc()
        ty = (m * self.translate_pixels(h)).trunc()
        candidates = {
            "ShearX": shear_theta(m * self.shear_max, zero, hw),
            "ShearY": shear_theta(zero, m * self.shear_max, hw),
            "TranslateX": translation_theta(torch.stack([tx, zero], 1), hw),
            "TranslateY": translation_theta(torch.stack([zero, ty], 1), hw),
            "Rotate": rotation_theta(m * self.rotate_max, hw),
        }
        theta = torch.eye(3).repeat(len(op), 1, 1)
        for name, t in candidates.items():
            theta = torch.where(is_[name], t, theta)
        return theta


class RandAugment(_Policy):
    """RandAugment: ``num_ops`` layers, each sample picks an op per layer, fixed ``magnitude``.

    Args:
        num_ops: operations per sample (N).
        magnitude: M in ``[0, num_magnitude_bins - 1]``; 0 is the identity (except
            AutoContrast/Equalize).
        ops: subset of :data:`OPS` (default all 14, torchvision's list).
        fill: value on the [0, 1] scale for pixels uncovered by geometric ops.

    Params: ``{"op": (N, num_ops) indices into OPS, "magnitude": (N, num_ops) in [-1, 1]}``.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 ops: Sequence[str] | None = None, fill: float | Sequence[float] = 0.0,
                 interpolation: str = "bilinear"):
        super().__init__(ops, num_magnitude_bins, fill, interpolation)
        if num_ops < 1:
            raise VistrainError(f"RandAugment num_ops must be >= 1, got {num_ops}")
        if not 0 <= magnitude < self.num_bins:
            raise VistrainError(f"RandAugment magnitude must be in [0, {self.num_bins - 1}], "
                                f"got {magnitude}")
        self.num_ops, self.magnitude = int(num_ops), int(magnitude)

    def translate_pixels(self, size: int) -> float:
        return 150.0 / 331.0 * size

    def make_params(self, x, generator=None) -> Params:
        n = batch_shape(x)[0]
        bins = torch.full((n, self.num_ops), self.magnitude, device=generator_device(generator))
        return self._draw(n, self.num_ops, bins, generator)

    def describe(self) -> str:
        return f"RandAugment ({self.num_ops} ops per image, magnitude {self.magnitude}/" \
               f"{self.num_bins - 1})"


class TrivialAugment(_Policy):
    """TrivialAugment (wide): one op per sample with a per-sample uniform magnitude bin.

    Params: ``{"op": (N, 1), "magnitude": (N, 1) in [-1, 1]}``.
    """

    shear_max = 0.99
    rotate_max = 135.0
    enhance_max = 0.99
    posterize_drop = 6

    def __init__(self, num_magnitude_bins: int = 31, ops: Sequence[str] | None = None,
                 fill: float | Sequence[float] = 0.0, interpolation: str = "bilinear"):
        super().__init__(ops, num_magnitude_bins, fill, interpolation)

    def translate_pixels(self, size: int) -> float:
        return 32.0

    def make_params(self, x, generator=None) -> Params:
        n = batch_shape(x)[0]
        bins = torch.randint(0, self.num_bins, (n, 1), generator=generator,
                             device=generator_device(generator))
        return self._draw(n, 1, bins, generator)

    def describe(self) -> str:
        return "TrivialAugment (1 op per image, random magnitude)"
