"""Geometry kernels: per-sample affine matrices and one resample of the batch by them.

Geometric ops are affine matrices in normalised coordinates (``F.affine_grid`` convention, a
matrix maps *output* coordinates to *input* coordinates, ``align_corners=False``), so
consecutive ones multiply (:func:`compose_thetas`) and the batch is resampled once
(:func:`warp`).  The matrix builders take per-sample parameter tensors with a leading ``N``
dimension and return ``(N, 3, 3)``.  Crops with flips have a faster exact path in
:mod:`vistrain.transforms.functional.resample`.

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    >>> theta = compose_thetas([rotation_theta(torch.tensor([10.0, -5.0]), (16, 16)),
    ...                         scale_theta(torch.tensor([1.1, 0.9]))])
    >>> warp(x, theta, out_size=(12, 12)).shape
    torch.Size([2, 3, 12, 12])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vistrain.errors import VistrainError
from vistrain.transforms.functional.batch import fill_tensor, from_work, to_work

PADDINGS = ("fill", "reflect", "border")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def check_geometry(padding: str, interpolation: str) -> None:
    """A user error unless ``padding`` is in :data:`PADDINGS` and ``interpolation`` in
    :data:`INTERPOLATIONS`."""
    if padding not in PADDINGS:
        raise VistrainError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    if interpolation not in INTERPOLATIONS:
        raise VistrainError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                            f"got {interpolation!r}")


# -- affine matrices (output normalised coords -> input normalised coords) --------------------

def _eye(n: int, like: Tensor) -> Tensor:
    return torch.eye(3, dtype=torch.float32, device=like.device).repeat(n, 1, 1)


def rotation_theta(angle: Tensor, size: tuple[int, int]) -> Tensor:
    """(N,) degrees, counter-clockwise as torchvision, about the centre -> (N, 3, 3).

    The aspect factors keep the rotation rigid in pixels on non-square images.
    """
    h, w = size
    a = torch.deg2rad(angle.float())
    c, s = torch.cos(a), torch.sin(a)
    t = _eye(len(angle), angle)
    t[:, 0, 0], t[:, 0, 1] = c, -s * (h / w)
    t[:, 1, 0], t[:, 1, 1] = s * (w / h), c
    return t


def translation_theta(shift: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 2) shifts ``(dx, dy)`` in pixels (content moves right/down) -> (N, 3, 3)."""
    h, w = size
    t = _eye(len(shift), shift)
    t[:, 0, 2] = -2.0 * shift[:, 0].float() / w
    t[:, 1, 2] = -2.0 * shift[:, 1].float() / h
    return t


def scale_theta(scale: Tensor) -> Tensor:
    """(N,) zoom factors about the centre (> 1 enlarges the content) -> (N, 3, 3)."""
    t = _eye(len(scale), scale)
    t[:, 0, 0] = t[:, 1, 1] = 1.0 / scale.float()
    return t


def shear_theta(shear_x: Tensor, shear_y: Tensor, size: tuple[int, int]) -> Tensor:
    """(N,) shear factors about the centre (forward map x' = x + sx*y, y' = y + sy*x)."""
    h, w = size
    sx, sy = shear_x.float(), shear_y.float()
    det = 1.0 - sx * sy
    t = _eye(len(sx), sx)
    t[:, 0, 0], t[:, 0, 1] = 1.0 / det, -sx * (h / w) / det
    t[:, 1, 0], t[:, 1, 1] = -sy * (w / h) / det, 1.0 / det
    return t


def flip_theta(hflip: Tensor, vflip: Tensor) -> Tensor:
    """(N,) bools -> (N, 3, 3) diagonal +-1 matrices (exact flips, see :func:`warp`)."""
    t = _eye(len(hflip), hflip)
    t[:, 0, 0] = 1.0 - 2.0 * hflip.float()
    t[:, 1, 1] = 1.0 - 2.0 * vflip.float()
    return t


def crop_theta(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 4) boxes ``(top, left, height, width)`` in pixels of an (H, W) image -> (N, 3, 3).

    Resampling with this matrix to any output size is "crop the box, then resize".
    """
    h, w = size
    top, left, bh, bw = boxes.float().unbind(1)
    t = _eye(len(boxes), boxes)
    t[:, 0, 0], t[:, 0, 2] = bw / w, (2.0 * left + bw) / w - 1.0
    t[:, 1, 1], t[:, 1, 2] = bh / h, (2.0 * top + bh) / h - 1.0
    return t


def compose_thetas(thetas: Sequence[Tensor]) -> Tensor:
    """Matrices of ops applied in order 1, 2, ... -> one matrix: ``theta_1 @ theta_2 @ ...``.

    (An output pixel of the last op is mapped back through each op to the original input.)
    """
    out = thetas[0]
    for t in thetas[1:]:
        out = out @ t
    return out


# -- the resampling kernel --------------------------------------------------------------------

def _classify(theta: Tensor) -> Tensor:
    """(N,) 0 identity, 1 hflip, 2 vflip, 3 both, 4 general (needs grid_sample)."""
    a, t = theta[:, :2, :2], theta[:, :2, 2]
    axis = ((a[:, 0, 1] == 0) & (a[:, 1, 0] == 0) & (a[:, 0, 0].abs() == 1)
            & (a[:, 1, 1].abs() == 1) & (t == 0).all(1))
    kind = (a[:, 0, 0] < 0).long() + 2 * (a[:, 1, 1] < 0).long()
    return torch.where(axis, kind, torch.full_like(kind, 4))


def affine_grid(theta: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """``F.affine_grid(theta[:, :2], ..., align_corners=False)`` as two broadcast outer sums.

    The matrix is affine, so each grid coordinate is ``a * x + (b * y + c)``: cheaper than the
    batched matmul over a materialised (H*W, 3) base grid.
    """
    h, w = out_hw
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = ((torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1)[:, None]
    t = theta[:, :2, :, None, None]  # (N, 2, 3, 1, 1)
    gx = t[:, 0, 0] * xs + (t[:, 0, 1] * ys + t[:, 0, 2])
    gy = t[:, 1, 0] * xs + (t[:, 1, 1] * ys + t[:, 1, 2])
    return torch.stack([gx, gy], -1)


def _grid_sample(xf: Tensor, theta: Tensor, out_hw: tuple[int, int], padding: str,
                 fill: float | Sequence[float], interpolation: str) -> Tensor:
    n, c = xf.shape[:2]
    grid = affine_grid(theta.to(xf.dtype), out_hw)
    if padding != "fill":
        mode = "reflection" if padding == "reflect" else "border"
        y = F.grid_sample(xf, grid, mode=interpolation, padding_mode=mode, align_corners=False)
    else:
        fill_t = fill_tensor(fill, c, xf)
        if not bool((fill_t == 0).all()):
            # Resample a ones channel with the image: it is the in-image weight of each output
            # pixel, so one grid_sample also gives where (and how much) to blend in the fill.
            ones = xf.new_ones((n, 1) + tuple(xf.shape[2:]))
            y = F.grid_sample(torch.cat([xf, ones], 1), grid, mode=interpolation,
                              padding_mode="zeros", align_corners=False)
            y, weight = y[:, :c], y[:, c:]
            y = y + (1.0 - weight) * fill_t
        else:
            y = F.grid_sample(xf, grid, mode=interpolation, padding_mode="zeros",
                              align_corners=False)
    return y.clamp_(0.0, 1.0) if interpolation == "bicubic" else y


def warp_float(xf: Tensor, theta: Tensor, out_hw: tuple[int, int] | None = None,
               padding: str = "fill", fill: float | Sequence[float] = 0.0,
               interpolation: str = "bilinear") -> Tensor:
    """:func:`warp` on a float [0, 1] batch (no dtype conversion); may return ``xf`` itself."""
    h, w = xf.shape[-2:]
    out_hw = (h, w) if out_hw is None else tuple(out_hw)
    theta = theta.to(xf.device)
    if out_hw != (h, w):
        return _grid_sample(xf, theta, out_hw, padding, fill, interpolation)
    # Identity and pure axis flips are common (p < 1, flip-only pipelines): do them exactly
    # with indexing instead of interpolating.
    kind = _classify(theta).cpu()
    if bool((kind == 4).all()):
        return _grid_sample(xf, theta, out_hw, padding, fill, interpolation)
    if bool((kind == 0).all()):
        return xf
    out = xf.clone()
    for k, dims in ((1, (3,)), (2, (2,)), (3, (2, 3))):
        idx = (kind == k).nonzero().squeeze(1).to(xf.device)
        if len(idx):
            out[idx] = xf[idx].flip(dims)
    idx = (kind == 4).nonzero().squeeze(1).to(xf.device)
    if len(idx):
        out[idx] = _grid_sample(xf[idx], theta[idx], out_hw, padding, fill, interpolation)
    return out


def warp(x: Tensor, theta: Tensor, out_size: tuple[int, int] | None = None,
         padding: str = "fill", fill: float | Sequence[float] = 0.0,
         interpolation: str = "bilinear") -> Tensor:
    """Resample each sample with its affine matrix in one ``affine_grid`` + ``grid_sample``.

    Args:
        x: (N, C, H, W) uint8 or float batch.
        theta: (N, 3, 3) or (N, 2, 3) matrices mapping output to input normalised coordinates.
        out_size: (H_out, W_out); default the input size.
        padding: ``fill`` (constant ``fill``), ``reflect`` (mirror at the edge) or ``border``.
        fill: value(s) on the [0, 1] scale (0.5 is mid-grey, 128 in uint8).
        interpolation: ``nearest``, ``bilinear`` or ``bicubic``.

    Returns (N, C, H_out, W_out), ``x.dtype``.  Identity and flip matrices are applied exactly.

    Example:
        >>> x = torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3)
        >>> warp(x, flip_theta(torch.tensor([True]), torch.tensor([False])))[0, 0].tolist()
        [[2, 1, 0], [5, 4, 3]]
    """
    check_geometry(padding, interpolation)
    if theta.shape[1] == 2:
        theta = torch.cat([theta, theta.new_tensor([0.0, 0.0, 1.0]).expand(len(theta), 1, 3)], 1)
    return from_work(warp_float(to_work(x), theta, out_size, padding, fill, interpolation), x.dtype)
