"""Geometric ops: flips, rotation, translation, scale and random resized crop.

Each is one affine matrix per sample (:meth:`~vistrain.transforms.ops.base.GeometricOp.theta`),
so a pipeline fuses consecutive ones into one resample.  Not applied means the identity matrix
(angle 0, shift 0, scale 1), applied exactly.

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> op = RandomResizedCrop(24, scale=(0.5, 1.0))
    >>> params = op.make_params(x, torch.Generator().manual_seed(0))
    >>> params["box"].shape, op.apply(x, params).shape
    (torch.Size([4, 4]), torch.Size([4, 3, 24, 24]))
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import batch_shape
from vistrain.transforms.functional.geometry import (check_geometry, crop_theta, flip_theta,
                                                     rotation_theta, scale_theta,
                                                     translation_theta)
from vistrain.transforms.ops.base import GeometricOp, Params
from vistrain.transforms.ops.sampling import (check_prob, draw_gate, generator_device, rand,
                                              sample_boxes, span, uniform)

def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, float)):
        return int(size), int(size)
    return int(size[0]), int(size[1])


class RandomHorizontalFlip(GeometricOp):
    """Mirror left-right with probability ``p``; params ``{"flip": (N,) bool}``."""

    def __init__(self, p: float = 0.5):
        self.p = check_prob(p)

    def make_params(self, x, generator=None) -> Params:
        return {"flip": draw_gate(batch_shape(x)[0], self.p, generator)}

    def theta(self, params, in_hw):
        return flip_theta(params["flip"], torch.zeros_like(params["flip"]))

    def describe(self) -> str:
        return f"horizontal flip (p={self.p:g})"


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror top-bottom with probability ``p`` (satellite, microscopy); params ``{"flip"}``."""

    def theta(self, params, in_hw):
        return flip_theta(torch.zeros_like(params["flip"]), params["flip"])

    def describe(self) -> str:
        return f"vertical flip (p={self.p:g})"


class RandomRotation(GeometricOp):
    """Rotate by a uniform angle in ``degrees`` (v -> (-v, v)) with probability ``p``.

    Params ``{"angle": (N,) degrees}`` (0 where not applied).  Corners show ``fill`` ([0, 1] scale).
    """

    def __init__(self, degrees: float | Sequence[float] = 15.0, p: float = 1.0,
                 fill: float | Sequence[float] = 0.0, interpolation: str = "bilinear"):
        self.degrees = span(degrees, "degrees")
        self.p = check_prob(p)
        self.padding, self.fill, self.interpolation = "fill", fill, interpolation
        check_geometry(self.padding, interpolation)

    def make_params(self, x, generator=None) -> Params:
        n = batch_shape(x)[0]
        gate = draw_gate(n, self.p, generator)
        angle = uniform(n, *self.degrees, generator)
        return {"angle": torch.where(gate, angle, torch.zeros_like(angle))}

    def theta(self, params, in_hw):
        return rotation_theta(params["angle"], in_hw)

    def describe(self) -> str:
        lo, hi = self.degrees
        return f"rotation {lo:g} to {hi:g} degrees (p={self.p:g}, fill {self.fill})"


class RandomTranslate(GeometricOp):
    """Shift by whole pixels, up to ``max_shift`` of the width/height: "pad + random crop".

    ``max_shift`` is a fraction (or ``(fx, fy)``); shifts are uniform integers in
    ``[-round(f * size), round(f * size)]``.  ``padding="fill"`` pads with ``fill``,
    ``"reflect"`` mirrors the image.  Params ``{"shift": (N, 2) (dx, dy) pixels}``.
    """

    def __init__(self, max_shift: float | Sequence[float] = 0.125, p: float = 1.0,
                 padding: str = "fill", fill: float | Sequence[float] = 0.0):
        fx, fy = (max_shift, max_shift) if isinstance(max_shift, (int, float)) else max_shift
        if not (0 <= fx <= 1 and 0 <= fy <= 1):
            raise VistrainError(f"max_shift must be fractions in [0, 1], got {max_shift}")
        self.max_shift = (float(fx), float(fy))
        self.p = check_prob(p)
        self.padding, self.fill, self.interpolation = padding, fill, "bilinear"
        check_geometry(padding, "bilinear")

    def make_params(self, x, generator=None) -> Params:
        n, _, h, w = batch_shape(x)
        gate = draw_gate(n, self.p, generator)
        limit = torch.tensor([round(self.max_shift[0] * w), round(self.max_shift[1] * h)],
                             dtype=torch.float32, device=generator_device(generator))
        shift = (rand((n, 2), generator) * (2 * limit + 1)).floor_() - limit
        return {"shift": torch.where(gate[:, None], shift, torch.zeros_like(shift))}

    def theta(self, params, in_hw):
        return translation_theta(params["shift"], in_hw)

    def describe(self) -> str:
        fx, fy = self.max_shift
        edge = "mirrored edges" if self.padding == "reflect" else f"fill {self.fill}"
        return f"translation up to {fx:.0%} x {fy:.0%} of the size ({edge}, p={self.p:g})"


class RandomScale(GeometricOp):
    """Zoom about the centre by a uniform factor in ``scale`` (> 1 enlarges), keeping the size.

    Params ``{"scale": (N,)}`` (1 where not applied); zooming out shows ``fill``.
    """

    def __init__(self, scale: Sequence[float] = (0.9, 1.1), p: float = 1.0,
                 fill: float | Sequence[float] = 0.0, interpolation: str = "bilinear"):
        self.scale = span(scale, "scale", lower=1e-3)
        self.p = check_prob(p)
        self.padding, self.fill, self.interpolation = "fill", fill, interpolation
        check_geometry(self.padding, interpolation)

    def make_params(self, x, generator=None) -> Params:
        n = batch_shape(x)[0]
        gate = draw_gate(n, self.p, generator)
        s = uniform(n, *self.scale, generator)
        return {"scale": torch.where(gate, s, torch.ones_like(s))}

    def theta(self, params, in_hw):
        return scale_theta(params["scale"])

    def describe(self) -> str:
        return f"scale x{self.scale[0]:g} to x{self.scale[1]:g} (p={self.p:g})"


class RandomResizedCrop(GeometricOp):
    """Crop a random box (area fraction ``scale``, aspect w/h ``ratio``) and resize to ``size``.

    Boxes follow torchvision (10 tries, then a centre crop); ``size`` None keeps the input size.
    Params ``{"box": (N, 4) (top, left, height, width)}``.  ``antialias`` (default, as
    torchvision v2) low-passes boxes that are shrunk, using torch's resize kernels on the uint8
    batch (:mod:`~vistrain.transforms.functional.resample`); fused with a rotation or shear the
    crop is one ``grid_sample`` without antialiasing.
    """

    def __init__(self, size: int | Sequence[int] | None = None,
                 scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: str = "bilinear", antialias: bool = True):
        self.size = _pair(size)
        self.scale = span(scale, "scale", lower=0.0, upper=1.0)
        self.ratio = span(ratio, "ratio", lower=1e-3)
        self.interpolation = interpolation
        self.antialias = bool(antialias)
        check_geometry("border", interpolation)

    def out_hw(self, in_hw):
        return self.size or tuple(in_hw)

    def make_params(self, x, generator=None) -> Params:
        n, _, h, w = batch_shape(x)
        boxes, found = sample_boxes(n, (h, w), self.scale, self.ratio, generator)
        return {"box": torch.where(found[:, None], boxes, self._centre_box(h, w, boxes))}

    def _centre_box(self, h: int, w: int, like: Tensor) -> Tensor:
        """torchvision's fallback: the largest centred box with the aspect clamped to ``ratio``."""
        if w / h < self.ratio[0]:
            bw, bh = w, int(round(w / self.ratio[0]))
        elif w / h > self.ratio[1]:
            bh, bw = h, int(round(h * self.ratio[1]))
        else:
            bh, bw = h, w
        return like.new_tensor([(h - bh) // 2, (w - bw) // 2, bh, bw]).expand_as(like)

    def theta(self, params, in_hw):
        return crop_theta(params["box"], in_hw)

    def describe(self) -> str:
        to = f"{self.size[0]}x{self.size[1]}" if self.size else "the input size"
        return (f"random resized crop to {to} (area {self.scale[0]:.0%}-{self.scale[1]:.0%}, "
                f"aspect {self.ratio[0]:.2f}-{self.ratio[1]:.2f})")
