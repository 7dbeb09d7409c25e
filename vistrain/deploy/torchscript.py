"""Write an :class:`InferenceGraph` as TorchScript (``torch.jit.trace``), metadata included.

The traced module takes the same uint8 ``(N, H, W, C)`` batch as the ONNX graph and returns the
probabilities; the metadata of :func:`vistrain.deploy.graph.graph_metadata` travels as the extra
file ``vistrain.json`` (``torch.jit.load(path, _extra_files={"vistrain.json": ""})``).

Example:
    >>> from vistrain.deploy.torchscript import export_torchscript     # doctest: +SKIP
    >>> export_torchscript(graph, "model.pt", size=224, channels=3, metadata={...})  # doctest: +SKIP
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from vistrain.deploy.graph import InferenceGraph

EXTRA_FILE = "vistrain.json"


def export_torchscript(graph: InferenceGraph, path: str | Path, *, size: int, channels: int,
                       metadata: dict[str, str]) -> Path:
    """Trace ``graph`` on a uint8 batch and save it to ``path`` with ``metadata``; returns ``path``."""
    example = torch.zeros(2, size, size, channels, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        # tracer warnings about Python values taken as constants concern shapes fixed by the
        # input size, which the export fixes too; the batch axis stays free (checked by parity)
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph.eval(), (example,), check_trace=False)
    traced.save(str(path), _extra_files={EXTRA_FILE: json.dumps(metadata)})
    return Path(path)


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """The traced module (eval mode, CPU) and its metadata."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():  # TorchScript's deprecation notice: the format still loads
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE] or "{}")
