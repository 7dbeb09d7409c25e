"""Augmentation presets: ``AugmentConfig`` -> a batch pipeline and an optional batch mixer.

Presets (all run on the uint8 batch, already at the model input size, before normalisation):

=========  ==============================================================================
preset     contents
=========  ==============================================================================
none       nothing (the batch is returned unchanged)
light      random resized crop (area 75-100%), horizontal flip, brightness +-0.1,
           contrast x0.9-1.1
medium     random resized crop (area 40-100%), horizontal flip, rotation +-10 degrees,
           colour jitter (brightness +-0.2, contrast/saturation x0.8-1.2, hue +-0.02)
heavy      random resized crop (area 20-100%), horizontal flip, rotation +-20 degrees,
           colour jitter (brightness +-0.3, contrast/saturation x0.7-1.3, hue +-0.05),
           Gaussian noise (sigma up to 0.04, p=0.3), random erasing (p=0.25)
=========  ==============================================================================

Domain switches in ``AugmentConfig`` override the preset: ``hflip: false`` for text and digits
(mirrored letters are other letters), ``vflip: true`` for satellite/microscopy images (no "up"),
``rotation: 0`` to disable or ``rotation: 90`` for orientation-free images.  ``policy``
(randaugment | trivialaugment) replaces the colour jitter (as timm does: the policy already
varies colour) and ``mixup``/``cutmix`` > 0 add a :class:`~vistrain.transforms.ops.mix.BatchMix`.

Training loop::

    augment, mix = build_augmentation(cfg.augment, input_size=224, num_classes=len(classes))
    g = torch.Generator().manual_seed(cfg.train.seed)
    loss_fn = SoftTargetCrossEntropy()            # accepts (N,) indices and (N, K) soft targets
    for x, y in loader:                           # x: (N, C, H, W) uint8
        x = augment(x.to(device), generator=g)    # uint8 in, uint8 out
        x = normalize(x)                          # float, on the device
        target = y
        if mix is not None:
            x, target = mix(x, y, generator=g)    # target: (N, K), rows sum to 1
        loss = loss_fn(model(x), target)

Example:
    >>> from vistrain.config import AugmentConfig
    >>> augment, mix = build_augmentation(AugmentConfig(preset="light", hflip=False), 32, 3)
    >>> for line in describe(AugmentConfig(preset="light", hflip=False), 32):
    ...     print(line)
    random resized crop to 32x32 (area 75%-100%, aspect 0.75-1.33)
    colour jitter: brightness -0.1 to +0.1, contrast x0.9 to x1.1 (one colour matrix, p=1)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vistrain.config import AugmentConfig
from vistrain.errors import VistrainError
from vistrain.transforms.ops.base import BatchOp
from vistrain.transforms.ops.colour import ColorJitter
from vistrain.transforms.ops.erase import RandomErasing
from vistrain.transforms.ops.geometry import (RandomHorizontalFlip, RandomResizedCrop,
                                              RandomRotation, RandomVerticalFlip)
from vistrain.transforms.ops.mix import BatchMix
from vistrain.transforms.ops.noise import GaussianNoise
from vistrain.transforms.ops.policies import RandAugment, TrivialAugment
from vistrain.transforms.pipeline import AugmentPipeline


@dataclass(frozen=True)
class Preset:
    crop_scale: tuple[float, float] | None   # random resized crop area range; None: no crop
    hflip: bool
    rotation: float                          # degrees; 0: none
    jitter: tuple[float, float, float, float] | None  # brightness, contrast, saturation, hue
    noise_sigma: float = 0.0                 # max sigma of Gaussian noise (p=0.3); 0: none
    erasing: float = 0.0                     # probability of random erasing; 0: none


PRESETS: dict[str, Preset] = {
    "none": Preset(crop_scale=None, hflip=False, rotation=0.0, jitter=None),
    "light": Preset(crop_scale=(0.75, 1.0), hflip=True, rotation=0.0, jitter=(0.1, 0.1, 0.0, 0.0)),
    "medium": Preset(crop_scale=(0.4, 1.0), hflip=True, rotation=10.0,
                     jitter=(0.2, 0.2, 0.2, 0.02)),
    "heavy": Preset(crop_scale=(0.2, 1.0), hflip=True, rotation=20.0,
                    jitter=(0.3, 0.3, 0.3, 0.05), noise_sigma=0.04, erasing=0.25),
}
POLICIES = ("none", "randaugment", "trivialaugment")
JITTERS = ("matrix", "hsv")  # ColorJitter(fused=True) | ColorJitter(fused=False)


def _check(cfg: AugmentConfig) -> Preset:
    if cfg.preset not in PRESETS:
        raise VistrainError(f"augment.preset must be one of {', '.join(PRESETS)}, "
                            f"got {cfg.preset!r}")
    if cfg.policy not in POLICIES:
        raise VistrainError(f"augment.policy must be one of {', '.join(POLICIES)}, "
                            f"got {cfg.policy!r}")
    for key in ("hflip", "vflip"):
        if getattr(cfg, key) not in (None, True, False):
            raise VistrainError(f"augment.{key} must be true, false or null (the preset's "
                                f"choice), got {getattr(cfg, key)!r}")
    if cfg.rotation is not None and not 0 <= float(cfg.rotation) <= 180:
        raise VistrainError(f"augment.rotation must be degrees in [0, 180], got {cfg.rotation}")
    if cfg.mixup < 0 or cfg.cutmix < 0:
        raise VistrainError(f"augment.mixup and augment.cutmix are Beta alphas >= 0 (0 disables), "
                            f"got {cfg.mixup} and {cfg.cutmix}")
    if cfg.jitter not in JITTERS:
        raise VistrainError(f"augment.jitter must be one of {', '.join(JITTERS)}, got {cfg.jitter!r}")
    if not 0 <= cfg.mix_switch_prob <= 1:
        raise VistrainError(f"augment.mix_switch_prob must be in [0, 1], "
                            f"got {cfg.mix_switch_prob}")
    return PRESETS[cfg.preset]


def _size(input_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if input_size is None:
        return None
    return (int(input_size), int(input_size)) if isinstance(input_size, int) else \
        (int(input_size[0]), int(input_size[1]))


def build_ops(cfg: AugmentConfig, input_size: int | Sequence[int] | None) -> list[BatchOp]:
    """The ordered op list: geometric ops first (fused into one resample), then colour, noise,
    erasing.  ``input_size`` None crops back to whatever size the batch has."""
    preset = _check(cfg)
    ops: list[BatchOp] = []
    if preset.crop_scale is not None:
        ops.append(RandomResizedCrop(_size(input_size), scale=preset.crop_scale))
    if preset.hflip if cfg.hflip is None else cfg.hflip:
        ops.append(RandomHorizontalFlip(0.5))
    if cfg.vflip:
        ops.append(RandomVerticalFlip(0.5))
    rotation = preset.rotation if cfg.rotation is None else float(cfg.rotation)
    if rotation > 0:
        ops.append(RandomRotation(rotation))
    if cfg.policy == "randaugment":
        ops.append(RandAugment(num_ops=2, magnitude=9))
    elif cfg.policy == "trivialaugment":
        ops.append(TrivialAugment())
    elif preset.jitter is not None:
        ops.append(ColorJitter(*preset.jitter, fused=cfg.jitter == "matrix"))
    if preset.noise_sigma > 0:
        ops.append(GaussianNoise((0.0, preset.noise_sigma), p=0.3))
    if preset.erasing > 0:
        ops.append(RandomErasing(p=preset.erasing))
    return ops


def build_augmentation(cfg: AugmentConfig, input_size: int | Sequence[int],
                       num_classes: int, *, label_smoothing: float = 0.0
                       ) -> tuple[AugmentPipeline, BatchMix | None]:
    """``(batch_augment, batch_mix)`` for a config.

    Args:
        cfg: the ``augment`` section of the training config.
        input_size: model input size (int or (H, W)); crops are resized to it.
        num_classes: K, the width of the soft targets made by the mixer.
        label_smoothing: folded into the mixer's soft targets (do not smooth again in the loss).

    Returns:
        ``batch_augment(x, generator=g) -> x`` on (N, C, H, W) uint8/float batches, and
        ``batch_mix(x, y, generator=g) -> (x, target (N, K))`` or None when mixup and cutmix
        are both 0.
    """
    augment = AugmentPipeline(build_ops(cfg, input_size))
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return augment, None
    mix = BatchMix(num_classes, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                   switch_prob=cfg.mix_switch_prob, label_smoothing=label_smoothing)
    return augment, mix


def describe(cfg: AugmentConfig, input_size: int | Sequence[int] | None = None) -> list[str]:
    """Human-readable list of what the config applies, in order (``["no augmentation"]``)."""
    lines = [op.describe() for op in build_ops(cfg, input_size)]
    if cfg.mixup > 0 or cfg.cutmix > 0:
        lines.append(BatchMix(2, cfg.mixup, cfg.cutmix, cfg.mix_switch_prob).describe())
    return lines or ["no augmentation"]
