"""``evaluate``: a run scored on a labelled image folder (``vistrain evaluate``).

Example:
    >>> import vistrain
    >>> m = vistrain.evaluate("runs/demo", "examples/fashion-mnist-small")  # doctest: +SKIP
    >>> sorted(m)[:3], round(m["accuracy"], 2)                              # doctest: +SKIP
    (['accuracy', 'balanced_accuracy', 'ci95'], 0.9)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vistrain import fsutil
from vistrain.artifact import load_model
from vistrain.artifact_meta import WEIGHTS, check_finite_probabilities, read_meta, temperature
from vistrain.data.cache.build import build_pixel_cache
from vistrain.data.loader import ArrayBatches
from vistrain.data.scan import ImageIndex, scan_folder
from vistrain.deploy.engine import open_engine
from vistrain.deploy.parity import batched
from vistrain.device import Runtime
from vistrain.errors import DataError
from vistrain.evaluation.calibration import scale_probabilities
from vistrain.evaluation.figures import write_eval_figures
from vistrain.evaluation.metrics import compute_metrics
from vistrain.prediction import check_tta
from vistrain.predictor import Classifier
from vistrain.training.loop import BatchPipeline, predict
from vistrain.training.run import recorded_data_root
from vistrain.transforms.preprocess import Preprocess
from vistrain.workflows.logs import show_log_lines


def evaluate(run_dir: str | Path, data: str | Path, *, bootstrap: int = 1000,
             out: str | Path | None = None, batch_size: int = 64, device: str = "auto",
             progress: bool = True, engine: str = "auto", threads: int | None = None,
             tta: str = "none") -> dict:
    """Every metric of the run on the folder ``data`` (``DATA/<class>/<image>``, class folders
    named as the run's classes; a class the run does not know is an error).

    Returns the dict of :func:`vistrain.evaluation.metrics.compute_metrics` (accuracy, per-class
    precision/recall/F1, AUCs, calibration, ``ci95`` from ``bootstrap`` resamples) plus
    ``skipped_files`` (unreadable images) and ``engine``, the one that computed the probabilities
    (``engine``: auto | torch | onnxruntime | onnxruntime-int8, see
    :meth:`vistrain.predictor.Classifier.from_run`; ``threads``: ONNX Runtime threads), ``tta``
    (none | flip | flip+crops: test-time augmentation) and ``temperature`` (the run's calibration).
    ``out`` (a folder: new, empty or an earlier evaluation's; never the run itself, nor inside
    ``data`` or the run's training data, checked before any work) receives ``metrics.json``,
    ``predictions.json`` and the figures (confusion matrices, ROC, PR, reliability).
    ``device``: auto (CUDA when there is one) | cpu | cuda | cuda:N.

    Example:
        >>> import vistrain
        >>> m = vistrain.evaluate("runs/demo", "new_photos", out="runs/demo/eval-new")  # doctest: +SKIP
        >>> m["n_samples"], m["skipped_files"]                                         # doctest: +SKIP
        (412, [])
    """
    show_log_lines()
    read_meta(run_dir)  # a missing or incomplete run fails before the data folder is decoded
    if out is not None:  # refused before any image is decoded; created once there is a result
        fsutil.check_outputs_folder(out, data_folders=[data, recorded_data_root(run_dir)])
    return evaluate_folder(run_dir, data, batch_size=batch_size, progress=progress,
                           n_bootstrap=bootstrap, out_dir=out, device=device, engine=engine,
                           threads=threads, tta=tta)


def check_classes(index: ImageIndex, classes: list[str]) -> np.ndarray:
    """The model's class index of every image of ``index``, ``(N,)`` int64; a class folder the
    model does not know is a one-line error listing every such folder and the model's classes."""
    unknown = [c for c in index.classes if c not in classes]
    if unknown:
        known = ", ".join(classes[:30]) + (" ..." if len(classes) > 30 else "")
        raise DataError(f"{index.root}: class folder(s) {', '.join(unknown)} unknown to the model "
                        f"(it knows {known}); rename or remove them")
    return np.array([classes.index(index.classes[y]) for y in index.labels], dtype=np.int64)


def evaluate_folder(run_dir: str | Path, data: str | Path, *, batch_size: int = 64,
                    progress: bool = True, n_bootstrap: int = 1000, out_dir: str | Path | None = None,
                    device: str = "auto", engine: str = "auto", threads: int | None = None,
                    tta: str = "none") -> dict:
    """All metrics (see :func:`vistrain.evaluation.metrics.compute_metrics`) of the run on ``data``.

    Class folders of ``data`` are matched to the model's classes by name; a folder the model
    does not know is an error (before any image is decoded), a class of the model missing from
    ``data`` is reported as absent.  With ``out_dir``: metrics.json, predictions.json (files,
    labels, probs) and the figures of :func:`vistrain.evaluation.figures.write_eval_figures`.
    ``device``: auto | cpu | cuda | cuda:N (auto: CUDA when there is one); ``engine``: see
    :func:`evaluate` (ONNX Runtime gets the same uint8 pixels and normalizes inside its graph);
    ``tta``: none | flip | flip+crops, the views' probabilities averaged.  The run's calibration
    temperature scales the logits as in training's final evaluation; ``metrics`` records
    ``engine``, ``tta`` and ``temperature``.
    """
    check_tta(tta)
    # the same predict() and BatchPipeline that training evaluates with
    # itself evaluates with, so the numbers agree exactly
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; give --out a folder path")
    classes = read_meta(run_dir)["classes"]
    index = scan_folder(data, min_classes=1)
    labels = check_classes(index, classes)
    model, meta = load_model(run_dir)
    session = open_engine(run_dir, meta, engine, device=device, threads=threads)  # checked early
    pre = Preprocess.from_dict(meta["preprocess"])
    pixels, bad = build_pixel_cache(index.paths, pre.pixels, (pre.channels, pre.size, pre.size),
                                    progress=progress)
    keep = np.array([i for i, p in enumerate(index.paths) if str(p) not in bad], dtype=np.int64)
    if len(keep) == 0:
        raise DataError(f"{index.root}: none of its {len(index.paths)} images could be read "
                        f"(first: {next(iter(bad.items()))[0]}: {next(iter(bad.items()))[1]})")
    t = temperature(meta)
    if session is None and tta == "none":
        rt = Runtime.create(device)
        model = rt.prepare_model(model)
        batches = ArrayBatches(pixels, labels, batch_size=batch_size, indices=keep)
        probs, y = predict(model, batches, BatchPipeline(normalize=pre.normalize), rt, progress=progress)
        probs = scale_probabilities(probs, t) if t != 1.0 else probs  # as training's final evaluation
        probs = check_finite_probabilities(probs, Path(run_dir) / WEIGHTS)
    else:
        clf = Classifier(model, classes, pre, source=str(run_dir), session=session, temperature=t, tta=tta,
                         device=str(Runtime.create(device).device) if session is None else "cpu")
        probs = batched(lambda x: clf.predict_pixels(list(x)), pixels[keep], batch_size)
        y = labels[keep]
    metrics = compute_metrics(y, probs, classes, n_bootstrap=n_bootstrap)
    metrics.update(engine=session.name if session is not None else "torch", tta=tta, temperature=t)
    metrics["skipped_files"] = [{"file": f, "reason": r} for f, r in bad.items()]
    if out_dir is not None:
        write_evaluation(Path(out_dir), run_dir, index, keep, classes, y, probs, metrics)
    return metrics


def write_evaluation(out: Path, run_dir, index: ImageIndex, keep: np.ndarray, classes: list[str],
                     y: np.ndarray, probs: np.ndarray, metrics: dict) -> None:
    """metrics.json, predictions.json (``probs`` ``(N, K)`` rounded to 6 decimals) and figures."""
    fsutil.prepare_outputs_folder(out, data_folders=[index.root])
    # atomic: a full disk or a Ctrl-C leaves the previous file or none, never a truncated one
    fsutil.atomic_write_json(out / "metrics.json", metrics)
    fsutil.atomic_write_text(out / "predictions.json", json.dumps(
        {"run_dir": str(run_dir), "data": str(index.root), "classes": classes,
         "files": [str(index.paths[i]) for i in keep], "labels": y.tolist(),
         "probs": probs.round(6).tolist()}))
    write_eval_figures(out, y, probs, classes, metrics)
