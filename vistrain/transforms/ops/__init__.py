"""Augmentation ops: thin classes that draw per-sample parameters and call the kernels.

``params = op.make_params(x, generator)`` draws (a dict of tensors with a leading ``N``
dimension, replayable), ``op.apply(x, params)`` is pure (:mod:`vistrain.transforms.functional`),
``op(x, generator=g)`` does both.  By family: :mod:`.geometry` (flips, rotation, translation,
scale, random resized crop), :mod:`.colour` (brightness, contrast, saturation, hue,
:class:`ColorJitter`), :mod:`.erase`, :mod:`.noise`, :mod:`.policies` (RandAugment,
TrivialAugment) and :mod:`.mix` (MixUp/CutMix, which also mix the targets).  The protocol is in
:mod:`.base`, the shared random draws in :mod:`.sampling`.

Example:
    >>> import torch
    >>> from vistrain.transforms.ops import RandomHorizontalFlip
    >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> y = RandomHorizontalFlip(0.5)(x, generator=torch.Generator().manual_seed(0))
    >>> y.shape, y.dtype
    (torch.Size([8, 3, 32, 32]), torch.uint8)
"""
from vistrain.transforms.ops.base import BatchOp, GeometricOp, Params, slice_params, warp_ops
from vistrain.transforms.ops.colour import (
    ColorJitter, RandomBrightness, RandomContrast, RandomHue, RandomSaturation,
)
from vistrain.transforms.ops.erase import RandomErasing
from vistrain.transforms.ops.geometry import (
    RandomHorizontalFlip, RandomResizedCrop, RandomRotation, RandomScale, RandomTranslate,
    RandomVerticalFlip,
)
from vistrain.transforms.ops.mix import BatchMix, CutMix, MixUp
from vistrain.transforms.ops.noise import GaussianNoise
from vistrain.transforms.ops.policies import RandAugment, TrivialAugment

__all__ = [
    "BatchMix", "BatchOp", "ColorJitter", "CutMix", "GaussianNoise", "GeometricOp", "MixUp",
    "Params", "RandAugment", "RandomBrightness", "RandomContrast", "RandomErasing",
    "RandomHorizontalFlip", "RandomHue", "RandomResizedCrop", "RandomRotation", "RandomSaturation",
    "RandomScale", "RandomTranslate", "RandomVerticalFlip", "TrivialAugment", "slice_params",
    "warp_ops",
]
