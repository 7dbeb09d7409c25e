"""The network of a run wrapped for deployment: uint8 NHWC pixels in, class probabilities out.

:class:`InferenceGraph` performs exactly what :class:`vistrain.predictor.Classifier` does after
:meth:`Preprocess.pixels`: ``(x.float() * scale - mean) / std`` per channel (the operations and
float32 rounding of :func:`vistrain.transforms.normalize.normalize_batch`), the model, softmax.
The layout is NHWC because that is how images come out of every decoder (PIL, OpenCV, browsers),
so a caller without vistrain only resizes and stacks.

Example:
    >>> import torch
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    >>> g = InferenceGraph(net, Preprocess(size=4)).eval()
    >>> tuple(g(torch.zeros(5, 4, 4, 3, dtype=torch.uint8)).shape)
    (5, 2)
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import torch
from torch import nn

from vistrain import __version__
from vistrain.artifact import WEIGHTS, temperature
from vistrain.errors import VistrainError
from vistrain.transforms.preprocess import Preprocess

EXPORT_DIR = "export"
ONNX_FILE, INT8_FILE, TORCHSCRIPT_FILE, PARITY_FILE = ("model.onnx", "model.int8.onnx", "model.pt",
                                                       "parity.json")
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"


class ExportError(VistrainError):
    """An export that cannot be written or does not reproduce the run (parity failed)."""


def require(module: str):
    """Import an optional deployment dependency, or a one-line error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise VistrainError(f"{module} is not installed; install with pip install 'vistrain[deploy]'") from None


class InferenceGraph(nn.Module):
    """``model`` with ``preprocess``'s normalization in front and the temperature-scaled softmax
    behind.

    ``forward(x)``: ``x`` uint8 ``(N, H, W, C)`` -> float32 probabilities ``(N, K)``.
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, temperature: float = 1.0):
        super().__init__()
        self.model = model.eval()
        self.temperature = float(temperature)  # the run's calibration: softmax(logits / T)
        self.scale = float(preprocess.scale)
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        x = (x * self.scale - self.mean) / self.std
        return (self.model(x).float() / self.temperature).softmax(1)


def weights_sha256(run_dir: str | Path) -> str:
    """sha256 of the run's ``model.safetensors``: what an export records to detect staleness."""
    h = hashlib.sha256()
    with open(Path(run_dir) / WEIGHTS, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# How vistrain.transforms.resize rounds, per resize mode (PIL resampling filters, antialiased).
RESIZE_ROUNDING = {
    "crop": "shorter side to floor(size / crop_pct), longer side int(short * long / shorter) "
            "(truncated; not resized when already that size); then the centre size x size crop at "
            "left = round((w - size) / 2), top = round((h - size) / 2), half to even",
    "stretch": "both sides to size, independently",
    "letterbox": "longer side to size, shorter side max(1, round(side * size / longer)); pasted on "
                 "a size x size canvas of preprocess.fill at ((size - w) // 2, (size - h) // 2)",
}


def decode_rules(pre: dict) -> dict:
    """How :func:`vistrain.data.io.load_image` turns a file into 8-bit pixels, for a program
    without vistrain (the ``decode`` metadata key); ``pre`` is the run's preprocess record."""
    channels = int(pre.get("channels", 3))
    return {
        "exif_orientation": "applied first: an EXIF Orientation (tag 274) of 2-8 is undone as "
                            "PIL.ImageOps.exif_transpose does; a damaged EXIF block keeps the "
                            "stored orientation",
        "alpha": {"background": list(pre.get("background", (255, 255, 255))),
                  "rule": "modes RGBA, LA, PA, and P with a transparency entry: "
                          "PIL.Image.alpha_composite over an opaque image of background, then RGB "
                          "(other modes' transparency entries are ignored)"},
        "high_bit_depth": {"I;16": "value / 257 rounded half to even (numpy.rint), as L",
                           "I, F": "(value - min) / (max - min) * 255 of the image, rounded half "
                                   "to even, as L (all 0 when constant)"},
        "colour": ("every other mode to RGB with PIL Image.convert (CMYK by PIL's formula)"
                   if channels == 3 else "every mode to L with PIL Image.convert"),
        "jpeg_reduced_decode": "JPEGs with shorter side >= 3 * size are decoded at reduced scale "
                               "first: PIL Image.draft('RGB', (int(w / s), int(h / s))) with "
                               "s = min(min(w, h) / (1.5 * size), 4); progressive JPEGs with "
                               "min(w, h) // 8 >= 8 / 7 * size at 1/8 scale (libjpeg's DCT scaling)",
        "order": ["jpeg_reduced_decode", "exif_orientation", "high_bit_depth", "alpha", "colour",
                  "resize"],
    }


def graph_metadata(meta: dict, sha256: str) -> dict[str, str]:
    """String metadata of an exported graph (ONNX ``metadata_props``, TorchScript extra file).

    Everything a program needs without vistrain: ``classes`` (JSON list, index = output column),
    ``input_layout``/``input_dtype``/``input_shape``, ``decode`` (EXIF orientation, alpha, 16-bit
    and other modes, reduced-scale JPEG decoding: how an image file becomes 8-bit pixels),
    ``resize`` (size, interpolation, crop_pct, mode and its exact rounding: how to make the input
    from those pixels), ``preprocess`` (the full record), ``temperature`` with
    ``temperature_applied_in_graph`` (the output is already calibrated: do not divide again), plus
    the model name, the vistrain version and the sha256 of the weights it was exported from.
    ``docs/reference_client.py`` follows these keys and reproduces ``vistrain predict``.
    """
    pre = meta["preprocess"]
    size, channels = int(pre["size"]), int(pre.get("channels", 3))
    resize = {"size": size, "interpolation": pre.get("interpolation"), "crop_pct": pre.get("crop_pct"),
              "mode": pre.get("resize_mode"), "colour": "RGB" if channels == 3 else "L",
              "rounding": RESIZE_ROUNDING.get(pre.get("resize_mode"), "")}
    return {"classes": json.dumps(meta["classes"]), "input_layout": "NHWC", "input_dtype": "uint8",
            "input_shape": json.dumps(["N", size, size, channels]),
            "output": "class probabilities (N, K), softmax, columns in the order of classes",
            "resize": json.dumps(resize), "preprocess": json.dumps(pre),
            "decode": json.dumps(decode_rules(pre)), "temperature": json.dumps(temperature(meta)),
            "temperature_applied_in_graph": "true",
            "model_name": meta["model_name"], "vistrain_version": __version__,
            "weights_sha256": sha256}
