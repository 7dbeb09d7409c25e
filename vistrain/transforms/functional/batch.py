"""Batches and dtypes shared by every kernel: shape checks, the float working scale, subsets.

A batch ``x`` is ``(N, C, H, W)``, ``uint8`` (values 0..255) or floating point (values in
``[0, 1]``, the torchvision convention), on CPU or CUDA.  Kernels compute in float on the
``[0, 1]`` scale (:func:`to_work`) and convert back once (:func:`from_work`): ``uint8`` results
are rounded to the nearest level and saturate at 0 and 255.

Example:
    >>> import torch
    >>> x = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    >>> xf = to_work(x)
    >>> xf.dtype, torch.equal(from_work(xf, torch.uint8), x)
    (torch.float32, True)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from vistrain.errors import VistrainError

Shape = tuple[int, int, int, int]


def batch_shape(x: Tensor | Sequence[int]) -> Shape:
    """``(N, C, H, W)`` of a batch tensor or of a shape; anything else is a user error."""
    shape = tuple(int(s) for s in (x.shape if isinstance(x, Tensor) else x))
    if len(shape) != 4:
        raise VistrainError(f"augmentations take image batches (N, C, H, W), got shape {shape}; "
                            "add a batch dimension with x.unsqueeze(0)")
    return shape  # type: ignore[return-value]


def to_work(x: Tensor) -> Tensor:
    """Batch -> float on the [0, 1] scale (float32/64 input is returned as is, not copied)."""
    batch_shape(x)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.dtype in (torch.float32, torch.float64):
        return x
    if x.is_floating_point():  # half/bfloat16: compute in float32 for accuracy and CPU support
        return x.to(torch.float32)
    raise VistrainError(f"augmentations take uint8 or floating-point batches, got {x.dtype}; "
                        "convert with x.to(torch.uint8) or x.float() / 255")


def from_work(y: Tensor, dtype: torch.dtype) -> Tensor:
    """Inverse of :func:`to_work`: round and saturate for uint8, cast back for floats."""
    if dtype == torch.uint8:
        return y.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return y.to(dtype)


def on_subset(xf: Tensor, active: Tensor, fn: Callable[..., Tensor], *per_sample: Tensor) -> Tensor:
    """``fn(x_sub, *params_sub)`` on the samples where ``active``; the others pass unchanged.

    Skipping inactive samples makes "not applied" exactly the identity (an HSV round trip is not)
    and saves the work when ``p < 1``.
    """
    active = active.to("cpu")
    if bool(active.all()):
        return fn(xf, *(p.to(xf.device) for p in per_sample))
    if not bool(active.any()):
        return xf
    idx = active.nonzero().squeeze(1)
    out = xf.clone()
    dev_idx = idx.to(xf.device)
    out[dev_idx] = fn(xf[dev_idx], *(p[idx.to(p.device)].to(xf.device) for p in per_sample))
    return out


def fill_tensor(fill: float | Sequence[float], channels: int, like: Tensor) -> Tensor:
    """Fill value(s) on the [0, 1] scale -> (1, C, 1, 1); one value is used for all channels."""
    if isinstance(fill, (int, float)):
        values = [float(fill)] * channels
    else:
        values = [float(v) for v in fill]
    if len(values) != channels:
        raise VistrainError(f"fill has {len(values)} values but the images have {channels} "
                            "channels")
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, channels, 1, 1)
