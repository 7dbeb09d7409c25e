"""int8 quantization of an exported ONNX graph with ONNX Runtime.

Static quantization in the QDQ format: weights int8 per output channel, activations int8 with
ranges calibrated (min/max) on the run's *training* images, so the quantized graph is checked on
test images it never saw.  Every operator ONNX Runtime can quantize is (convolutions, but also
their activations, residual additions and pooling: quantizing only the convolutions leaves a
dequantize/quantize pair around each of them and was slower than float32 on EfficientNet-Lite0),
except the in-graph preprocessing (everything before the first Conv/Gemm/MatMul: cast, scale,
normalize, padding) and the final softmax, which stay float32 so that the input is exact and
the probabilities keep full resolution.  Dynamic quantization (weights only, activations quantized per call)
is the alternative for transformers; on convolutional networks it produces ConvInteger nodes that
ONNX Runtime runs slower than float32, so it is offered (``method="dynamic"``) but not the default.

Example:
    >>> from vistrain.deploy.quantize import quantize_int8             # doctest: +SKIP
    >>> quantize_int8("model.onnx", "model.int8.onnx", calibration_pixels)  # doctest: +SKIP
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from vistrain.deploy.graph import INPUT_NAME, require

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
METHODS = ("static", "dynamic")


def _reader(pixels: np.ndarray, batch_size: int):
    """An ONNX Runtime calibration reader over uint8 NCHW ``pixels`` (fed as NHWC batches)."""
    q = require("onnxruntime.quantization")

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(pixels), batch_size))

        def get_next(self):
            start = next(self.starts, None)
            if start is None:
                return None
            batch = pixels[start:start + batch_size].transpose(0, 2, 3, 1)
            return {INPUT_NAME: np.ascontiguousarray(batch)}

    return Reader()


def float_nodes(path: str | Path) -> list[str]:
    """Names of the nodes that stay float32: those before the first weighted operator (the
    preprocessing) and the softmax nodes."""
    onnx = require("onnx")
    nodes = onnx.load(str(path)).graph.node
    first = next((i for i, n in enumerate(nodes) if n.op_type in WEIGHTED_OPS), 0)
    return [n.name for n in nodes[:first]] + [n.name for n in nodes if n.op_type == "Softmax"]


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray | None, *,
                  method: str = "static", batch_size: int = 16) -> str:
    """Write the int8 version of the ONNX file ``src`` to ``dst``; returns a one-line description.

    ``calibration``: uint8 ``(N, C, S, S)`` training images (static only).  The metadata of
    ``src`` (classes, resize rule, ...) is copied, with ``quantization`` added.
    """
    onnx = require("onnx")
    q = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process
    tmp = Path(tempfile.mkdtemp(prefix="vistrain-quant-", dir=Path(dst).parent))
    try:
        prepared = tmp / "prepared.onnx"
        # shape inference + graph clean-up, as ONNX Runtime recommends before quantizing
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            q.quantize_dynamic(str(prepared), str(dst), weight_type=q.QuantType.QInt8,
                               op_types_to_quantize=list(WEIGHTED_OPS))
            what = "int8 dynamic (weights int8, activations quantized per call)"
        else:
            q.quantize_static(str(prepared), str(dst), _reader(calibration, batch_size),
                              quant_format=q.QuantFormat.QDQ, nodes_to_exclude=float_nodes(prepared),
                              per_channel=True, activation_type=q.QuantType.QInt8,
                              weight_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax)
            what = (f"int8 static QDQ (weights per channel, activations min/max calibrated on "
                    f"{len(calibration)} training images)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    source, model = onnx.load(str(src)), onnx.load(str(dst))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="quantization", value=what)
    onnx.save(model, str(dst))
    return what
