"""The OpenVINO export of a run (``vistrain export --format openvino``) and its engine
(``--engine openvino`` for predict, evaluate and serve).

The IR (``RUN/export/model.xml`` + ``model.bin``) is converted from the ONNX graph of the run
(:mod:`vistrain.deploy.onnx_export`) by OpenVINO's ONNX frontend (``Core.read_model``, what
``openvino.convert_model`` runs for an ONNX file, without the usage statistics that
``convert_model`` sends to a remote server unless the user has opted out), so its input and
output are the ONNX graph's: uint8 ``(N, H, W, C)`` pixels in, probabilities out, the batch axis dynamic.  The
weights stay float32 (``compress_to_fp16=False``) and inference runs in float32
(``INFERENCE_PRECISION_HINT``: OpenVINO would otherwise pick bf16 on CPUs that have it), so the
export passes the same parity gate as ONNX.  The graph's metadata is copied into the IR's
``rt_info`` under ``vistrain``, where :class:`OpenVinoEngine` reads it back for the staleness check
of :func:`vistrain.deploy.engine.open_engine`.  No torch here (nor any vistrain module that imports
it): the engine takes NumPy arrays, or anything with ``.numpy()``.  openvino is the optional extra ``vistrain[openvino]``.

Example:
    >>> from vistrain.deploy.openvino_export import OpenVinoEngine      # doctest: +SKIP
    >>> OpenVinoEngine("runs/demo/export/model.xml", threads=2).probabilities(pixels).shape  # doctest: +SKIP
    (8, 3)
"""
from __future__ import annotations

import importlib
import threading
from pathlib import Path

import numpy as np

from vistrain.errors import VistrainError

OPENVINO_XML, OPENVINO_BIN = "model.xml", "model.bin"
RT_INFO = "vistrain"  # the rt_info section that holds the graph metadata


def require_openvino():
    """The ``openvino`` module, or a one-line error saying how to install it."""
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise VistrainError("openvino is not installed; install with pip install "
                            "'vistrain[openvino]'") from None


def export_openvino(onnx_path: str | Path, xml_path: str | Path, metadata: dict[str, str]) -> Path:
    """Convert the ONNX graph ``onnx_path`` to an IR at ``xml_path`` (its ``.bin`` beside it),
    float32 weights, ``metadata`` in its rt_info; returns ``xml_path``."""
    ov = require_openvino()
    model = ov.Core().read_model(str(onnx_path))  # not convert_model: it sends usage telemetry
    for key, value in metadata.items():
        model.set_rt_info(str(value), [RT_INFO, key])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


def rt_metadata(model) -> dict[str, str]:
    """The vistrain metadata of an OpenVINO model's rt_info (empty when it has none)."""
    if not model.has_rt_info([RT_INFO]):
        return {}
    section = model.get_rt_info([RT_INFO]).astype(dict)
    return {str(key): value.astype(str) if hasattr(value, "astype") else str(value)
            for key, value in section.items()}


class OpenVinoEngine:
    """An OpenVINO CPU model compiled from an IR; :meth:`probabilities` takes the uint8
    ``(N, C, S, S)`` batch that :meth:`Preprocess.pixels` images stack into, like
    :class:`vistrain.deploy.engine.OrtEngine`."""

    def __init__(self, path: str | Path, *, name: str = "openvino", threads: int | None = None):
        ov = require_openvino()
        core = ov.Core()
        model = core.read_model(str(path))
        self.path, self.name, self.metadata = Path(path), name, rt_metadata(model)
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self._requests = threading.local()  # an infer request is one thread's: one per thread
        # the exported graph has one input (pixels) and one output (probabilities)
        self._input, self._output = self.compiled.input(0), self.compiled.output(0)

    def probabilities(self, pixels) -> np.ndarray:
        """``(N, K)`` float32 probabilities of uint8 ``(N, C, S, S)`` pixels (NCHW, as vistrain
        stacks them; the graph takes NHWC, so they are transposed here)."""
        x = pixels.numpy() if hasattr(pixels, "numpy") else np.asarray(pixels)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        # the copy detaches the answer from the request's buffer, which the next call reuses
        return self._request().infer({self._input: x})[self._output].copy()

    def _request(self):
        """This thread's infer request (a request may not run two calls at once; the server's
        model workers call the engine from several threads)."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        return request
