"""Which engine computes a run's probabilities: the torch model or its ONNX Runtime export.

Engines: ``torch`` (the run's PyTorch model), ``onnxruntime`` (``RUN/export/model.onnx``),
``onnxruntime-int8`` (``RUN/export/model.int8.onnx``), ``openvino`` (``RUN/export/model.xml``,
:class:`vistrain.deploy.openvino_export.OpenVinoEngine`; never chosen by ``auto``), and
``auto``: ONNX Runtime when the run has an export that is not stale and the device is the CPU,
torch otherwise.  An export is stale
when the run's weights (sha256 of ``model.safetensors``), classes or preprocessing differ from
those recorded in the graph's metadata: a re-trained run never silently uses an old export.
The ONNX Runtime engine itself (torch-free) is :mod:`vistrain.deploy.runtime`.

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

import logging
from pathlib import Path

import torch

from vistrain.deploy.runtime import (OrtEngine, checked_graph_problem, export_path, open_export, reason,
                                     stale_reason)
from vistrain.errors import VistrainError

log = logging.getLogger("vistrain")

ENGINES = ("auto", "torch", "onnxruntime", "onnxruntime-int8", "openvino")


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
    threads = threads or torch.get_num_threads()
    if engine != "auto":
        if not _is_cpu(device):
            raise VistrainError(f"--engine {engine} runs on the CPU; drop --device {device} or use "
                                "--engine torch")
        return open_export(run_dir, meta, engine, threads=threads)
    path = export_path(run_dir, "onnxruntime")
    if not _is_cpu(device) or not path.is_file():
        return None
    try:
        sess = OrtEngine(path, name="onnxruntime", threads=threads)
    except VistrainError:  # onnxruntime not installed: torch is the engine
        return None
    except Exception as err:  # a garbage or truncated file: the weights still predict
        log.warning("%s is damaged (%s): predicting with torch; run `vistrain export %s` again",
                    path, reason(err), run_dir)
        return None
    problem = stale_reason(sess.metadata, run_dir, meta) or checked_graph_problem(path, sess.metadata)
    if problem:
        log.warning("%s is stale (%s): predicting with torch; run `vistrain export %s` again",
                    path, problem, run_dir)
        return None
    return sess
