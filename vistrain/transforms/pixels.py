"""The evaluation preprocessing of a model up to its uint8 input, without PyTorch.

:class:`PixelPrep` is the serialisable record of ``model.json`` (and of an export's ``preprocess``
metadata) and its first stage: file or PIL image -> decoded, converted, resized and cropped
``(C, size, size)`` uint8 array.  It needs NumPy and Pillow only, so an ONNX Runtime server or
notebook can re-apply a run's preprocessing exactly without torch;
:class:`vistrain.transforms.preprocess.Preprocess` adds the torch stages (a uint8 tensor and the
normalization) on top of the same record.

Example:
    >>> from PIL import Image
    >>> prep = PixelPrep(size=32)
    >>> x = prep.array(Image.new("RGB", (64, 48), (255, 0, 0)))
    >>> x.shape, x.dtype.name, int(x[0, 0, 0]), int(x[1, 0, 0])
    ((3, 32, 32), 'uint8', 255, 0)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from vistrain.imageio.read import DEFAULT_BACKGROUND, load_image, to_rgb
from vistrain.transforms.resize import resize_image


@dataclass
class PixelPrep:
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

    def array(self, source: str | Path | Image.Image) -> np.ndarray:
        """``(C, size, size)`` uint8 array: decode + resize, no normalization."""
        return pil_to_array(self.resize(self.load(source)))

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["background"] = list(self.background)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict):
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


def pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> ``(C, H, W)`` uint8 array (channels first, contiguous, writable: a copy).

    Example:
        >>> pil_to_array(Image.new("L", (3, 2))).shape
        (1, 2, 3)
    """
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.array(arr.transpose(2, 0, 1), order="C")  # a copy: PIL's buffer is read-only
