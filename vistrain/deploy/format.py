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
