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


def graph_metadata(meta: dict, sha256: str) -> dict[str, str]:
    """String metadata of an exported graph (ONNX ``metadata_props``, TorchScript extra file).

    Everything a program needs without vistrain: ``classes`` (JSON list, index = output column),
    ``input_layout``/``input_dtype``/``input_shape``, ``resize`` (size, interpolation, crop_pct,
    mode: how to make the input from an image), ``preprocess`` (the full record), plus the model
    name, the vistrain version and the sha256 of the weights it was exported from.
    """
    pre = meta["preprocess"]
    size, channels = int(pre["size"]), int(pre.get("channels", 3))
    resize = {"size": size, "interpolation": pre.get("interpolation"), "crop_pct": pre.get("crop_pct"),
              "mode": pre.get("resize_mode"), "colour": "RGB" if channels == 3 else "L"}
    return {"classes": json.dumps(meta["classes"]), "input_layout": "NHWC", "input_dtype": "uint8",
            "input_shape": json.dumps(["N", size, size, channels]),
            "output": "class probabilities (N, K), softmax, columns in the order of classes",
            "resize": json.dumps(resize), "preprocess": json.dumps(pre),
            "temperature": json.dumps(temperature(meta)),
            "model_name": meta["model_name"], "vistrain_version": __version__,
            "weights_sha256": sha256}
