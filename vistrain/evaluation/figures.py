"""The evaluation pictures of a run: confusion matrices, ROC, PR and reliability diagrams.

``write_eval_figures`` draws them from labels and probabilities (plus the metrics dict of
:func:`vistrain.evaluation.metrics.compute_metrics`); ``write_run_figures`` does it for a run
directory from its ``predictions.json`` / ``metrics.json``, on the test part (the val part when
there is no test part).  File names, in the folder given::

    confusion_matrix.png  confusion_matrix_normalized.png  roc_curves.png  pr_curves.png
    reliability.png

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from vistrain.evaluation.metrics import compute_metrics
    >>> rng = np.random.default_rng(0)
    >>> probs = rng.dirichlet(np.ones(3), size=60); y = rng.integers(0, 3, size=60)
    >>> m = compute_metrics(y, probs, ["a", "b", "c"], n_bootstrap=0)
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> sorted(write_eval_figures(out, y, probs, ["a", "b", "c"], m))
    ['confusion_matrix', 'confusion_matrix_normalized', 'pr_curves', 'reliability', 'roc_curves']
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vistrain.evaluation.plots import plot_confusion_matrix, plot_pr_curves, plot_reliability, plot_roc_curves
from vistrain.fsutil import atomic_write_json
from vistrain.rundir import RunFolder

log = logging.getLogger("vistrain")

FIGURES = ("confusion_matrix", "confusion_matrix_normalized", "roc_curves", "pr_curves", "reliability")


def write_eval_figures(run_dir, y_true, probs, classes, metrics: dict, *, prefix: str = "") -> dict[str, Path]:
    """Write the five evaluation PNGs into ``run_dir``; returns ``{name: path}``.

    ``prefix`` is prepended to each file name (e.g. ``"oof_"``).
    """
    run_dir = Path(run_dir)
    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    names = list(classes)
    cm = metrics["confusion_matrix"]
    out = {}

    def target(name):
        return run_dir / f"{prefix}{name}.png"

    out["confusion_matrix"] = plot_confusion_matrix(cm, names, target("confusion_matrix"), normalized=False)
    out["confusion_matrix_normalized"] = plot_confusion_matrix(cm, names, target("confusion_matrix_normalized"),
                                                               normalized=True)
    out["roc_curves"] = plot_roc_curves(y, p, names, target("roc_curves"))
    out["pr_curves"] = plot_pr_curves(y, p, names, target("pr_curves"))
    out["reliability"] = plot_reliability(metrics["reliability"], target("reliability"))
    return out


def write_run_figures(run_dir) -> dict[str, Path]:
    """Figures of a finished run for its test part (val if none), from the run's JSON files.

    Returns ``{}`` (and writes nothing) when the run has no evaluated part.
    """
    folder = RunFolder(Path(run_dir), "train")
    run_dir, part = folder.path, folder.evaluated_part()
    if part is None:
        return {}
    m, preds = folder.metrics[part], folder.predictions[part]
    figs = write_eval_figures(run_dir, preds.labels, preds.probs, m.class_names, m.to_doc())
    atomic_write_json(run_dir / "figures.json", {"part": part, "n_samples": m.n_samples,
                                                 "files": {k: v.name for k, v in figs.items()}}, indent=1)
    log.info("figures (%s part): %s", part, ", ".join(v.name for v in figs.values()))
    return figs
