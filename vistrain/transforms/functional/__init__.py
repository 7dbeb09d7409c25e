"""Augmentation kernels: pure functions of a batch and per-sample parameters, no randomness.

A batch is ``(N, C, H, W)``, ``uint8`` or float on the ``[0, 1]`` scale, on CPU or CUDA; every
per-sample parameter has a leading ``N`` dimension.  By family:

* :mod:`.batch` -- shape checks, the float working scale (:func:`to_work`, :func:`from_work`).
* :mod:`.geometry` -- affine matrices and :func:`warp`, one resample by them.
* :mod:`.resample` -- the exact, antialiased fast path for crops with flips.
* :mod:`.colour` -- brightness, contrast, saturation, hue, the fused colour matrix, and the
  RandAugment photometric ops.
* :mod:`.erase`, :mod:`.noise` -- box erasing and Gaussian noise from per-sample seeds.
* :mod:`.mix` -- MixUp/CutMix of a batch and its soft targets.

Example:
    >>> import torch
    >>> from vistrain.transforms import functional as VF
    >>> x = torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3)
    >>> VF.warp(x, VF.flip_theta(torch.tensor([True]), torch.tensor([False])))[0, 0].tolist()
    [[2, 1, 0], [5, 4, 3]]
"""
from vistrain.transforms.functional.batch import (batch_shape, fill_tensor, from_work, on_subset,
                                                  to_work)
from vistrain.transforms.functional.colour import (
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, autocontrast_float, blend,
    brightness_float, colour_affine, colour_float, contrast_float, equalize_float, grayscale,
    hsv_to_rgb, hue_float, hue_matrix, posterize_float, rgb_to_hsv, saturation_float,
    sharpness_float, solarize_float,
)
from vistrain.transforms.functional.erasing import box_mask, erase, erase_float
from vistrain.transforms.functional.geometry import (
    INTERPOLATIONS, PADDINGS, affine_grid, compose_thetas, crop_theta, flip_theta, rotation_theta,
    scale_theta, shear_theta, translation_theta, warp, warp_float,
)
from vistrain.transforms.functional.mix import mix_batch, soft_targets
from vistrain.transforms.functional.noise import add_noise, noise_float
from vistrain.transforms.functional.resample import crop_boxes, crop_resize, crop_resize_dense

__all__ = [
    "INTERPOLATIONS", "PADDINGS", "add_noise", "adjust_brightness", "adjust_contrast",
    "adjust_hue", "adjust_saturation", "affine_grid", "autocontrast_float", "batch_shape", "blend",
    "box_mask", "brightness_float", "colour_affine", "colour_float", "compose_thetas",
    "contrast_float", "crop_boxes", "crop_resize", "crop_resize_dense", "crop_theta",
    "equalize_float", "erase", "erase_float", "fill_tensor", "flip_theta", "from_work",
    "grayscale", "hsv_to_rgb", "hue_float", "hue_matrix", "mix_batch", "noise_float", "on_subset",
    "posterize_float", "rgb_to_hsv", "rotation_theta", "saturation_float", "scale_theta",
    "sharpness_float", "shear_theta", "soft_targets", "solarize_float", "to_work",
    "translation_theta", "warp", "warp_float",
]
