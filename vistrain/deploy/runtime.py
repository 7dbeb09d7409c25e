"""The ONNX Runtime engine, without PyTorch: an export's session, its freshness, a bare file.

:class:`OrtEngine` runs an exported graph (uint8 ``(N, C, S, S)`` in, as the preprocessing makes
it; probabilities out).  :func:`open_export` opens the export of a run folder and refuses one
that is missing, damaged or stale (the run's weights, classes or preprocessing changed since);
:func:`read_onnx_file` opens a bare ``model.onnx`` whose metadata holds the classes and the
preprocessing (what ``vistrain export`` writes).  Nothing here imports torch: a serving install
(``pip install 'vistrain[serve]'``) runs an export with ONNX Runtime, NumPy and Pillow only;
:mod:`vistrain.deploy.engine` chooses between this engine and the torch model.

Threads: ``threads``, else ``OMP_NUM_THREADS``, else torch's count where torch is loaded (both
engines on the same cores), else ONNX Runtime's default (one per physical core, as torch's).

Example:
    >>> sess, record = read_onnx_file("runs/demo/export/model.onnx")      # doctest: +SKIP
    >>> record["classes"][:2], sess.name                                  # doctest: +SKIP
    (['Ankle boot', 'Bag'], 'onnxruntime')
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from vistrain.artifact_meta import meta_problem
from vistrain.deploy.format import (EXPORT_DIR, INPUT_NAME, INT8_FILE, ONNX_FILE, OUTPUT_NAME,
                                    graph_problem, int8_promoted, weights_sha256)
from vistrain.deploy.openvino_export import OPENVINO_XML, OpenVinoEngine
from vistrain.errors import VistrainError

FILES = {"onnxruntime": ONNX_FILE, "onnxruntime-int8": INT8_FILE, "openvino": OPENVINO_XML}
EXPORT_FLAGS = {"onnxruntime-int8": " --quantize int8", "openvino": " --format openvino"}
SERVE_HINT = "install with pip install 'vistrain[serve]'"


def onnxruntime():
    """The ``onnxruntime`` module, or a one-line error saying how to install it (an optional
    extra: imported when an engine opens, not with vistrain)."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise VistrainError(f"onnxruntime is not installed; {SERVE_HINT}") from None


def default_threads() -> int:
    """ONNX Runtime's intra-op threads when none are given: ``OMP_NUM_THREADS`` when set to a
    whole number >= 1; else, where this process already loaded torch, torch's count (both engines
    on the same cores, a fair comparison); else 0, ONNX Runtime's own choice (its physical cores).
    torch is looked up, never imported: a serving install has none."""
    raw = os.environ.get("OMP_NUM_THREADS", "")
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 0


class OrtEngine:
    """An ONNX Runtime session on an exported graph; :meth:`probabilities` takes the uint8
    ``(N, C, S, S)`` batch that preprocessed images stack into (NumPy, or a CPU torch tensor)."""

    def __init__(self, path: str | Path, *, name: str = "onnxruntime", threads: int | None = None):
        ort = onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or default_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: its optimizer notes are not for users
        self.path, self.name, self.threads = Path(path), name, opts.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def probabilities(self, pixels) -> np.ndarray:
        """``(N, K)`` float32 probabilities of uint8 ``(N, C, S, S)`` pixels (NCHW, as vistrain
        stacks them; the graph takes NHWC, so they are transposed here)."""
        x = np.ascontiguousarray(np.asarray(pixels).transpose(0, 2, 3, 1))
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


def reason(err: BaseException) -> str:
    """One short line of an exception: its type and the start of its message."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"


def checked_graph_problem(path: Path, metadata: dict[str, str]) -> str | None:
    """:func:`graph_problem`, with a file onnx cannot parse named as such."""
    try:
        return graph_problem(path, metadata)
    except Exception as err:  # a file ONNX Runtime loads but onnx cannot parse
        return f"unreadable graph ({reason(err)})"


def open_session(path: Path, name: str, threads: int | None, fix: str):
    """The engine ``name`` on ``path``; a file its runtime cannot load is one line ending in ``fix``."""
    try:
        return (OpenVinoEngine if name == "openvino" else OrtEngine)(path, name=name, threads=threads)
    except VistrainError:
        raise
    except Exception as err:  # the runtime's own errors on a garbage or truncated file
        raise VistrainError(f"{path} is damaged ({reason(err)}); {fix}") from None


def export_path(run_dir: str | Path, name: str) -> Path:
    """``RUN/export/model.onnx`` (``name="onnxruntime"``), ``model.int8.onnx`` or ``model.xml``."""
    return Path(run_dir) / EXPORT_DIR / FILES[name]


def open_export(run_dir: str | Path, meta: dict, name: str = "onnxruntime", *,
                threads: int | None = None, fallback: str = "--engine torch") -> OrtEngine:
    """The ONNX Runtime engine of the run's export (``meta``: its model.json); a missing,
    damaged, stale or (int8) unpromoted file is a one-line :class:`VistrainError` naming the
    fix (``fallback``: the other way, named last)."""
    path = export_path(run_dir, name)
    how = EXPORT_FLAGS.get(name, "")
    if not path.is_file():
        raise VistrainError(f"{path} not found; create it with `vistrain export {run_dir}{how}` "
                            f"or use {fallback}")
    sess = open_session(path, name, threads, f"run `vistrain export {run_dir}{how}` again or use {fallback}")
    problem = stale_reason(sess.metadata, run_dir, meta) or checked_graph_problem(path, sess.metadata)
    if problem:
        raise VistrainError(f"{path} is stale ({problem}); run `vistrain export {run_dir}{how}` "
                            f"again or use {fallback}")
    if name == "onnxruntime-int8" and not int8_promoted(sess.metadata):
        raise VistrainError(f"{path} did not pass the export's int8 accuracy check (or predates it); "
                            f"run `vistrain export {run_dir}{how}` again or use --engine onnxruntime")
    return sess


def file_record(path: Path, metadata: dict[str, str]) -> dict:
    """The model.json-like record of a bare export (``classes``, ``preprocess``, ``model_name``,
    ``calibration``) read from its metadata, checked as model.json is; a one-line error when the
    file is not a vistrain export."""
    not_ours = (f"{path}: not a vistrain export (its metadata lacks {{}}); give a file written by "
                "`vistrain export RUN`, or the run folder itself")
    missing = [k for k in ("classes", "preprocess") if k not in metadata]
    if missing:
        raise VistrainError(not_ours.format(" and ".join(missing)))
    try:
        classes, pre = json.loads(metadata["classes"]), json.loads(metadata["preprocess"])
        temp = json.loads(metadata.get("temperature", "1.0"))
    except ValueError:
        raise VistrainError(not_ours.format("readable JSON in classes/preprocess/temperature")) from None
    record = {"model_name": metadata.get("model_name") or path.name, "classes": classes,
              "num_classes": len(classes) if isinstance(classes, list) else 0, "preprocess": pre,
              "calibration": {"temperature": temp}}
    problem = meta_problem(record)
    if problem:
        raise VistrainError(f"{path}: damaged metadata, {problem}; export the run again "
                            "(`vistrain export RUN`)")
    return record


def read_onnx_file(path: str | Path, *, threads: int | None = None) -> tuple[OrtEngine, dict]:
    """``(engine, record)`` of a bare exported ``.onnx`` file: its ONNX Runtime session and the
    classes and preprocessing from its metadata (:func:`file_record`).  An int8 file must have
    passed the export's accuracy check; a changed graph is refused (when onnx is installed)."""
    path = Path(path)
    if not path.is_file():
        raise VistrainError(f"{path}: no such file; give a model.onnx written by `vistrain export RUN`")
    name = "onnxruntime-int8" if path.name.endswith(".int8.onnx") else "onnxruntime"
    sess = open_session(path, name, threads, "export the run again (`vistrain export RUN`)")
    record = file_record(path, sess.metadata)
    problem = checked_graph_problem(path, sess.metadata)
    if problem:
        raise VistrainError(f"{path}: {problem}; export the run again (`vistrain export RUN`)")
    if name == "onnxruntime-int8" and not int8_promoted(sess.metadata):
        raise VistrainError(f"{path} did not pass the export's int8 accuracy check (or predates it); "
                            "use the float export model.onnx")
    return sess, record
