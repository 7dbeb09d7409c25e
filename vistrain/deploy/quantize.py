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

The stem (the first Conv, where a depthwise/MBConv network's ranges are widest) can stay float32
too (``keep_first=True``); :data:`SETTINGS` names the variants and ``export`` tries them in order
and keeps the first that passes its accuracy gate (see :mod:`vistrain.workflows.export`).

Calibration streams: :class:`BatchReader` decodes one small batch at a time, and ONNX Runtime's
histogram is fed one batch per ``collect_data`` call (``CalibStridedMinMax``), so the activations of
only one batch are held at once (all of them at once cost EfficientNet-Lite0 ~74 MB per image: 8.8
GB for 96 images).

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
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vistrain.deploy.format import GRAPH_KEY, INT8_GATE_KEY, graph_sha256
from vistrain.deploy.format import INPUT_NAME, require

log = logging.getLogger("vistrain")

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
METHODS = ("static", "dynamic")


# The variants export tries, best first: (name, keep the stem float32).  Both keep the
# preprocessing and the head float32 and quantize weights per output channel.
SETTINGS = (("per-channel", False), ("per-channel, stem float32", True))
CALIBRATION_BATCH = 2  # images per calibration batch: the activations of one batch are held at once
# (EfficientNet-Lite0 at 224 px, 96 images: peak +0.27 GB with 2, +0.76 GB with 8, ~7 GB all at once)


def _reader(images, batch_size: int):
    """An ONNX Runtime calibration reader over ``images``: uint8 NCHW ``(N, C, S, S)`` pixels, or
    a sequence whose ``batch(start, stop)`` decodes those images only when asked (fed as NHWC
    batches).  ``len()`` counts batches and ``set_range`` selects some (what ONNX Runtime's
    strided calibration calls, one batch per ``collect_data``)."""
    q = require("onnxruntime.quantization")
    n = len(images)
    starts = list(range(0, n // batch_size * batch_size, batch_size))  # complete batches only

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.todo = iter(starts)

        def __len__(self):
            return len(starts)

        def set_range(self, start_index: int, end_index: int):
            self.todo = iter(starts[start_index:end_index])

        def get_next(self):
            start = next(self.todo, None)
            if start is None:
                return None
            batch = (images.batch(start, start + batch_size) if hasattr(images, "batch")
                     else images[start:start + batch_size])
            return {INPUT_NAME: np.ascontiguousarray(np.asarray(batch).transpose(0, 2, 3, 1))}

    return Reader()


def float_nodes(path: str | Path, keep_first: bool = False) -> list[str]:
    """Names of the nodes that stay float32 (in topological order): those before the first
    weighted operator (the preprocessing) and those from the last one on (the head, softmax);
    with ``keep_first`` the first weighted operator (the stem) too."""
    onnx = require("onnx")
    nodes = list(onnx.load(str(path)).graph.node)
    weighted = [i for i, n in enumerate(nodes) if n.op_type in WEIGHTED_OPS] or [0]
    first = weighted[0] + 1 if keep_first else weighted[0]
    return [n.name for n in nodes[:first] + nodes[weighted[-1]:]]


def _quantize(q, src, dst, tmp: Path, calibration, method: str, batch_size: int,
              keep_first: bool = False) -> tuple[str, int]:
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
    # CalibStridedMinMax=1: one collect_data per batch, the histogram merged as batches come
    q.quantize_static(str(prepared), str(dst), _reader(calibration, batch_size),
                      quant_format=q.QuantFormat.QDQ, nodes_to_exclude=float_nodes(prepared, keep_first),
                      per_channel=True, activation_type=q.QuantType.QInt8,
                      weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.Percentile,
                      extra_options={"CalibPercentile": 99.99, "CalibStridedMinMax": 1})
    kept = "preprocessing, stem and head" if keep_first else "preprocessing and head"
    return (f"int8 static QDQ (weights per channel, activation ranges: 99.99th percentile on {used} "
            f"training images in batches of {batch_size}; {kept} float32)", used)


def quantize_int8(src: str | Path, dst: str | Path, calibration, *, method: str = "static",
                  batch_size: int = CALIBRATION_BATCH, keep_first: bool = False) -> tuple[str, int]:
    """Write the int8 version of the ONNX file ``src`` to ``dst``; returns a one-line description
    and the number of calibration images used.

    ``calibration`` (static only): uint8 ``(N, C, S, S)`` training images, or a
    :class:`LazyImages` that decodes them batch by batch; fed in batches of ``batch_size`` (all of
    one size: the histogram calibrator stacks them, so the images of an incomplete last batch are
    left out).  ``keep_first``: the stem stays float32 too.  The metadata of ``src`` (classes,
    resize rule, ...) is copied, with ``quantization`` added.
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
            what, used = _quantize(q, src, dst, tmp, calibration, method, batch_size, keep_first)
    finally:
        root.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)
        if chatter.getvalue():
            log.debug("%s", chatter.getvalue().rstrip())
    source, model = onnx.load(str(src)), onnx.load(str(dst))
    del model.metadata_props[:]
    for prop in source.metadata_props:  # the fp32 export's metadata, with the int8 graph's own hash
        value = graph_sha256(model) if prop.key == GRAPH_KEY else prop.value
        model.metadata_props.add(key=prop.key, value=value)
    model.metadata_props.add(key="quantization", value=what)
    onnx.save(model, str(dst))
    return what, used


def mark_int8_gate(path: str | Path, gate: dict) -> None:
    """Record the export's promotion check ``gate`` (``{"passed", ...}``) in the metadata of the
    int8 file ``path``: what engine selection reads (:func:`int8_promoted`)."""
    onnx = require("onnx")
    model = onnx.load(str(path))
    for prop in [p for p in model.metadata_props if p.key == INT8_GATE_KEY]:
        model.metadata_props.remove(prop)
    model.metadata_props.add(key=INT8_GATE_KEY, value=json.dumps(gate, sort_keys=True))
    onnx.save(model, str(path))


class LazyImages:
    """Image files decoded only when a batch is asked for: ``len()`` images, ``batch(start,
    stop)`` uint8 ``(n, C, S, S)`` by ``decode`` (a path -> ``(C, S, S)`` tensor, e.g.
    :meth:`Preprocess.pixels`).  Peak memory is one batch, not the whole calibration set.

    Example:
        >>> import torch
        >>> imgs = LazyImages(["a", "b", "c"], lambda p: torch.full((1, 2, 2), ord(p), dtype=torch.uint8))
        >>> len(imgs), imgs.batch(1, 3)[:, 0, 0, 0].tolist()
        (3, [98, 99])
    """

    def __init__(self, paths, decode, part: str | None = None):
        self.paths, self.decode, self.part = list(paths), decode, part  # part: of the run's split

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return np.stack([np.asarray(self.decode(p)) for p in self.paths[start:stop]])
