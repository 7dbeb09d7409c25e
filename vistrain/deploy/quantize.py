"""int8 quantization of an exported ONNX graph with ONNX Runtime.

Static quantization in the QDQ format: weights int8 per output channel, activations int8 with
ranges calibrated on the run's *training* images (99.99th percentile of a histogram: min/max
ranges, stretched by rare outliers, cost EfficientNet-Lite0 on Fashion-MNIST 2 points of
accuracy more), so the quantized graph is checked on test images it never saw.  Every operator
ONNX Runtime can quantize is (convolutions, their activations, residual additions, pooling:
quantizing only the convolutions leaves a dequantize/quantize pair around each and was slower
than float32), except two parts that stay float32:

* the in-graph preprocessing (everything before the first Conv/Gemm/MatMul: cast, scale,
  normalize, padding), so the input is exact;
* the head, from the last Conv/Gemm/MatMul to the softmax: a feature-extraction run's linear
  head has the features' standardization folded into its weights (one scale per input feature),
  which int8 weights per *output* channel cannot hold: quantized, Lite0's accuracy fell to chance.

Dynamic quantization (weights only, activations quantized per call)
is the alternative for transformers; on convolutional networks it produces ConvInteger nodes that
ONNX Runtime runs slower than float32, so it is offered (``method="dynamic"``) but not the default.

Example:
    >>> from vistrain.deploy.quantize import quantize_int8             # doctest: +SKIP
    >>> quantize_int8("model.onnx", "model.int8.onnx", calibration_pixels)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vistrain.deploy.graph import INPUT_NAME, require

log = logging.getLogger("vistrain")

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
    """Names of the nodes that stay float32 (in topological order): those before the first
    weighted operator (the preprocessing) and those from the last one on (the head, softmax)."""
    onnx = require("onnx")
    nodes = list(onnx.load(str(path)).graph.node)
    weighted = [i for i, n in enumerate(nodes) if n.op_type in WEIGHTED_OPS] or [0]
    return [n.name for n in nodes[:weighted[0]] + nodes[weighted[-1]:]]


def _quantize(q, src, dst, tmp: Path, calibration, method: str, batch_size: int) -> tuple[str, int]:
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = tmp / "prepared.onnx"
    # shape inference + graph clean-up, as ONNX Runtime recommends before quantizing
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    if method == "dynamic":
        q.quantize_dynamic(str(prepared), str(dst), weight_type=q.QuantType.QInt8,
                           op_types_to_quantize=list(WEIGHTED_OPS))
        return "int8 dynamic (weights int8, activations quantized per call)", 0
    batch_size = min(batch_size, len(calibration))
    used = len(calibration) // batch_size * batch_size
    q.quantize_static(str(prepared), str(dst), _reader(calibration[:used], batch_size),
                      quant_format=q.QuantFormat.QDQ, nodes_to_exclude=float_nodes(prepared),
                      per_channel=True, activation_type=q.QuantType.QInt8,
                      weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.Percentile,
                      extra_options={"CalibPercentile": 99.99})
    return (f"int8 static QDQ (weights per channel, activation ranges: 99.99th percentile on {used} "
            "training images; preprocessing and head float32)", used)


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray | None, *,
                  method: str = "static", batch_size: int = 16) -> tuple[str, int]:
    """Write the int8 version of the ONNX file ``src`` to ``dst``; returns a one-line description
    and the number of calibration images used.

    ``calibration``: uint8 ``(N, C, S, S)`` training images (static only), fed in batches of
    ``batch_size`` (all of one size: the histogram calibrator stacks them, so the images of an
    incomplete last batch are left out).  The metadata of ``src`` (classes, resize rule, ...)
    is copied, with ``quantization`` added.
    """
    onnx = require("onnx")
    q = require("onnxruntime.quantization")
    tmp = Path(tempfile.mkdtemp(prefix="vistrain-quant-", dir=Path(dst).parent))
    chatter, root = io.StringIO(), logging.getLogger()
    level = root.level
    try:
        # the quantizer prints its progress on stdout, which belongs to the verb's result (one
        # JSON document with --json), and logs a line per rescaled weight channel on the root
        # logger at INFO: the first goes to the debug log, the second is held back meanwhile
        root.setLevel(max(level, logging.WARNING))
        with contextlib.redirect_stdout(chatter):
            what, used = _quantize(q, src, dst, tmp, calibration, method, batch_size)
    finally:
        root.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)
        if chatter.getvalue():
            log.debug("%s", chatter.getvalue().rstrip())
    source, model = onnx.load(str(src)), onnx.load(str(dst))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="quantization", value=what)
    onnx.save(model, str(dst))
    return what, used
