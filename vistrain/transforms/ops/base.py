"""The op protocol: ``op.make_params(x, generator)`` draws, ``op.apply(x, params)`` is pure.

:class:`BatchOp` is every batch augmentation; :class:`GeometricOp` is one affine matrix per
sample, and :func:`warp_ops` applies a run of them as one resample (crops with flips on the
``uint8`` fast path of :mod:`~vistrain.transforms.functional.resample`, anything else one
``grid_sample``).  Params are a dict of tensors with a leading ``N`` dimension, replayable and
sliceable per sample (:func:`slice_params`).

Example:
    >>> import torch
    >>> from vistrain.transforms.ops.geometry import RandomRotation
    >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> op = RandomRotation(degrees=15, p=0.5)
    >>> params = op.make_params(x, torch.Generator().manual_seed(0))
    >>> y = op.apply(x, params)
    >>> y.shape, y.dtype, torch.equal(y, op.apply(x, params))
    (torch.Size([8, 3, 32, 32]), torch.uint8, True)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vistrain.transforms.functional.batch import Shape, batch_shape, from_work, to_work
from vistrain.transforms.functional.geometry import compose_thetas, warp_float
from vistrain.transforms.functional.resample import RESIZE_MODES, crop_boxes, crop_resize

Params = dict[str, Any]


def slice_params(params: Any, index: int | slice | Tensor) -> Any:
    """Select samples from (nested) params: every tensor with a leading N dim is indexed.

    Example: ``op.apply(x[i:i+1], slice_params(params, slice(i, i+1)))`` equals ``y[i:i+1]``.
    """
    if isinstance(params, Tensor):
        return params[index] if params.dim() > 0 else params
    if isinstance(params, dict):
        return {k: slice_params(v, index) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(slice_params(v, index) for v in params)
    return params


class BatchOp:
    """One batch augmentation: ``make_params`` (random, replayable) + ``apply`` (pure).

    Subclasses implement ``make_params(x, generator)`` and ``apply_float(xf, params)`` on a float
    [0, 1] batch; ``apply`` converts the dtype around it.  ``x`` in ``make_params`` may be the
    batch or just its shape ``(N, C, H, W)``.
    """

    geometric = False
    pointwise = False  # a function of each pixel's colour: may run before an enlarging crop

    def make_params(self, x: Tensor | Sequence[int],
                    generator: torch.Generator | None = None) -> Params:
        raise NotImplementedError

    def apply_float(self, xf: Tensor, params: Params) -> Tensor:
        raise NotImplementedError

    def apply(self, x: Tensor, params: Params) -> Tensor:
        return from_work(self.apply_float(to_work(x), params), x.dtype)

    def output_shape(self, shape: Sequence[int]) -> Shape:
        return batch_shape(shape)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(x, self.make_params(x, generator))

    def describe(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class GeometricOp(BatchOp):
    """An op that is one affine matrix per sample; pipelines fuse consecutive ones.

    ``padding`` None means the op never looks outside the image (flips, crops), so it can be fused
    with any neighbour; otherwise ``padding``/``fill`` say what shows where it does.
    """

    geometric = True
    padding: str | None = None
    fill: float | Sequence[float] = 0.0
    interpolation = "bilinear"
    antialias = False  # low-pass when a crop is shrunk (only on the crop fast path)

    def theta(self, params: Params, in_hw: tuple[int, int]) -> Tensor:
        raise NotImplementedError

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return in_hw

    def output_shape(self, shape: Sequence[int]) -> Shape:
        n, c, h, w = batch_shape(shape)
        return (n, c, *self.out_hw((h, w)))

    def apply(self, x: Tensor, params: Params) -> Tensor:
        y = warp_ops(x, [self], [params])
        return y if y.dtype == x.dtype else from_work(y, x.dtype)

    def apply_float(self, xf: Tensor, params: Params) -> Tensor:
        return warp_ops(xf, [self], [params])


def run_theta(ops: Sequence[GeometricOp], params: Sequence[Params], in_hw: tuple[int, int]
              ) -> tuple[Tensor, tuple[int, int]]:
    """The one (N, 3, 3) matrix of geometric ops applied in order, and their output size."""
    hw, thetas = tuple(in_hw), []
    for op, p in zip(ops, params):
        thetas.append(op.theta(p, hw))
        hw = op.out_hw(hw)
    return compose_thetas(thetas), hw


def warp_ops(x: Tensor, ops: Sequence[GeometricOp], params: Sequence[Params]) -> Tensor:
    """Apply geometric ops in order as one resample of ``x`` (uint8 or float [0, 1]).

    Crops with flips (axis-aligned, whole-pixel boxes inside the image) go through
    :func:`~vistrain.transforms.functional.resample.crop_resize` and keep the dtype (uint8 stays
    uint8, antialiased if an op asks for it); anything else is one ``grid_sample`` on the float
    batch and returns float [0, 1].
    """
    in_hw = tuple(x.shape[-2:])
    theta, hw = run_theta(ops, params, in_hw)
    interpolation = ops[0].interpolation
    found = crop_boxes(theta, in_hw) if interpolation in RESIZE_MODES else None
    if found is not None and not (hw == in_hw and bool((found[0][:, 2:] == found[0].new_tensor(
            in_hw)).all())):  # pure flips/identity: the exact indexing path below is cheaper
        return crop_resize(x, *found, out_hw=hw, interpolation=interpolation,
                           antialias=any(op.antialias for op in ops))
    framing = next((op for op in ops if op.padding is not None), None)
    padding = framing.padding if framing else "border"
    fill = framing.fill if framing else 0.0
    if found is not None and x.dtype == torch.uint8:
        return warp_float(x, theta, hw, padding, fill, interpolation)  # flips: exact on uint8
    return warp_float(to_work(x), theta, hw, padding, fill, interpolation)
