"""Colour kernels: brightness, contrast, saturation, hue, the fused colour matrix, and the
RandAugment photometric ops (sharpness, posterize, solarize, autocontrast, equalize).

The ``*_float`` kernels take a float batch ``(N, C, H, W)`` on the ``[0, 1]`` scale and per-sample
strengths ``(N,)``, and return the same shape; the ``adjust_*`` wrappers take ``uint8`` or float
batches and keep the dtype.  Contrast uses the per-image luma mean; saturation and hue are the
identity on 1-channel images.

Example:
    >>> import torch
    >>> x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    >>> y = adjust_saturation(x, torch.tensor([0.0, 0.5, 1.0, 2.0]))
    >>> y.dtype, torch.equal(y[2], x[2])
    (torch.uint8, True)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vistrain.transforms.functional.batch import from_work, on_subset, to_work

# ITU-R 601 luma weights, written exactly as torchvision does so contrast/saturation agree.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


# -- brightness, contrast, saturation (float [0, 1] versions; public wrappers keep the dtype) --

def _col(v: Tensor, like: Tensor) -> Tensor:
    return v.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def grayscale(xf: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma, torchvision's formula and operation order."""
    r, g, b = xf.unbind(1)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]) \
        .unsqueeze(1)


def blend(xf: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * x + (1 - factor) * other`` clipped to [0, 1] (torchvision's ``_blend``).

    ``lerp`` does it in one pass and is exact at factor 1 (it returns ``x``).
    """
    return torch.lerp(other.expand_as(xf), xf, _col(factor, xf)).clamp_(0.0, 1.0)


def brightness_float(xf: Tensor, delta: Tensor) -> Tensor:
    return (xf + _col(delta, xf)).clamp_(0.0, 1.0)


def contrast_float(xf: Tensor, factor: Tensor) -> Tensor:
    luma = grayscale(xf) if xf.shape[1] == 3 else xf
    return blend(xf, luma.mean(dim=(1, 2, 3), keepdim=True), factor)


def saturation_float(xf: Tensor, factor: Tensor) -> Tensor:
    return xf if xf.shape[1] != 3 else blend(xf, grayscale(xf), factor)


# -- hue ---------------------------------------------------------------------------------------

def _hue_sextant(xf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, 3, H, W) RGB -> hue in sextants ``6 * h`` (any real, taken mod 6), max, max - min."""
    minc, maxc = torch.aminmax(xf, dim=1)
    delta = maxc - minc
    r, g, b = xf.unbind(1)
    r_max = maxc == r
    g_max = (maxc == g) & ~r_max
    h6 = torch.where(r_max, g - b, torch.where(g_max, b - r, r - g))
    h6.div_(torch.where(delta > 0, delta, torch.ones_like(delta)))
    h6 += torch.where(r_max, 0.0, torch.where(g_max, 2.0, 4.0))
    return h6, maxc, delta


_SEXTANT_OFFSETS = (5.0, 3.0, 1.0)  # R, G, B in the closed-form HSV -> RGB


def _from_sextant(h6: Tensor, maxc: Tensor, delta: Tensor) -> Tensor:
    """Closed-form HSV -> RGB: ``c_n = V - V*S*clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6h) mod 6`` for n = 5, 3, 1 and ``V*S = max - min``: all three channels in one
    broadcast pass instead of torchvision's stack-and-gather over six sectors."""
    offsets = torch.tensor(_SEXTANT_OFFSETS, dtype=h6.dtype, device=h6.device).view(1, 3, 1, 1)
    k = (h6.unsqueeze(1) + offsets).remainder_(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(1), delta.unsqueeze(1), ramp, value=-1.0)


def rgb_to_hsv(xf: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1) (same formulas as torchvision)."""
    h6, maxc, delta = _hue_sextant(xf)
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    return torch.stack([h6.div_(6.0).remainder_(1.0), s, maxc], 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`, (N, 3, H, W)."""
    h, s, v = hsv.unbind(1)
    return _from_sextant(h * 6.0, v, s * v)


def hue_float(xf: Tensor, shift: Tensor) -> Tensor:
    if xf.shape[1] != 3:
        return xf

    def rotate_hue(x: Tensor, turns: Tensor) -> Tensor:
        h6, maxc, delta = _hue_sextant(x)
        h6 += (6.0 * turns.to(x.dtype)).view(-1, 1, 1)
        return _from_sextant(h6, maxc, delta)

    return on_subset(xf, shift != 0, rotate_hue, shift)


def hue_matrix(shift: Tensor) -> Tensor:
    """(N,) hue shifts in turns -> (N, 3, 3) RGB rotations about the grey axis (1, 1, 1).

    Rodrigues' rotation by ``2 pi shift``, signed so that a positive shift moves red towards
    yellow as HSV hue does.  Grey stays grey and (r + g + b) / 3 is kept; colours move on a
    circle around the grey axis where HSV moves them along a hexagon, so the two agree in
    direction and size of the change but not pixel for pixel (measured in the tests).  A shift
    of 0 gives exactly the identity.
    """
    angle = 2.0 * math.pi * shift.detach().to("cpu", torch.float64)
    u = torch.full((3,), 3.0 ** -0.5, dtype=torch.float64)
    cross = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]],
                         dtype=torch.float64)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    m = c * torch.eye(3, dtype=torch.float64) + s * cross + (1.0 - c) * torch.outer(u, u)
    return torch.where((angle == 0).view(-1, 1, 1), torch.eye(3, dtype=torch.float64), m)


# -- all four as one colour matrix per sample -------------------------------------------------

def colour_affine(delta: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor,
                  mean_luma: Tensor) -> tuple[Tensor, Tensor]:
    """One per-sample affine colour map ``y = A x + b`` (float64, CPU) equal to brightness
    (additive ``delta``) -> contrast (about ``mean_luma``, the image's mean luma before
    brightness) -> saturation -> hue (:func:`hue_matrix`), with no clamping between the steps.

    Returns ``A`` (N, 3, 3) and ``b`` (N, 3).
    """
    cpu = {"device": "cpu", "dtype": torch.float64}
    d, c, s = (v.detach().to(**cpu).view(-1, 1, 1) for v in (delta, contrast, saturation))
    w = torch.tensor(GRAY_WEIGHTS, **cpu)
    sat = s * torch.eye(3, **cpu) + (1.0 - s) * w.expand(3, 3)  # rows: s*e_i + (1-s)*w
    hs = hue_matrix(hue) @ sat
    m1 = mean_luma.detach().to(**cpu).view(-1, 1, 1) + d * w.sum()  # mean luma after brightness
    b = (c * d + (1.0 - c) * m1) * hs.sum(2, keepdim=True)  # (N, 3, 1): offset times HS @ 1
    return c * hs, b.squeeze(2)


def colour_float(xf: Tensor, delta: Tensor, contrast: Tensor, saturation: Tensor,
                 hue: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue as one 3x3 matrix per sample, clamped once.

    (N, 3, H, W) float [0, 1] -> same.  One pass over the pixels (a batched matmul) instead of
    one per step and an HSV round trip: see :class:`ColorJitter`.
    """
    n = xf.shape[0]
    mean_luma = grayscale(xf.mean(dim=(2, 3), keepdim=True)).view(n)
    a, b = colour_affine(delta, contrast, saturation, hue, mean_luma)
    a, b = a.to(xf.device, xf.dtype), b.to(xf.device, xf.dtype)
    y = torch.baddbmm(b.unsqueeze(2), a, xf.reshape(n, 3, -1))
    return y.clamp_(0.0, 1.0).view_as(xf)


# -- dtype-keeping wrappers -------------------------------------------------------------------

def adjust_brightness(x: Tensor, delta: Tensor) -> Tensor:
    """Additive brightness ``x + delta`` per sample; delta (N,) on the [0, 1] scale.

    >>> x = torch.full((1, 1, 1, 1), 100, dtype=torch.uint8)
    >>> adjust_brightness(x, torch.tensor([0.1])).item()  # 100 + 25.5 -> 125.5 rounds to even
    126
    """
    return from_work(brightness_float(to_work(x), delta), x.dtype)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """``f * x + (1 - f) * mean`` with the per-image luma mean (torchvision's formula); (N,)."""
    return from_work(contrast_float(to_work(x), factor), x.dtype)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """``f * x + (1 - f) * luma`` per sample (identity for 1-channel images); factor (N,)."""
    return from_work(saturation_float(to_work(x), factor), x.dtype)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` (N,) turns in [-0.5, 0.5] through HSV (1 channel: identity)."""
    return from_work(hue_float(to_work(x), shift), x.dtype)


# -- the RandAugment photometric ops on float [0, 1] batches ----------------------------------

def sharpness_float(xf: Tensor, factor: Tensor) -> Tensor:
    """torchvision/PIL sharpness: blend with a 3x3 smoothed copy whose border is left as is."""
    n, c, h, w = xf.shape
    if h < 3 or w < 3:
        return xf
    kernel = torch.ones(3, 3, dtype=xf.dtype, device=xf.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    smooth = xf.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(xf, kernel, groups=c)
    return blend(xf, smooth, factor)


def posterize_float(xf: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``bits`` (n,) of each 8-bit level (the uint8 ``x & mask``); 8 bits: as is.

    (Float images are not snapped to 256 levels at 8 bits, so magnitude 0 is the identity.)
    """
    levels = xf.mul(255.0).round_()
    bits = bits.to(xf).view(-1, 1, 1, 1)
    step = torch.pow(2.0, 8.0 - bits)
    return torch.where(bits >= 8, xf, (levels - torch.remainder(levels, step)).div_(255.0))


def solarize_float(xf: Tensor, threshold: Tensor) -> Tensor:
    """Invert pixels ``>= threshold`` (n,) on the [0, 1] scale."""
    return torch.where(xf >= threshold.to(xf).view(-1, 1, 1, 1), 1.0 - xf, xf)


def autocontrast_float(xf: Tensor) -> Tensor:
    """Stretch each channel of each image to [0, 1] (flat channels are left alone)."""
    lo = xf.amin(dim=(-2, -1), keepdim=True)
    hi = xf.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), hi - lo)
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((xf - lo) / scale).clamp_(0.0, 1.0)


def equalize_float(xf: Tensor) -> Tensor:
    """Histogram equalisation per image and channel on 256 levels (PIL's algorithm), batched.

    One ``scatter_add_`` builds all histograms; the lookup table is
    ``(cumulative count before the level + step // 2) // step`` with
    ``step = (pixels - count of the top level) // 255``; step 0 means "leave as is".
    """
    n, c, h, w = xf.shape
    levels = xf.mul(255.0).round_().clamp_(0, 255).long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=xf.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    top_count = hist.gather(1, levels.amax(1, keepdim=True))
    step = (h * w - top_count) // 255
    valid = step > 0
    step = step.clamp(min=1)
    lut = ((hist.cumsum(1) - hist + step // 2) // step).clamp_(0, 255)
    out = torch.where(valid, lut.gather(1, levels), levels)
    return out.view(n, c, h, w).to(xf.dtype).div_(255.0)
