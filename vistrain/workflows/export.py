"""``export``: a run as one deployable file (``vistrain export RUN``), checked against the run.

Writes ``RUN/export/model.onnx`` (``format="onnx"``), ``RUN/export/model.pt`` (TorchScript) or
``RUN/export/model.xml`` + ``model.bin`` (``format="openvino"``: the OpenVINO IR converted from the
ONNX graph, :mod:`vistrain.deploy.openvino_export`):
uint8 ``(N, H, W, C)`` pixels in, class probabilities ``(N, K)`` out, the normalization inside the
graph (see :mod:`vistrain.deploy`).  Before a file is promoted it is checked (``onnx.checker``, one
ONNX Runtime inference) and compared with the PyTorch model on the run's test images: top-1
agreement must be 100 % and no probability may differ by more than ``1e-4``, else the export
fails and nothing in ``RUN/export/`` changes.  ``quantize="int8"`` adds ``model.int8.onnx``
(static, calibrated on training images decoded batch by batch) only when it keeps the model: on
the test images its accuracy may fall by at most :data:`INT8_MAX_DROP` and its top-1 agreement
with fp32 must be at least :data:`INT8_MIN_AGREEMENT` (each variant of
:data:`vistrain.deploy.quantize.SETTINGS` is tried until one passes).  Otherwise the int8 file is
not promoted (an earlier one is removed), the gate's numbers are recorded and ``export`` reports
``promoted: false`` (the CLI exits 1).
The numbers go to ``RUN/export/parity.json``.  Files are built in a staging folder inside
``RUN/export/`` and renamed into place, so a reader sees an old file or a new one, never half.

Example:
    >>> import vistrain
    >>> r = vistrain.export("runs/demo", quantize="int8")                   # doctest: +SKIP
    >>> r["onnx"]["top1_agreement"], r["onnx_int8"]["accuracy_change"]       # doctest: +SKIP
    (1.0, -0.003)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from vistrain import __version__
from vistrain.artifact_meta import read_meta
from vistrain.data.leftovers import pid_tag, remove_dead
from vistrain.deploy.format import (EXPORT_DIR, INT8_FILE, ONNX_FILE, PARITY_FILE, TORCHSCRIPT_FILE,
                                    ExportError, graph_metadata, weights_sha256)
from vistrain.deploy.graph import InferenceGraph
from vistrain.deploy.onnx_export import OPSET, check_onnx, export_onnx
from vistrain.deploy.openvino_export import (OPENVINO_BIN, OPENVINO_XML, OpenVinoEngine, export_openvino,
                                             require_openvino)
from vistrain.deploy.parity import SplitImages, accuracy, batched, compare, load_split, split_files
from vistrain.deploy.quantize import METHODS, SETTINGS, LazyImages, mark_int8_gate, quantize_int8
from vistrain.deploy.runtime import OrtEngine
from vistrain.deploy.torchscript import export_torchscript, load_torchscript
from vistrain.errors import ImageLoadError, RunDirError, VistrainError
from vistrain.fsutil import atomic_write_json
from vistrain.predictor import Classifier
from vistrain.workflows.logs import show_log_lines

FORMATS = ("onnx", "torchscript", "openvino")
QUANTIZE = ("int8",)
TOLERANCE = 1e-4  # largest probability difference an fp32 export may have from the torch model
STAGING = ".staging-"
LEFTOVER_AGE_S = 6 * 3600  # older staging folders are leftovers of a killed export, not a running one
# int8 is promoted only when it keeps the model (on the test images, against the fp32 graph)
INT8_MAX_DROP = 0.01        # accuracy may fall by at most 1 point
INT8_MIN_AGREEMENT = 0.97   # top-1 agreement with fp32 at least 97 %


def remove_leftovers(out: Path) -> None:
    """Delete staging folders that an export killed mid-way (``kill -9``, power loss) left in
    ``out``: those whose writer (its pid in the name) no longer runs, and unnamed ones older than
    :data:`LEFTOVER_AGE_S` (a younger one may belong to an export running right now)."""
    remove_dead(out, re.compile(rf"{re.escape(STAGING)}(?P<pid>\d+)-\w+"))
    for path in out.glob(f"{STAGING}*"):
        if path.is_dir() and time.time() - path.stat().st_mtime > LEFTOVER_AGE_S:
            shutil.rmtree(path, ignore_errors=True)


def check_options(format: str, quantize: str | None, calibration: int, threads: int | None,
                  method: str) -> None:
    """One-line errors for impossible options, before anything is read or written."""
    if format not in FORMATS:
        raise VistrainError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise VistrainError(f"--quantize {quantize!r}: only int8 is supported")
    if quantize and format != "onnx":
        raise VistrainError("--quantize int8 needs --format onnx (quantization runs in ONNX Runtime)")
    if method not in METHODS:
        raise VistrainError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 1:
        raise VistrainError(f"--calibration {calibration!r}: must be a whole number of images >= 1")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise VistrainError(f"--threads {threads!r}: must be a whole number >= 1")


def export(run_dir: str | Path, *, format: str = "onnx", quantize: str | None = None,
           data: str | Path | None = None, threads: int | None = None, calibration: int = 96,
           quantize_method: str = "static", batch_size: int = 8, progress: bool = True) -> dict:
    """Export the run (``format``: onnx | torchscript), check parity on its test images, and
    return the report that is also written to ``RUN/export/parity.json``.

    ``data``: the run's data folder when it moved (its test images are looked up there);
    ``quantize="int8"``: also ``model.int8.onnx``, calibrated on ``calibration`` training images
    (decoded and fed in batches of 2; ``quantize_method``: static | dynamic); ``threads``: ONNX Runtime
    threads (default torch's).
    Raises :class:`vistrain.deploy.graph.ExportError` when parity fails (nothing is promoted).

    Example:
        >>> import vistrain
        >>> r = vistrain.export("runs/demo")                                  # doctest: +SKIP
        >>> r["files"], r["onnx"]["passed"]                                   # doctest: +SKIP
        (['runs/demo/export/model.onnx'], True)
    """
    show_log_lines()
    check_options(format, quantize, calibration, threads, quantize_method)
    if format == "openvino":
        require_openvino()  # before the test images are decoded: a missing extra is one line at once
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    out = run_dir / EXPORT_DIR
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder; move it away so the export can go there")
    clf = Classifier.from_run(run_dir, engine="torch")
    test = load_split(run_dir, clf.classes, clf.preprocess, "test", data=data, progress=progress)
    calib = (calibration_images(run_dir, clf.preprocess, data, calibration)
             if quantize and quantize_method == "static" else None)
    ref = batched(lambda x: clf.predict_pixels(list(x)), test.pixels, batch_size)
    sha = weights_sha256(run_dir)
    graph = InferenceGraph(clf.model, clf.preprocess, clf.temperature)
    out.mkdir(exist_ok=True)
    remove_leftovers(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}{pid_tag()}-", dir=out))
    try:
        job = dict(graph=graph, staging=staging, meta=meta, metadata=graph_metadata(meta, sha),
                   test=test, ref=ref, batch_size=batch_size)
        if format == "onnx":
            entries = _onnx(**job, threads=threads, quantize=quantize, calib=calib, method=quantize_method)
        elif format == "openvino":
            entries = _openvino(**job, threads=threads)
        else:
            entries = _torchscript(**job)
        files = []
        for entry in entries.values():  # checked: promote (a rename inside RUN/export/)
            if entry.get("promoted", True):
                for name in entry.get("files", [entry["file"]]):  # the IR's .bin after its .xml
                    os.replace(staging / name, out / name)
                    files.append(str(out / name))
            elif (out / entry["file"]).is_file():  # an earlier int8 file that this check refutes
                (out / entry["file"]).unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    images = {"part": test.part, "n": len(test.labels), "data_root": str(test.root),
              "skipped": len(test.skipped)}
    report = _write_parity(out / PARITY_FILE, run_dir, sha, images, entries)
    return {**report, "format": format, "files": files, "parity_file": str(out / PARITY_FILE)}


def _parity(ref, probs, labels, engine: str) -> dict:
    """fp32 parity numbers of ``probs`` against the torch ``ref``; passed or not."""
    c = compare(ref, probs)
    return {"top1_agreement": c["top1_agreement"], "max_abs_diff": c["max_abs_diff"],
            "tolerance": TOLERANCE, "passed": c["top1_agreement"] == 1.0 and c["max_abs_diff"] <= TOLERANCE,
            "accuracy": {"torch": accuracy(ref, labels), engine: accuracy(probs, labels)}}


def _fail_unless_passed(entry: dict, what: str, test: SplitImages, other: str) -> None:
    if not entry["passed"]:
        raise ExportError(f"{what} does not reproduce the run on its {len(test.labels)} {test.part} "
                          f"images (top-1 agreement {entry['top1_agreement']:.2%}, largest probability "
                          f"difference {entry['max_abs_diff']:.2g} > {TOLERANCE:g}); nothing was "
                          f"written: try --format {other}")


def _onnx(*, graph, staging, meta, metadata, test, ref, batch_size, threads, quantize, calib, method) -> dict:
    pre, k = meta["preprocess"], len(meta["classes"])
    size, channels = int(pre["size"]), int(pre.get("channels", 3))
    path = export_onnx(graph, staging / ONNX_FILE, size=size, channels=channels, metadata=metadata)
    check_onnx(path, size=size, channels=channels, num_classes=k)
    engine = OrtEngine(path, threads=threads)
    probs = batched(engine.probabilities, test.pixels, batch_size)
    entry = {"file": ONNX_FILE, "bytes": path.stat().st_size, "engine": "onnxruntime",
             "threads": engine.threads, "opset": OPSET, **_parity(ref, probs, test.labels, "onnxruntime")}
    _fail_unless_passed(entry, "the ONNX graph", test, "torchscript")
    entries = {"onnx": entry}
    if quantize:
        entries["onnx_int8"] = _int8(path, staging, calib, method, test, probs, threads, batch_size)
    return entries


def _openvino(*, graph, staging, meta, metadata, test, ref, batch_size, threads) -> dict:
    """The IR converted from a checked ONNX graph (kept in staging only), held to the same parity
    gate as ONNX against the torch model."""
    pre, k = meta["preprocess"], len(meta["classes"])
    size, channels = int(pre["size"]), int(pre.get("channels", 3))
    source = export_onnx(graph, staging / f"source.{ONNX_FILE}", size=size, channels=channels,
                         metadata=metadata)
    check_onnx(source, size=size, channels=channels, num_classes=k)
    path = export_openvino(source, staging / OPENVINO_XML, metadata)
    engine = OpenVinoEngine(path, threads=threads)
    probs = batched(engine.probabilities, test.pixels, batch_size)
    entry = {"file": OPENVINO_XML, "files": [OPENVINO_XML, OPENVINO_BIN],
             "bytes": sum((staging / f).stat().st_size for f in (OPENVINO_XML, OPENVINO_BIN)),
             "engine": "openvino", "threads": engine.threads, "precision": "f32",
             **_parity(ref, probs, test.labels, "openvino")}
    _fail_unless_passed(entry, "the OpenVINO IR", test, "onnx")
    return {"openvino": entry}


def calibration_images(run_dir: Path, pre, data, limit: int) -> LazyImages:
    """At most ``limit`` of the run's training images (spread evenly over the sorted list),
    decoded only batch by batch while the quantizer calibrates; an unreadable one is black."""
    _, root, files = split_files(run_dir, "train", data=data)
    if limit < len(files):
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    shape = (pre.channels, pre.size, pre.size)

    def decode(path):
        try:
            return pre.pixels(path)
        except ImageLoadError:  # one black image among dozens barely moves a 99.99th percentile
            return torch.zeros(shape, dtype=torch.uint8)
    return LazyImages([root / f for f in files], decode, part="train")


def int8_gate(acc_fp32: float, acc_int8: float, agreement: float) -> dict:
    """The promotion rule's numbers: ``{"max_accuracy_drop", "min_top1_agreement", "passed"}``."""
    return {"max_accuracy_drop": INT8_MAX_DROP, "min_top1_agreement": INT8_MIN_AGREEMENT,
            "passed": bool(acc_fp32 - acc_int8 <= INT8_MAX_DROP + 1e-12 and agreement >= INT8_MIN_AGREEMENT)}


def _int8(path, staging, calib, method, test, probs, threads, batch_size) -> dict:
    """Quantize the fp32 graph ``path`` with each of SETTINGS until one passes the gate (the
    dynamic method has one setting); the entry of the passing (else the best) variant, with
    ``promoted`` and every variant's numbers under ``tried``."""
    tried, best = [], None
    for name, keep_first in (SETTINGS if method == "static" else SETTINGS[:1]):
        dst = staging / f"{name.replace(' ', '').replace(',', '-')}.{INT8_FILE}"
        what, n_calib = quantize_int8(path, dst, calib, method=method, keep_first=keep_first)
        q = OrtEngine(dst, name="onnxruntime-int8", threads=threads)
        p8 = batched(q.probabilities, test.pixels, batch_size)
        del q  # its session's memory is freed before the next variant calibrates
        c, acc, acc8 = compare(probs, p8), accuracy(probs, test.labels), accuracy(p8, test.labels)
        gate = int8_gate(acc, acc8, c["top1_agreement"])
        entry = {"file": INT8_FILE, "bytes": dst.stat().st_size, "engine": "onnxruntime-int8",
                 "quantization": what, "setting": name,
                 "calibration": None if calib is None else {"part": calib.part, "n": n_calib},
                 "top1_agreement_with_fp32": c["top1_agreement"], "max_abs_diff": c["max_abs_diff"],
                 "accuracy_fp32": acc, "accuracy_int8": acc8, "accuracy_change": acc8 - acc,
                 "gate": gate, "promoted": gate["passed"]}
        tried.append({k: entry[k] for k in ("setting", "accuracy_int8", "top1_agreement_with_fp32")})
        if best is None or (acc8, c["top1_agreement"]) > (best[0]["accuracy_int8"],
                                                           best[0]["top1_agreement_with_fp32"]):
            best = (entry, dst)
        if gate["passed"]:
            best = (entry, dst)
            break
    entry, dst = best
    mark_int8_gate(dst, entry["gate"])
    os.replace(dst, staging / INT8_FILE)
    return {**entry, "tried": tried}


def _torchscript(*, graph, staging, meta, metadata, test, ref, batch_size) -> dict:
    pre = meta["preprocess"]
    path = export_torchscript(graph, staging / TORCHSCRIPT_FILE, size=int(pre["size"]),
                              channels=int(pre.get("channels", 3)), metadata=metadata)
    module, _ = load_torchscript(path)

    @torch.no_grad()
    def run(x):  # NCHW uint8 as vistrain stacks it -> the module's NHWC input
        return module(x.permute(0, 2, 3, 1).contiguous()).numpy()

    probs = batched(run, test.pixels, batch_size)
    entry = {"file": TORCHSCRIPT_FILE, "bytes": path.stat().st_size, "engine": "torchscript",
             **_parity(ref, probs, test.labels, "torchscript")}
    _fail_unless_passed(entry, "the TorchScript module", test, "onnx")
    return {"torchscript": entry}


def _write_parity(path: Path, run_dir: Path, sha: str, images: dict, entries: dict) -> dict:
    """Merge ``entries`` into parity.json (entries of other formats are kept while the weights
    are the same) and write it atomically; returns the document."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict) or old.get("weights_sha256") != sha:
        old = {}
    doc = {**old, "run_dir": str(run_dir), "weights_sha256": sha, "vistrain_version": __version__,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "images": images,
           **entries}
    atomic_write_json(path, doc)
    return doc
