"""The file format of an export, without PyTorch: names, metadata and the checks of a file.

An export (``vistrain export``) is ``RUN/export/model.onnx`` (and ``model.int8.onnx``, or
``model.pt``): uint8 NHWC pixels in, probabilities out, and in its metadata everything a program
needs to use it alone (classes, resize rule, preprocessing, temperature, the sha256 of the weights
and of the graph).  This module holds those names and the metadata's reading and writing, which
need no torch, so that :mod:`vistrain.deploy.runtime` (ONNX Runtime) can serve an export in an
install without PyTorch; :mod:`vistrain.deploy.graph` builds the graph itself.

Example:
    >>> meta = {"classes": ["a", "b"], "model_name": "m", "preprocess": {"size": 32}}
    >>> md = graph_metadata(meta, "0" * 64)
    >>> md["input_layout"], json.loads(md["input_shape"]), json.loads(md["classes"])
    ('NHWC', ['N', 32, 32, 3], ['a', 'b'])
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

from vistrain import __version__
from vistrain.artifact_meta import WEIGHTS, temperature
from vistrain.errors import VistrainError

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


GRAPH_KEY = "graph_sha256"   # metadata key: sha256 of the graph (nodes and initializers) at export
INT8_GATE_KEY = "int8_gate"  # metadata of model.int8.onnx: the export's promotion check, as JSON


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
    """How :func:`vistrain.imageio.read.load_image` turns a file into 8-bit pixels, for a program
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


def graph_sha256(model) -> str:
    """sha256 of an ONNX ``ModelProto``'s graph (its nodes and initializers, not the metadata),
    serialized deterministically: what binds an export to the weights it was made from, so a
    graph changed after export (with its metadata intact) is recognised.

    Example:
        >>> import onnx
        >>> len(graph_sha256(onnx.ModelProto()))
        64
    """
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def graph_problem(path: str | Path, metadata: dict[str, str]) -> str | None:
    """Why the graph in ``path`` is not the one exported (None when it is, or when the export
    records no graph hash: older exports).  An int8 file records its own graph's hash."""
    want = metadata.get(GRAPH_KEY)
    if not want:
        return None
    try:
        onnx = require("onnx")
    except VistrainError:
        return None  # onnx not installed: only ONNX Runtime's own load checks the file
    if graph_sha256(onnx.load(str(path))) != want:
        return "its graph differs from the one exported (the file was changed after export)"
    return None


def int8_promoted(metadata: dict[str, str]) -> bool:
    """Whether an int8 file with ONNX ``metadata`` passed the export's accuracy gate (a file
    without the record, from an export that did not check, has not)."""
    try:
        return json.loads(metadata.get(INT8_GATE_KEY, "{}")).get("passed") is True
    except (ValueError, AttributeError):
        return False
