"""``evaluate``: a run scored on a labelled image folder (``vistrain evaluate``).

Example:
    >>> import vistrain
    >>> m = vistrain.evaluate("runs/demo", "examples/fashion-mnist-small")  # doctest: +SKIP
    >>> sorted(m)[:3], round(m["accuracy"], 2)                              # doctest: +SKIP
    (['accuracy', 'balanced_accuracy', 'ci95'], 0.9)
"""
from __future__ import annotations

from pathlib import Path

from vistrain.artifact import read_meta
from vistrain.evaluation.folder import evaluate_folder
from vistrain.workflows.common import show_log_lines


def evaluate(run_dir: str | Path, data: str | Path, *, bootstrap: int = 1000,
             out: str | Path | None = None, batch_size: int = 64, device: str = "auto",
             progress: bool = True) -> dict:
    """Every metric of the run on the folder ``data`` (``DATA/<class>/<image>``, class folders
    named as the run's classes; a class the run does not know is an error).

    Returns the dict of :func:`vistrain.evaluation.metrics.compute_metrics` (accuracy, per-class
    precision/recall/F1, AUCs, calibration, ``ci95`` from ``bootstrap`` resamples) plus
    ``skipped_files`` (unreadable images).  ``out`` (a folder) receives ``metrics.json``,
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
    return evaluate_folder(run_dir, data, batch_size=batch_size, progress=progress,
                           n_bootstrap=bootstrap, out_dir=out, device=device)
