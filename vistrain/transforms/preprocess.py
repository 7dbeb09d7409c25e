"""The exact evaluation preprocessing of a model, as one serialisable object.

:class:`Preprocess` is saved in ``model.json`` and re-applied verbatim by ``predict`` and
``evaluate``: the most common silent bug in deployed classifiers is preprocessing at inference
that differs from training (other resize, other statistics, BGR instead of RGB).

It has two stages, so that pixels can stay uint8 until the last moment:

1. :meth:`Preprocess.pixels` — file or PIL image -> ``(C, size, size)`` uint8 tensor
   (decode, EXIF, mode conversion, resize/crop); runs in data-loader workers.
2. :meth:`Preprocess.normalize` — uint8 batch -> normalized float batch; runs on the device.

Example:
    >>> from PIL import Image
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> pre = Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x = pre(Image.new("RGB", (64, 48), (255, 0, 0)))
    >>> tuple(x.shape), round(float(x[0, 0, 0]), 3)
    ((3, 32, 32), 1.0)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.data.io import DEFAULT_BACKGROUND, load_image, to_rgb
from vistrain.transforms.normalize import normalize_batch
from vistrain.transforms.resize import resize_image


@dataclass
class Preprocess:
    size: int = 224
    resize_mode: str = "crop"
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    fill: int = 0
    background: tuple[int, int, int] = DEFAULT_BACKGROUND
    channels: int = 3
    normalize_mode: str = "imagenet"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    extra: dict = field(default_factory=dict)   # provenance, e.g. where dataset stats came from

    # -- stage 1: pixels ----------------------------------------------------------------
    def load(self, source: str | Path | Image.Image) -> Image.Image:
        """Decode a file (robustly) or convert a PIL image to the working mode."""
        if isinstance(source, Image.Image):
            return to_rgb(source, background=self.background, grayscale=self.channels == 1)
        return load_image(source, background=self.background, min_side=self.size,
                          grayscale=self.channels == 1)

    def resize(self, img: Image.Image) -> Image.Image:
        return resize_image(img, self.size, mode=self.resize_mode, interpolation=self.interpolation,
                            crop_pct=self.crop_pct, fill=self.fill)

    def pixels(self, source: str | Path | Image.Image) -> torch.Tensor:
        """``(C, size, size)`` uint8 tensor: decode + resize, no normalization."""
        return pil_to_uint8(self.resize(self.load(source)))

    # -- stage 2: normalize -------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` or ``(C, H, W)`` -> normalized float32 on x's device."""
        return normalize_batch(x, self.scale, self.mean, self.std)

    def __call__(self, source: str | Path | Image.Image) -> torch.Tensor:
        """File or PIL image -> normalized ``(C, size, size)`` float tensor."""
        return self.normalize(self.pixels(source))

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["background"] = list(self.background)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("background", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def describe(self) -> str:
        how = {"crop": f"shorter side to {int(self.size / self.crop_pct)} + centre crop {self.size}",
               "stretch": f"stretch to {self.size}x{self.size}",
               "letterbox": f"letterbox to {self.size}x{self.size} (fill {self.fill})"}[self.resize_mode]
        stats = ", ".join(f"{m:.3f}/{s:.3f}" for m, s in zip(self.mean, self.std))
        return (f"{how}, {self.interpolation} (antialiased); {'RGB' if self.channels == 3 else 'grey'}; "
                f"normalize={self.normalize_mode} (mean/std per channel: {stats})")


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> ``(C, H, W)`` uint8 tensor (no copy of the pixel data beyond one)."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
