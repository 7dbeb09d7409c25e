"""Write an :class:`InferenceGraph` as ONNX, with its metadata, and check it.

The TorchScript-based exporter of ``torch.onnx`` is used (``dynamo=False``): it needs nothing
beyond torch and onnx, and exports every timm and vistrain network we ship; the batch axis is
dynamic.  :func:`check_onnx` runs ``onnx.checker`` and one ONNX Runtime inference, so a file that
a runtime would refuse is never promoted.

Example:
    >>> from vistrain.deploy.onnx_export import export_onnx           # doctest: +SKIP
    >>> export_onnx(graph, "model.onnx", size=224, channels=3, metadata={"classes": "[...]"})  # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from vistrain.deploy.format import GRAPH_KEY, graph_sha256
from vistrain.deploy.format import INPUT_NAME, OUTPUT_NAME, ExportError, require
from vistrain.deploy.graph import InferenceGraph

OPSET = 17


def export_onnx(graph: InferenceGraph, path: str | Path, *, size: int, channels: int,
                metadata: dict[str, str]) -> Path:
    """Export ``graph`` (uint8 ``(N, size, size, channels)`` in) to ``path``, ``metadata`` in its
    ``metadata_props``; returns ``path``."""
    onnx = require("onnx")
    path = Path(path)
    example = torch.zeros(2, size, size, channels, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter warns that it is deprecated on every call: that is a note for
        # torch's own roadmap, not something a user of `vistrain export` can act on
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    model = onnx.load(str(path))
    model.producer_name = "vistrain"
    model.doc_string = ("input: uint8 (N, H, W, C) pixels resized and cropped as metadata 'resize' "
                        "says; output: class probabilities (N, K), names in metadata 'classes'")
    del model.metadata_props[:]
    for key, value in {**metadata, GRAPH_KEY: graph_sha256(model)}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def check_onnx(path: str | Path, *, size: int, channels: int, num_classes: int) -> None:
    """``onnx.checker.check_model`` plus one ONNX Runtime inference at batch sizes 1 and 3;
    :class:`ExportError` when either fails or the output is not ``(N, num_classes)``."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for n in (1, 3):
            x = np.random.default_rng(n).integers(0, 256, (n, size, size, channels), dtype=np.uint8)
            out = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            if out.shape != (n, num_classes) or not np.isfinite(out).all():
                raise ValueError(f"output {out.shape} for a batch of {n}, expected ({n}, {num_classes})")
    except Exception as err:  # any checker/runtime failure means: do not promote this file
        raise ExportError(f"{path}: the exported graph does not run ({' '.join(str(err).split())[:160]}); "
                          "use --format torchscript for this model") from None
