"""Metrics across cross-validation folds: mean and sample std of the headline metrics, as text.

:func:`summarize_folds` turns one :func:`~vistrain.evaluation.metrics.compute_metrics` dict per
fold into ``cv_metrics.json``'s summary; :func:`format_folds` prints it.

Example:
    >>> s = {"n_folds": 2, "std_ddof": 1, "metrics": {"ece": {"mean": 0.1, "std": None, "n": 1,
    ...                                                        "values": [0.1, None]}}}
    >>> print(format_folds(s).splitlines()[-1])
    ece     0.1000 ± -         0.1000 -
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vistrain.evaluation.tables import fmt


def _headline(m: dict) -> dict:
    """The scalar metrics summarised across folds, by name (None where undefined)."""
    out = {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
           "macro_precision": m["macro"]["precision"], "macro_recall": m["macro"]["recall"],
           "macro_f1": m["macro"]["f1"], "weighted_f1": m["weighted"]["f1"],
           "macro_auc_roc": m["macro"]["auc_roc"]}
    out.update({f"top_{k}_accuracy": v for k, v in m["top_k_accuracy"].items() if k != "1"})
    out["ece"] = m["ece"]
    return out


def summarize_folds(fold_metrics: Sequence[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1) of headline metrics across CV folds.

    Args:
        fold_metrics: one :func:`compute_metrics` dict per fold (same class names).

    Returns ``{"n_folds": F, "std_ddof": 1, "metrics": {name: {"mean", "std", "n", "values"}}}``
    where ``values`` lists the F per-fold values (None where undefined in that fold), ``n``
    counts the defined ones, mean/std are over those (std is None when n < 2, mean when n = 0).
    Names: accuracy, balanced_accuracy, macro_precision, macro_recall, macro_f1, weighted_f1,
    macro_auc_roc, top_<k>_accuracy (k > 1 reported by every fold), ece.

    Example::

        >>> from vistrain.evaluation.metrics import compute_metrics
        >>> folds = [compute_metrics([0, 1, 1], p, ["a", "b"], n_bootstrap=0)
        ...          for p in ([[.9, .1], [.2, .8], [.6, .4]], [[.9, .1], [.2, .8], [.4, .6]])]
        >>> s = summarize_folds(folds)["metrics"]["accuracy"]
        >>> round(s["mean"], 4), round(s["std"], 4), s["n"]
        (0.8333, 0.2357, 2)
    """
    if not fold_metrics:
        raise ValueError("summarize_folds needs at least one fold")
    names = fold_metrics[0]["class_names"]
    if any(f["class_names"] != names for f in fold_metrics):
        raise ValueError("all folds must be evaluated on the same class names")
    heads = [_headline(f) for f in fold_metrics]
    keys = [key for key in heads[0] if all(key in h for h in heads)]
    summary = {}
    for key in keys:
        values = [h[key] for h in heads]
        defined = np.array([v for v in values if v is not None], dtype=np.float64)
        summary[key] = {
            "mean": float(defined.mean()) if len(defined) else None,
            "std": float(defined.std(ddof=1)) if len(defined) >= 2 else None,
            "n": int(len(defined)), "values": values}
    return {"n_folds": len(fold_metrics), "std_ddof": 1, "metrics": summary}


def format_folds(summary: dict) -> str:
    """Plain-text table of :func:`summarize_folds`: mean ± std and the per-fold values.

    Example::

        >>> print(format_folds({"n_folds": 2, "std_ddof": 1, "metrics": {"accuracy":
        ...     {"mean": 0.75, "std": 0.05, "n": 2, "values": [0.7, 0.8]}}}))
        2-fold cross-validation: mean ± sample std (ddof=1) over folds
        metric    mean ± std         folds
        accuracy  0.7500 ± 0.0500    0.7000 0.8000
    """
    rows = summary["metrics"]
    width = max([len(name) for name in rows] + [len("metric")])
    lines = [f"{summary['n_folds']}-fold cross-validation: mean ± sample std "
             f"(ddof={summary['std_ddof']}) over folds",
             f"{'metric':<{width}}  {'mean ± std':<17}  folds"]
    for name, s in rows.items():
        spread = f"{fmt(s['mean'])} ± {fmt(s['std'])}"
        folds = " ".join(fmt(v) for v in s["values"])
        lines.append(f"{name:<{width}}  {spread:<17}  {folds}")
    return "\n".join(lines)
