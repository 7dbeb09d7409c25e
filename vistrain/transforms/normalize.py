"""Per-channel normalization ``(x - mean) / std`` and the modes that choose mean and std.

All statistics are in the [0, 1] pixel scale (timm's convention).  A batch of uint8 pixels ``x``
becomes ``(x * scale - mean) / std``:

============  =========================================  ===========================
mode          mean / std                                 output range / statistics
============  =========================================  ===========================
none          scale=1, mean=0, std=1                     raw 0..255 floats
minmax        scale=1/255, mean=0, std=1                 [0, 1]
symmetric     0.5 / 0.5                                  [-1, 1] (MNIST-style, some ViTs)
imagenet      0.485,0.456,0.406 / 0.229,0.224,0.225      ~N(0,1) on ImageNet-like photos
model         the backbone's pretraining statistics      what the pretrained weights expect
dataset       computed on the *training split only*      ~N(0,1) on the user's data
explicit      the numbers given                          --
============  =========================================  ===========================

``auto`` resolves to ``model`` for pretrained backbones (their first layer was trained on inputs
normalized that way: other statistics shift every activation) and to ``dataset`` when training
from scratch.

Example:
    >>> import torch
    >>> from vistrain.transforms.normalize import normalize_batch
    >>> x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    >>> normalize_batch(x, 1 / 255, [0.5] * 3, [0.5] * 3)[0, :, 0, 0].tolist()
    [1.0, 1.0, 1.0]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from vistrain.errors import VistrainError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_MODES = ("auto", "none", "minmax", "symmetric", "imagenet", "model", "dataset", "explicit")


@dataclass(frozen=True)
class Normalization:
    """Resolved normalization: ``(x * scale - mean) / std`` per channel."""
    mode: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def for_channels(self, channels: int) -> "Normalization":
        """Adapt 3-channel statistics to 1 channel (their mean) or vice versa."""
        if len(self.mean) == channels:
            return self
        if channels == 1:
            return Normalization(self.mode, self.scale, (sum(self.mean) / len(self.mean),),
                                 (sum(self.std) / len(self.std),))
        return Normalization(self.mode, self.scale, self.mean * channels, self.std * channels)


def resolve_normalization(mode: str, *, model_mean=None, model_std=None, dataset_stats=None,
                          mean=None, std=None, pretrained: bool = True, channels: int = 3,
                          warn: bool = True) -> Normalization:
    """Turn a mode name (see module docstring) into concrete statistics.

    ``dataset_stats`` is ``(mean, std)`` computed on the training split; required for
    ``dataset`` (and ``auto`` without pretraining).
    """
    if mode not in NORMALIZE_MODES:
        raise VistrainError(f"unknown normalize mode {mode!r}; choose one of {', '.join(NORMALIZE_MODES)}")
    if mode == "auto":
        mode = "model" if pretrained and model_mean is not None else "dataset"
    if mode == "none":
        res = Normalization("none", 1.0, (0.0,), (1.0,))
    elif mode == "minmax":
        res = Normalization("minmax", 1 / 255, (0.0,), (1.0,))
    elif mode == "symmetric":
        res = Normalization("symmetric", 1 / 255, (0.5,), (0.5,))
    elif mode == "imagenet":
        res = Normalization("imagenet", 1 / 255, IMAGENET_MEAN, IMAGENET_STD)
    elif mode == "model":
        if model_mean is None:
            raise VistrainError("normalize=model needs a model with pretraining statistics; "
                                "use normalize=dataset for models trained from scratch")
        res = Normalization("model", 1 / 255, tuple(model_mean), tuple(model_std))
    elif mode == "dataset":
        if dataset_stats is None:
            raise VistrainError("normalize=dataset needs statistics of the training split "
                                "(computed by vistrain.data.stats)")
        res = Normalization("dataset", 1 / 255, tuple(dataset_stats[0]), tuple(dataset_stats[1]))
    else:
        if mean is None or std is None:
            raise VistrainError("normalize=explicit needs preprocess.mean and preprocess.std")
        res = Normalization("explicit", 1 / 255, tuple(mean), tuple(std))
    if any(s <= 0 for s in res.std):
        raise VistrainError(f"normalization std must be positive, got {res.std}")
    res = res.for_channels(channels)
    if warn and pretrained and model_mean is not None and res.mode not in ("model",):
        _warn_mismatch(res, model_mean, model_std)
    return res


_warned: set[tuple] = set()


def _warn_mismatch(res: Normalization, model_mean, model_std) -> None:
    key = (res.mode, tuple(res.mean), tuple(model_mean))
    if key in _warned:
        return
    if (res.scale == 1 / 255 and len(res.mean) == len(model_mean)
            and all(abs(a - b) < 1e-6 for a, b in zip(res.mean + res.std, tuple(model_mean) + tuple(model_std)))):
        return
    _warned.add(key)
    log.warning("normalize=%s differs from the pretrained statistics (mean %s, std %s): the "
                "backbone's first layers were trained on inputs normalized that way, so other "
                "statistics shift every activation and usually cost accuracy when fine-tuning "
                "little. Use normalize=model unless you have a reason.",
                res.mode, _fmt(model_mean), _fmt(model_std))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def normalize_batch(x: torch.Tensor, scale: float, mean, std) -> torch.Tensor:
    """``(x * scale - mean) / std`` per channel for a ``(N, C, H, W)`` or ``(C, H, W)`` tensor.

    uint8 input is converted to float32 here, at the last step, on ``x``'s device.
    """
    if x.is_floating_point():
        out = x.mul(scale)
    else:  # one conversion pass into a fresh contiguous float32 tensor, then in place
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device).copy_(x).mul_(scale)
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=out.dtype, device=out.device).view(shape)
    s = torch.as_tensor(std, dtype=out.dtype, device=out.device).view(shape)
    return out.sub_(m).div_(s)  # same operations and rounding as (x * scale - m) / s, 3x faster


def denormalize_batch(x: torch.Tensor, scale: float, mean, std) -> torch.Tensor:
    """Inverse of :func:`normalize_batch`, back to uint8 pixels (for display)."""
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return ((x * s + m) / scale).round().clamp(0, 255).to(torch.uint8)
