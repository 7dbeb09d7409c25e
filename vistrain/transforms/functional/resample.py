"""Axis-aligned crop + resize + flip per sample, with torch's antialiased resize kernels.

A fused run of geometric ops (:class:`~vistrain.transforms.pipeline.AugmentPipeline`) is one
affine matrix per sample.  When every matrix is axis-aligned and maps the output onto a
whole-pixel box inside the image -- a random resized crop with flips, the standard training
recipe -- the resample is "cut the box, resize it, mirror it", and torch has fast kernels for
exactly that: ``F.interpolate`` on ``uint8`` channels-last images (the AVX2 kernel torchvision v2
uses, antialiased like PIL when shrinking).  That is ~6x faster than a general ``grid_sample`` on
the float batch at 224 px, keeps the data ``uint8``, and antialiases where ``grid_sample`` aliases.
Anything else (rotation, shear, boxes reaching outside the image) stays on ``grid_sample``.

Example:
    >>> import torch
    >>> from vistrain.transforms.functional.geometry import compose_thetas, crop_theta, flip_theta
    >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 4.0, 20.0, 24.0]])
    >>> theta = compose_thetas([crop_theta(boxes, (32, 32)),
    ...                         flip_theta(torch.tensor([False, True]), torch.tensor([False, False]))])
    >>> found = crop_boxes(theta, (32, 32))
    >>> found[0].tolist(), found[1].tolist()
    ([[0, 0, 16, 16], [8, 4, 20, 24]], [False, True])
    >>> crop_resize(x, *found, out_hw=(24, 24)).shape
    torch.Size([2, 3, 24, 24])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# A box edge recovered from a float32 matrix must sit this close (in pixels) to a whole pixel.
EDGE_TOLERANCE = 1e-3
RESIZE_MODES = ("bilinear", "bicubic")


def crop_boxes(theta: Tensor, in_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor] | None:
    """Read ``(boxes, hflip, vflip)`` off output->input matrices, or None if any is not a crop.

    Args:
        theta: (N, 3, 3) matrices in normalised coordinates (``F.affine_grid`` convention).
        in_hw: (H, W) of the input.

    Returns ``boxes`` (N, 4) int64 ``(top, left, height, width)`` and ``hflip``, ``vflip`` (N,)
    bool, when every matrix is diagonal (up to sign) and its box lies on whole pixels inside the
    image; None otherwise.
    """
    t = theta.detach().to("cpu", torch.float64)
    if bool((t[:, 0, 1] != 0).any() or (t[:, 1, 0] != 0).any()):
        return None
    h, w = in_hw
    ax, ay = t[:, 0, 0], t[:, 1, 1]
    # x_in = ax * x_out + cx over x_out in [-1, 1]: the box spans cx -+ |ax| (normalised)
    left = (t[:, 0, 2] - ax.abs() + 1.0) * (w / 2.0)
    top = (t[:, 1, 2] - ay.abs() + 1.0) * (h / 2.0)
    boxes = torch.stack([top, left, ay.abs() * h, ax.abs() * w], 1)
    whole = boxes.round()
    if bool(((boxes - whole).abs() > EDGE_TOLERANCE).any()):
        return None
    top, left, bh, bw = whole.unbind(1)
    if bool((top < 0).any() or (left < 0).any() or (bh < 1).any() or (bw < 1).any()
            or (top + bh > h).any() or (left + bw > w).any()):
        return None
    return whole.long(), ax < 0, ay < 0


def crop_resize(x: Tensor, boxes: Tensor, hflip: Tensor, vflip: Tensor, out_hw: tuple[int, int],
                interpolation: str = "bilinear", antialias: bool = True) -> Tensor:
    """Per sample: cut ``boxes[i]``, resize it to ``out_hw``, mirror it; same dtype as ``x``.

    Args:
        x: (N, C, H, W) uint8 or float batch, any device.
        boxes: (N, 4) whole-pixel ``(top, left, height, width)`` inside the image.
        hflip, vflip: (N,) bool, mirror the result left-right / top-bottom.
        out_hw: (H_out, W_out).
        interpolation: ``bilinear`` or ``bicubic`` (``F.interpolate``, ``align_corners=False``:
            the same sampling positions as ``grid_sample`` with the crop matrix).
        antialias: low-pass when shrinking (PIL/torchvision v2 style).

    uint8 results are rounded and saturated by torch's kernel; float results are clamped to
    [0, 1].  Returns (N, C, H_out, W_out), contiguous.
    """
    if interpolation not in RESIZE_MODES:
        raise ValueError(f"interpolation must be one of {RESIZE_MODES}, got {interpolation!r}")
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    out = x.new_empty((x.shape[0], x.shape[1], *out_hw))
    # torch's uint8 resize kernels are CPU ones (bilinear with or without antialias, bicubic
    # only antialiased); elsewhere uint8 is resized in float and rounded
    cpu = x.device.type == "cpu"
    native = x.is_floating_point() or cpu and (interpolation == "bilinear" or antialias)
    channels_last = x.dtype == torch.uint8 and cpu and x.shape[1] in (3, 4)
    for i, (top, left, bh, bw) in enumerate(boxes.tolist()):
        src = x[i:i + 1, :, top:top + bh, left:left + bw]
        if (bh, bw) != out_hw:
            src = _resize(src, out_hw, interpolation, antialias, native, channels_last)
        dims = [d for d, on in ((1, bool(vflip[i])), (2, bool(hflip[i]))) if on]  # (C, H, W)
        out[i].copy_(src[0].flip(dims) if dims else src[0])
    if out.is_floating_point():  # bicubic overshoots; antialiased weights sum to 1 +- 1 ulp
        out.clamp_(0.0, 1.0)
    return out


def _resize(src: Tensor, out_hw: tuple[int, int], mode: str, antialias: bool, native: bool,
            channels_last: bool) -> Tensor:
    if not native:  # no uint8 kernel for this mode/device: compute in float
        y = F.interpolate(src.float(), size=out_hw, mode=mode, antialias=antialias,
                          align_corners=False)
        return y.round_().clamp_(0, 255).to(torch.uint8)
    if channels_last:  # the vectorised uint8 kernel wants interleaved pixels
        src = src.contiguous(memory_format=torch.channels_last)
    return F.interpolate(src, size=out_hw, mode=mode, antialias=antialias, align_corners=False)


def interpolation_matrices(starts: Tensor, lengths: Tensor, in_size: int, out_size: int,
                           interpolation: str = "bilinear", flip: Tensor | None = None) -> Tensor:
    """(N, out_size, in_size) float32 matrices resizing ``[start, start + length)`` of an axis.

    Row ``i`` holds the weights ``F.interpolate`` (``align_corners=False``, no antialiasing)
    gives output pixel ``i`` of the cropped axis, with the crop folded in (indices clamped to the
    crop, as interpolating the cropped tensor clamps them); ``flip`` reverses the rows.
    ``bicubic`` is torch's (a = -0.75).  Meant for enlarging, where antialiasing does nothing.
    """
    n = len(starts)
    starts = starts.to("cpu", torch.float64).view(n, 1)
    lengths = lengths.to("cpu", torch.float64).view(n, 1)
    dst = torch.arange(out_size, dtype=torch.float64).expand(n, out_size)
    if flip is not None:  # row i of a flipped matrix is row out - 1 - i of the plain one
        dst = torch.where(flip.to("cpu").view(n, 1), out_size - 1 - dst, dst)
    src = (dst + 0.5) * (lengths / out_size) - 0.5  # (N, out)
    if interpolation == "bilinear":
        src = src.clamp(min=0.0)
        i0 = src.floor()
        lam = src - i0
        taps = [(i0, 1.0 - lam), (i0 + 1, lam)]
    elif interpolation == "bicubic":
        i0 = src.floor()
        t = src - i0
        taps = [(i0 + k, _cubic_weight(t - k)) for k in (-1, 0, 1, 2)]
    else:
        raise ValueError(f"interpolation must be one of {RESIZE_MODES}, got {interpolation!r}")
    m = torch.zeros(n, out_size, in_size, dtype=torch.float32)
    for idx, w in taps:
        idx = torch.minimum(idx.clamp(min=0.0), lengths - 1) + starts
        m.scatter_add_(2, idx.long().unsqueeze(2), w.to(torch.float32).unsqueeze(2))
    return m


def _cubic_weight(d: Tensor, a: float = -0.75) -> Tensor:
    """Keys' cubic convolution kernel at distance ``d`` (torch's upsample_bicubic2d, a=-0.75)."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def dense_is_cheap(in_hw: tuple[int, int], out_hw: tuple[int, int], budget: int = 64) -> bool:
    """Resizing with two dense matrix products costs ``H_in * W_in / H_out + H_in`` multiply-adds
    per output value (``W_in`` likewise): cheap for small sources (CIFAR's 32 px -> 224: 37)."""
    (h, w), (ho, wo) = in_hw, out_hw
    return h * w / ho + h <= budget and h * w / wo + w <= budget


def crop_resize_dense(xf: Tensor, boxes: Tensor, hflip: Tensor, vflip: Tensor,
                      out_hw: tuple[int, int], interpolation: str = "bilinear") -> Tensor:
    """:func:`crop_resize` of a float batch as two batched matrix products (no per-sample loop).

    ``out = My @ x @ Mx^T`` with :func:`interpolation_matrices`; exact for boxes no larger than
    ``out_hw`` (enlarging: no antialiasing needed).  Any per-channel affine map commutes with it,
    so normalising the small source first and resampling last gives normalized output directly.
    """
    n, _, h, w = xf.shape
    top, left, bh, bw = boxes.to("cpu").unbind(1)
    if h == w and out_hw[0] == out_hw[1]:  # both axes' matrices in one call: half the small ops
        m = interpolation_matrices(torch.cat([top, left]), torch.cat([bh, bw]), h, out_hw[0],
                                   interpolation, torch.cat([vflip.to("cpu"), hflip.to("cpu")]))
        my, mx = m[:n], m[n:]
    else:
        my = interpolation_matrices(top, bh, h, out_hw[0], interpolation, vflip)
        mx = interpolation_matrices(left, bw, w, out_hw[1], interpolation, hflip)
    my, mx = my.to(xf.device, xf.dtype), mx.to(xf.device, xf.dtype)
    rows = torch.matmul(my.unsqueeze(1), xf)                       # (N, C, out_h, w)
    # The second product as one bmm over (N, C*out_h, w) rows: matmul would first copy Mx^T
    # once per channel to broadcast it (~1 ms of a 64 x 224 px batch).
    out = torch.bmm(rows.reshape(n, -1, w), mx.transpose(1, 2))   # (N, C*out_h, out_w)
    return out.view(n, xf.shape[1], out_hw[0], out_hw[1])
