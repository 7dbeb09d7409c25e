"""Which engine computes a run's probabilities, and the ONNX Runtime engine itself.

Engines: ``torch`` (the run's PyTorch model), ``onnxruntime`` (``RUN/export/model.onnx``),
``onnxruntime-int8`` (``RUN/export/model.int8.onnx``), ``openvino`` (``RUN/export/model.xml``,
:class:`vistrain.deploy.openvino_export.OpenVinoEngine`; never chosen by ``auto``), and
``auto``: ONNX Runtime when the run has an export that is not stale and the device is the CPU,
torch otherwise.  An export is stale
when the run's weights (sha256 of ``model.safetensors``), classes or preprocessing differ from
those recorded in the graph's metadata: a re-trained run never silently uses an old export.

Threads: ONNX Runtime's intra-op pool gets ``threads`` or, by default, ``torch.get_num_threads()``
(one inter-op thread), so both engines use the same cores and a comparison between them is fair;
setting ``OMP_NUM_THREADS``/``torch.set_num_threads`` therefore limits both.

Example:
    >>> from vistrain.deploy.engine import open_engine
    >>> sess = open_engine("runs/demo", meta, "auto")       # doctest: +SKIP
    >>> sess.name if sess else "torch"                      # doctest: +SKIP
    'onnxruntime'
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from vistrain.deploy.graph import (EXPORT_DIR, INPUT_NAME, INT8_FILE, ONNX_FILE, OUTPUT_NAME, require,
                                   weights_sha256)
from vistrain.deploy.onnx_export import graph_problem
from vistrain.deploy.openvino_export import OPENVINO_XML, OpenVinoEngine
from vistrain.deploy.quantize import int8_promoted
from vistrain.errors import VistrainError

log = logging.getLogger("vistrain")

ENGINES = ("auto", "torch", "onnxruntime", "onnxruntime-int8", "openvino")
FILES = {"onnxruntime": ONNX_FILE, "onnxruntime-int8": INT8_FILE, "openvino": OPENVINO_XML}
ENGINE_CLASSES = {"openvino": OpenVinoEngine}  # every other name: OrtEngine
EXPORT_FLAGS = {"onnxruntime-int8": " --quantize int8", "openvino": " --format openvino"}


class OrtEngine:
    """An ONNX Runtime session on an exported graph; :meth:`probabilities` takes the uint8
    ``(N, C, S, S)`` batch that :meth:`Preprocess.pixels` images stack into."""

    def __init__(self, path: str | Path, *, name: str = "onnxruntime", threads: int | None = None):
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: its optimizer notes are not for users
        self.path, self.name, self.threads = Path(path), name, opts.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def probabilities(self, pixels: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(N, K)`` float32 probabilities of uint8 ``(N, C, S, S)`` pixels (NCHW, as vistrain
        stacks them; the graph takes NHWC, so they are transposed here)."""
        x = pixels.numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def stale_reason(metadata: dict[str, str], run_dir: str | Path, meta: dict) -> str | None:
    """Why an export with ``metadata`` no longer matches the run (or None when it does)."""
    if metadata.get("weights_sha256") != weights_sha256(run_dir):
        return "the run's weights changed since it was exported"
    try:
        classes, pre = json.loads(metadata.get("classes", "")), json.loads(metadata.get("preprocess", ""))
    except ValueError:
        return "its metadata is damaged"
    if classes != meta["classes"] or pre != meta["preprocess"]:
        return "the run's classes or preprocessing differ from the exported ones"
    return None


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"


def _graph_problem(path: Path, metadata: dict[str, str]) -> str | None:
    try:
        return graph_problem(path, metadata)
    except Exception as err:  # a file ONNX Runtime loads but onnx cannot parse
        return f"unreadable graph ({_reason(err)})"


def _is_cpu(device) -> bool:
    if str(device) == "auto":
        return not torch.cuda.is_available()
    return torch.device(device).type == "cpu"


def open_engine(run_dir: str | Path, meta: dict, engine: str = "auto", *, device="cpu",
                threads: int | None = None) -> OrtEngine | None:
    """The ONNX Runtime engine to use for the run (``meta`` = its model.json), or None for torch.

    ``auto`` falls back to torch (with a warning when an export exists but is stale); an explicit
    ONNX Runtime engine without a usable export is a one-line :class:`VistrainError`.
    """
    if engine not in ENGINES:
        raise VistrainError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "torch":
        return None
    run_dir = Path(run_dir)
    name = "onnxruntime" if engine == "auto" else engine
    path = run_dir / EXPORT_DIR / FILES[name]
    if engine == "auto":
        if not _is_cpu(device) or not path.is_file():
            return None
        try:
            sess = OrtEngine(path, name=name, threads=threads)
        except VistrainError:  # onnxruntime not installed: torch is the engine
            return None
        except Exception as err:  # a garbage or truncated file: the weights still predict
            log.warning("%s is damaged (%s): predicting with torch; run `vistrain export %s` again",
                        path, _reason(err), run_dir)
            return None
        reason = stale_reason(sess.metadata, run_dir, meta) or _graph_problem(path, sess.metadata)
        if reason:
            log.warning("%s is stale (%s): predicting with torch; run `vistrain export %s` again",
                        path, reason, run_dir)
            return None
        return sess
    if not _is_cpu(device):
        raise VistrainError(f"--engine {engine} runs on the CPU; drop --device {device} or use --engine torch")
    how = EXPORT_FLAGS.get(name, "")
    if not path.is_file():
        raise VistrainError(f"{path} not found; create it with `vistrain export {run_dir}{how}` "
                            "or use --engine torch")
    try:
        sess = ENGINE_CLASSES.get(name, OrtEngine)(path, name=name, threads=threads)
    except VistrainError:
        raise
    except Exception as err:  # ONNX Runtime's own errors on a garbage or truncated file
        raise VistrainError(f"{path} is damaged ({_reason(err)}); run `vistrain export {run_dir}{how}` "
                            "again or use --engine torch") from None
    reason = stale_reason(sess.metadata, run_dir, meta) or _graph_problem(path, sess.metadata)
    if reason:
        raise VistrainError(f"{path} is stale ({reason}); run `vistrain export {run_dir}{how}` "
                            "again or use --engine torch")
    if name == "onnxruntime-int8" and not int8_promoted(sess.metadata):
        raise VistrainError(f"{path} did not pass the export's int8 accuracy check (or predates it); "
                            f"run `vistrain export {run_dir}{how}` again or use --engine onnxruntime")
    return sess
