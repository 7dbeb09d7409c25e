"""The augmentation pipeline: ops in order, planned into stages that fuse and reorder them.

Planning (:meth:`AugmentPipeline._stages`): each run of consecutive geometric ops with the same
interpolation and compatible padding becomes one stage, resampled once through its composed
matrix (:func:`~vistrain.transforms.ops.base.warp_ops`); every other op is a stage of its own;
pointwise colour ops that follow a run which enlarges the image join that run's stage and are
applied before it, on the fewer source pixels.  :meth:`AugmentPipeline.apply_normalized` also
folds normalization into the last stage when it crops and enlarges a small image.

Example:
    >>> import torch
    >>> from vistrain.transforms.ops import ColorJitter, RandomHorizontalFlip, RandomResizedCrop
    >>> aug = AugmentPipeline([RandomResizedCrop(24), RandomHorizontalFlip(), ColorJitter(0.1)])
    >>> [(s.i, s.j) for s in aug._stages((4, 3, 32, 32))]  # crop + flip fused, then the colour
    [(0, 2), (2, 3)]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from vistrain.transforms.functional.batch import batch_shape, from_work, to_work
from vistrain.transforms.functional.resample import (RESIZE_MODES, crop_boxes,
                                                     crop_resize_dense, dense_is_cheap)
from vistrain.transforms.normalize import normalize_batch
from vistrain.transforms.ops.base import BatchOp, Params, run_theta, warp_ops

class _Stage(NamedTuple):
    """Ops ``i:j`` of a pipeline (one op or a fused geometric run), the pointwise ops
    ``first = (start, stop)`` moved before it, and the run's input/output (H, W)."""
    i: int
    j: int
    first: tuple[int, int] | None
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


class AugmentPipeline(BatchOp):
    """Ops in order, with each run of consecutive geometric ops fused into one resample.

    Geometric runs compose their matrices (one resample, one interpolation blur instead of
    several).  Fusion samples the original image, so where a later op looks outside an earlier
    crop it sees real pixels rather than fill.  Ops with different (non-None) padding/fill or
    interpolation start a new run.  A run that is a whole-pixel crop with flips (the random
    resized crop recipe) stays uint8 (:mod:`~vistrain.transforms.functional.resample`,
    antialiased); the batch turns float at the first op that needs it and back to the input dtype
    once at the end.

    **Order.**  Pointwise colour ops (``pointwise = True``: brightness, contrast, saturation, hue,
    :class:`ColorJitter`) that directly follow a run which *enlarges* the image (more output than
    input pixels: 32 px CIFAR cropped to 224) are applied before it, on the source pixels.
    Resampling commutes with them except through clamping and the contrast mean, which is then the
    whole source image's rather than the crop's.  Params: a list, one entry per op.  An empty
    pipeline returns its input unchanged.  :meth:`normalized` also normalizes, in one call.

    Example:
        >>> from vistrain.transforms.ops import ColorJitter, RandomHorizontalFlip, RandomResizedCrop
        >>> aug = AugmentPipeline([RandomResizedCrop(24, scale=(0.5, 1)), RandomHorizontalFlip(),
        ...                        ColorJitter(brightness=0.1, contrast=0.1)])
        >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> aug(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 24, 24])
    """

    def __init__(self, ops: Sequence[BatchOp] = (), fuse: bool = True):
        self.ops = list(ops)
        self.fuse = fuse

    def make_params(self, x, generator=None) -> list[Params]:
        shape, params = batch_shape(x), []
        for op in self.ops:  # each op draws for the size it will actually see
            params.append(op.make_params(shape, generator))
            shape = op.output_shape(shape)
        return params

    def output_shape(self, shape):
        shape = batch_shape(shape)
        for op in self.ops:
            shape = op.output_shape(shape)
        return shape

    def apply(self, x: Tensor, params: list[Params]) -> Tensor:
        if not self.ops:
            return x
        y = self._apply_any(x, params)
        return y if y.dtype == x.dtype else from_work(y, x.dtype)

    def apply_float(self, xf: Tensor, params: list[Params]) -> Tensor:
        return to_work(self._apply_any(xf, params))

    def _apply_any(self, y: Tensor, params: list[Params]) -> Tensor:
        """Run the ops; ``y`` stays uint8 through crop fast paths and turns float at the first
        op that needs it."""
        for stage in self._stages(batch_shape(y)):
            y = self._run_stage(y, stage, params)
        return y

    def _stages(self, shape) -> list["_Stage"]:
        """One :class:`_Stage` per op, or per fusable geometric run, with the pointwise colour
        ops that follow a run which enlarges the image: those are applied before it, on the
        fewer source pixels (see the class docstring)."""
        stages, i = [], 0
        while i < len(self.ops):
            geometric = self.ops[i].geometric
            j = k = self._run_end(i) if geometric else i + 1
            while geometric and k < len(self.ops) and self.ops[k].pointwise:
                k += 1
            out = self._run_shape(shape, i, j)
            first = (j, k) if k > j and out[2] * out[3] > shape[2] * shape[3] else None
            stages.append(_Stage(i, j, first, tuple(shape[2:]), tuple(out[2:])))
            shape, i = out, (k if first else j)
        return stages

    def _run_stage(self, y: Tensor, stage: "_Stage", params: list[Params]) -> Tensor:
        if not self.ops[stage.i].geometric:
            return self.ops[stage.i].apply_float(to_work(y), params[stage.i])
        if stage.first:
            y = self._pointwise(y, self.ops[slice(*stage.first)], params[slice(*stage.first)])
        return warp_ops(y, self.ops[stage.i:stage.j], params[stage.i:stage.j])

    def apply_normalized(self, x: Tensor, params: list[Params], scale: float, mean, std
                         ) -> Tensor:
        """``normalize_batch(self.apply(x, params), scale, mean, std)`` in one call: float32.

        ``x`` is uint8, or float on the [0, 1] scale (normalized as ``x * 255``, the uint8 scale
        that ``scale`` refers to).

        When the last stage crops and *enlarges* a small image (CIFAR's 32 px to 224), the small
        source is normalized first and resampled last, as two batched matrix products
        (:func:`~vistrain.transforms.functional.resample.crop_resize_dense`): one pass writes the
        output, and there is no uint8 rounding between augmentation and normalization (so results
        differ from the two-step call by at most that rounding, half a grey level).
        """
        stages = self._stages(batch_shape(x))
        dense = self._dense_crop(params, stages[-1]) if stages else None
        if dense is None:
            y = self.apply(x, params)
            return normalize_batch(y if y.dtype == torch.uint8 else y.mul(255.0), scale, mean, std)
        y = x
        for stage in stages[:-1]:
            y = self._run_stage(y, stage, params)
        last = stages[-1]
        if last.first:
            y = self._pointwise(y, self.ops[slice(*last.first)], params[slice(*last.first)],
                                round_back=False)
        y = normalize_batch(y.mul(255.0) if y.is_floating_point() else y, scale, mean, std)
        return crop_resize_dense(y, *dense, out_hw=last.out_hw,
                                 interpolation=self.ops[last.i].interpolation)

    def _dense_crop(self, params: list[Params], stage: "_Stage"):
        """``(boxes, hflip, vflip)`` when ``stage`` is a crop run that only enlarges a source
        small enough for :func:`~vistrain.transforms.functional.resample.dense_is_cheap`, else
        None."""
        ops = self.ops[stage.i:stage.j]
        if not ops[0].geometric or ops[0].interpolation not in RESIZE_MODES \
                or not dense_is_cheap(stage.in_hw, stage.out_hw):
            return None
        found = crop_boxes(run_theta(ops, params[stage.i:stage.j], stage.in_hw)[0], stage.in_hw)
        if found is None or bool((found[0][:, 2] > stage.out_hw[0]).any()
                                 or (found[0][:, 3] > stage.out_hw[1]).any()):
            return None  # some box shrinks: antialiasing matters, use the uint8 kernels
        return found

    def normalized(self, x: Tensor, scale: float, mean, std,
                   generator: torch.Generator | None = None) -> Tensor:
        """Draw params and :meth:`apply_normalized` (the training loop's one call)."""
        return self.apply_normalized(x, self.make_params(x, generator), scale, mean, std)

    def _run_shape(self, shape, i: int, j: int):
        for op in self.ops[i:j]:
            shape = op.output_shape(shape)
        return shape

    @staticmethod
    def _pointwise(y: Tensor, ops: Sequence[BatchOp], params: Sequence[Params],
                   round_back: bool = True) -> Tensor:
        """Pointwise ops on ``y``; back to uint8 if it was and ``round_back`` (the next resample
        is then uint8), else float [0, 1]."""
        yf = to_work(y)
        for op, p in zip(ops, params):
            yf = op.apply_float(yf, p)
        return from_work(yf, y.dtype) if round_back and y.dtype == torch.uint8 else yf

    def _run_end(self, i: int) -> int:
        """End (exclusive) of the fusable run of geometric ops starting at ``i``."""
        style = None
        interpolation = self.ops[i].interpolation
        j = i
        while j < len(self.ops) and self.ops[j].geometric and (self.fuse or j == i):
            op = self.ops[j]
            op_style = None if op.padding is None else (op.padding, repr(op.fill))
            if op.interpolation != interpolation or (style and op_style and op_style != style):
                break
            style = style or op_style
            j += 1
        return j

    def describe_lines(self) -> list[str]:
        return [op.describe() for op in self.ops]

    def describe(self) -> str:
        return "; ".join(self.describe_lines()) or "identity"
