"""The engine of every frozen forward pass: ONNX Runtime on the CPU, PyTorch eager on CUDA.

A frozen backbone's pooled features (``forward_features`` + global pooling) are the whole cost of a
feature-extraction run, of auto's similarity sample and of their evaluation.  PyTorch eager runs
them op by op; ONNX Runtime runs the same network as one optimised graph, 2.4x faster on 2 CPU
cores at 1 thread (EfficientNet-Lite0, docs/benchmarks.md "Feature extraction").  So on the CPU:

1. the backbone (normalized float32 ``(N, C, S, S)`` in, pooled features ``(N, D)`` out) is
   exported once per model, weights and input size to ``<cache>/features/backbone-<key>.onnx``
   (``key``: :func:`~vistrain.data.cache.fingerprint.cache_key` of the model's name, a digest of
   its backbone tensors, the input shape and the torch/opset versions; written atomically, a
   ``.part`` while it is written, evicted by the cache budget like every entry);
2. its features are checked against eager on the first few images of the first batch: a maximum
   difference above ``PARITY_TOLERANCE`` of the largest feature falls back to eager, with a warning;
3. ONNX Runtime's thread count is measured (1 vs the process's torch threads, interleaved on the
   first batch, the median wins) once per graph and process: on a shared machine 2 threads were up
   to 5x slower than 1.

On CUDA eager runs with channels_last and the runtime's bf16/fp16 autocast.  ``VISTRAIN_FEATURE_ENGINE``
(``auto`` | ``eager`` | ``onnxruntime``) overrides the choice, e.g. for benchmarks.

Example:
    >>> from vistrain.training.feature_engine import relative_difference
    >>> import numpy as np
    >>> relative_difference(np.array([[1.0, 2.0]]), np.array([[1.0, 2.0001]])) < 1e-4
    True
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib
import logging
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vistrain.data.cache.budget import (budget_root, default_cache_dir, mark_used, part_suffix,
                                        prune_cache, record_entry)
from vistrain.data.cache.fingerprint import cache_key
from vistrain.fsutil import atomic_path

log = logging.getLogger("vistrain")

ENGINES = ("auto", "eager", "onnxruntime")
ENGINE_ENV = "VISTRAIN_FEATURE_ENGINE"
PARITY_TOLERANCE = 1e-4   # max |ort - eager| / max |eager| over the checked images
PARITY_IMAGES = 4         # images of the first batch checked against eager
PROBE_IMAGES = 4          # images of the first batch the thread probe times
PROBE_ROUNDS = 3          # interleaved timings per thread count; the median counts
OPSET = 17
# images per forward call on the CPU: the activations of a 224 px batch of 64 through Lite0 held
# ~1 GB (eager) or grew ONNX Runtime's arena as far, for no more images/s than 8 at a time (30.0
# vs 31.0 img/s at 32, 1 thread)
CPU_CHUNK = 8
INPUT_NAME, OUTPUT_NAME = "x", "features"

_THREADS: dict[str, int] = {}        # graph path -> measured best intra-op thread count
_PARITY: dict[str, float] = {}       # graph path -> checked max relative difference (passed)
_SESSIONS: dict[tuple[str, int], object] = {}  # (graph path, threads) -> session, one per process:
# strategy auto's sample and the run then share one session and one memory arena


def return_freed_memory() -> bool:
    """Hand the heap memory freed by a forward pass back to the kernel (glibc ``malloc_trim``):
    after strategy auto's measurement, 127 MB of freed activations otherwise stayed in the
    process and added to the run's peak RSS.  False where there is no glibc (macOS, Windows)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, num_features)``: backbone features after global pooling, before dropout/classifier."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


class Backbone(nn.Module):
    """``model`` up to its pooled features, as one module that ONNX export can trace."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.model, x)


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """``max |ours - reference| / max |reference|``: the disagreement on the features' own scale
    (an element-wise ratio explodes on features that are ~0)."""
    scale = max(float(np.abs(reference).max()), 1e-12)
    return float(np.abs(np.asarray(ours, np.float64) - reference).max() / scale)


def requested_engine() -> str:
    """``VISTRAIN_FEATURE_ENGINE`` (``auto`` when unset or unknown)."""
    name = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if name not in ENGINES:
        log.warning("%s=%s is not one of %s; using auto", ENGINE_ENV, name, ", ".join(ENGINES))
        return "auto"
    return name


def backbone_digest(model: nn.Module) -> str:
    """sha256 (24 hex) of the model's tensors other than its classifier: what the features depend on."""
    skip = {id(t) for t in model.get_classifier().parameters()} if hasattr(model, "get_classifier") else set()
    h = hashlib.sha256()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if id(t) in skip:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:24]


def graph_path(model: nn.Module, channels: int, size: int, cache_dir: Path | None = None) -> Path:
    """Where the exported backbone of ``model`` at ``(channels, size, size)`` lives in the cache."""
    spec = {"what": "backbone-onnx", "model": type(model).__name__, "weights": backbone_digest(model),
            "input": [channels, size, size], "torch": torch.__version__.split("+")[0], "opset": OPSET}
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "features"
    return folder / f"backbone-{cache_key([], spec)}.onnx"


def export_backbone(model: nn.Module, path: Path, channels: int, size: int) -> Path:
    """Export ``model``'s pooled features (batch axis dynamic) to ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, channels, size, size)
    net = Backbone(model).eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter warns about its own deprecation on every call: nothing a user can act on
        warnings.simplefilter("ignore")
        tmp_file = Path(tmp) / "backbone.onnx"  # the exporter writes a path of its own choosing
        torch.onnx.export(net, (example,), str(tmp_file), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
        record_entry(path)  # listed in the cache's index: only listed files are ever evicted
        with atomic_path(path, suffix=part_suffix()) as part:
            part.write_bytes(tmp_file.read_bytes())
    prune_cache(budget_root(path.parent), keep=[path])
    return path


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session on ``path`` with ``threads`` intra-op threads."""
    ort = importlib.import_module("onnxruntime")  # optional dependency (the deploy extra)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: its optimizer notes are not for users
    # no arena: a run's activations go back to the system after each call instead of staying
    # reserved by the session (a few hundred MB at 224 px; the default run's peak RSS counts them)
    opts.enable_cpu_mem_arena = os.environ.get("VISTRAIN_ORT_ARENA", "1") == "1"
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_session(sess, x: torch.Tensor) -> np.ndarray:
    """``(N, D)`` float32 features of normalized ``x`` ``(N, C, S, S)``."""
    arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
    return sess.run([OUTPUT_NAME], {INPUT_NAME: arr})[0]


def thread_choices() -> list[int]:
    """The intra-op thread counts the probe compares: 1 and the process's torch threads."""
    n = max(1, torch.get_num_threads())
    return [1] if n == 1 else [1, n]


def probe_threads(path: Path, x: torch.Tensor, sessions: dict[int, object]) -> tuple[int, dict]:
    """The fastest thread count on ``x`` (a few normalized images), timed interleaved,
    ``PROBE_ROUNDS`` rounds after a warm-up, median per count; returns ``(threads, {threads: s})``.
    Remembered per graph for the process; ``sessions`` receives the sessions it opened."""
    key = str(path)
    if key in _THREADS:
        return _THREADS[key], {}
    choices = thread_choices()
    for n in choices:
        if n not in sessions:
            sessions[n] = ort_session(path, n)
        run_session(sessions[n], x)  # warm-up: first run allocates
    times: dict[int, list[float]] = {n: [] for n in choices}
    for _ in range(PROBE_ROUNDS if len(choices) > 1 else 0):
        for n in choices:
            t = time.perf_counter()
            run_session(sessions[n], x)
            times[n].append(time.perf_counter() - t)
    medians = {n: statistics.median(v) for n, v in times.items() if v}
    best = min(medians, key=medians.get) if medians else choices[0]
    _THREADS[key] = best
    return best, {str(n): round(s, 4) for n, s in medians.items()}


@dataclass
class FeatureEngine:
    """What computes a batch's features: ``name`` ``onnxruntime`` (``session``) or ``eager``
    (``model``); ``record`` is what run.json keeps of it (engine, threads, parity, why)."""
    name: str
    model: nn.Module
    session: object | None = None
    record: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor, rt) -> torch.Tensor:
        """``(N, D)`` float32 features of the normalized batch ``x``; on the CPU in chunks of
        ``CPU_CHUNK`` images (see there)."""
        if x.device.type == "cpu" and len(x) > CPU_CHUNK:
            return torch.cat([self(part, rt) for part in x.split(CPU_CHUNK)])
        if self.session is not None:
            return torch.from_numpy(run_session(self.session, x))
        x = x.contiguous(memory_format=torch.channels_last)
        with rt.autocast():
            return pooled_features(self.model, x).float()


def eager_engine(model: nn.Module, rt, why: str) -> FeatureEngine:
    """PyTorch eager in channels_last (and the runtime's autocast)."""
    model.eval().to(memory_format=torch.channels_last)
    return FeatureEngine("eager", model, None, {"engine": "eager", "precision": rt.precision,
                                                 "threads": torch.get_num_threads(), "why": why})


def choose_engine(model: nn.Module, first: torch.Tensor, rt, cache_dir: Path | None = None) -> FeatureEngine:
    """The engine for ``model``'s frozen forward passes, given the normalized ``first`` batch
    ``(N, C, S, S)`` on ``rt.device`` (see module docstring)."""
    wanted = requested_engine()
    if wanted == "eager":
        return eager_engine(model, rt, f"{ENGINE_ENV}=eager")
    if rt.device.type != "cpu":
        return eager_engine(model, rt, f"{rt.device.type}: eager with channels_last and autocast")
    try:
        return ort_engine(model, first, rt, cache_dir)
    except Exception as err:  # no onnxruntime, an export or a session that fails: eager still works
        reason = " ".join(str(err).split())[:200]
        log.warning("features: ONNX Runtime not used (%s: %s); running PyTorch eager", type(err).__name__, reason)
        return eager_engine(model, rt, f"onnxruntime failed: {type(err).__name__}: {reason}")


def ort_engine(model: nn.Module, first: torch.Tensor, rt, cache_dir: Path | None) -> FeatureEngine:
    """The exported backbone (exported now unless cached), parity-checked on ``first`` and with
    its measured thread count; eager (with a warning) when the parity check fails."""
    model.eval()
    channels, size = int(first.shape[1]), int(first.shape[-1])
    path = graph_path(model, channels, size, cache_dir)
    exported = not path.is_file()
    t = time.perf_counter()
    if exported:
        export_backbone(model, path, channels, size)
    else:
        mark_used(path)
    sessions: dict[int, object] = {}
    check = first[:PARITY_IMAGES].float().cpu()
    probe = first[:PROBE_IMAGES].float().cpu()
    threads, timings = probe_threads(path, probe, sessions)
    if (str(path), threads) not in _SESSIONS:
        _SESSIONS[(str(path), threads)] = sessions.get(threads) or ort_session(path, threads)
    sessions.clear()  # the probe's other sessions (and their arenas) go now
    sess = _SESSIONS[(str(path), threads)]
    diff = _PARITY.get(str(path))
    if diff is None:
        with torch.no_grad():
            reference = pooled_features(model, check.to(rt.device)).float().cpu().numpy()
        diff = relative_difference(run_session(sess, check), reference)
    if not diff <= PARITY_TOLERANCE:
        log.warning("features: ONNX Runtime's features differ from PyTorch's by %.2g of their scale "
                    "(> %g) on the first images; running PyTorch eager", diff, PARITY_TOLERANCE)
        return eager_engine(model, rt, f"onnxruntime parity failed ({diff:.2g} > {PARITY_TOLERANCE:g})")
    _PARITY[str(path)] = diff
    record = {"engine": "onnxruntime", "threads": threads, "graph": path.name,
              "exported": exported, "setup_seconds": round(time.perf_counter() - t, 2),
              "parity_max_relative_difference": float(f"{diff:.3g}")}
    if timings:
        record["thread_probe_seconds"] = timings
    return FeatureEngine("onnxruntime", model, sess, record)
