"""Evaluation figures saved as PNG: confusion matrix, ROC and precision-recall curves,
reliability diagram.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg
on save) and never through ``pyplot`` (the helpers of :mod:`vistrain.evaluation.png`): no global
state, no GUI backend switched, safe in threads and notebooks.  Every function
creates the parent folder of ``path``, writes the PNG and returns ``path`` as a ``Path``.

Example::

    >>> import numpy as np, tempfile, pathlib
    >>> from vistrain.evaluation.metrics import compute_metrics
    >>> rng = np.random.default_rng(0)
    >>> probs = rng.dirichlet(np.ones(3), size=100); y = rng.integers(0, 3, size=100)
    >>> m = compute_metrics(y, probs, ["a", "b", "c"], n_bootstrap=0)
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> png = plot_confusion_matrix(m["confusion_matrix"], m["class_names"], out / "cm.png")
    >>> png.stat().st_size > 0
    True
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vistrain.evaluation.png import new_figure, save_figure

__all__ = ["plot_confusion_matrix", "plot_roc_curves", "plot_pr_curves", "plot_reliability"]


def _class_colors(n: int):
    """Distinct colours for up to 20 classes (tab10, then tab20), cycling beyond."""
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_confusion_matrix(cm, class_names: Sequence[str], path, normalized: bool = True) -> Path:
    """Heat map of a confusion matrix, every cell annotated with its count.

    Args:
        cm: (K, K) counts, rows = true class, columns = predicted class (``confusion_matrix``
            of :func:`compute_metrics`).
        class_names: K names.
        path: PNG file to write.
        normalized: colour by the row-normalized rate (recall per row; a row with no samples
            is 0) and annotate ``count`` plus the rate in %; False colours by raw counts.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    values = rates if normalized else cm
    side = min(max(5.0, 0.42 * k + 3.5), 16)  # ~0.42 inch per cell: 20 classes still legible
    label_inches = 0.075 * min(max(len(str(c)) for c in class_names), 32)  # room for y labels
    fig = new_figure((side + 1.5 + label_inches, side + 0.6 * label_inches))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else max(cm.max(), 1))
    fig.colorbar(im, ax=ax, fraction=0.046,
                 label="fraction of true class" if normalized else "count")
    font = 10 if k <= 8 else 8 if k <= 14 else 7
    threshold = values.max() / 2 if values.max() > 0 else 1
    for i in range(k):
        for j in range(k):
            text = f"{cm[i, j]}" + (f"\n{100 * rates[i, j]:.0f}%" if normalized and k <= 12 else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=font,
                    color="white" if values[i, j] > threshold else "black")
    rotate = k > 4 or max(len(str(c)) for c in class_names) > 8
    ax.set_xticks(range(k), labels=class_names, rotation=45 if rotate else 0,
                  ha="right" if rotate else "center", rotation_mode="anchor", fontsize=font + 2)
    ax.set_yticks(range(k), labels=class_names, fontsize=font + 2)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix" + (" (colour: row-normalized)" if normalized else ""))
    return save_figure(fig, path)


def _one_vs_rest(y_true, probs, class_names):
    """[(name, index, binary labels, scores)] per curve: the positive class only for binary
    tasks, else every class with both positives and negatives in y_true."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    classes = [1] if p.shape[1] == 2 else range(p.shape[1])
    out = []
    for c in classes:
        hits = y == c
        if 0 < hits.sum() < len(y):
            out.append((class_names[c], c, hits, p[:, c]))
    return out


def _legend(ax, n_entries):
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8 if n_entries <= 12 else 7,
              frameon=False)


def plot_roc_curves(y_true, probs, class_names: Sequence[str], path) -> Path:
    """One-vs-rest ROC curve per class (AUC in the legend) plus the macro-average curve
    (mean TPR over a common FPR grid; its legend shows the mean of the per-class AUCs, i.e.
    the macro AUC of :func:`compute_metrics`).  Binary: one curve, for ``class_names[1]``.
    Classes absent from ``y_true`` have no curve.

    Args: y_true (N,) int labels, probs (N, K) probabilities, K class names, PNG path.
    """
    from sklearn.metrics import roc_auc_score, roc_curve
    curves = _one_vs_rest(y_true, probs, class_names)
    fig = new_figure((8.5, 6))
    ax = fig.add_subplot()
    colors = _class_colors(len(curves))
    grid = np.linspace(0, 1, 201)
    tprs, aucs = [], []
    for (name, _, hits, score), color in zip(curves, colors):
        fpr, tpr, _ = roc_curve(hits, score)
        aucs.append(roc_auc_score(hits, score))
        tprs.append(np.interp(grid, fpr, tpr))
        ax.plot(fpr, tpr, color=color, lw=1.3, label=f"{name} (AUC {aucs[-1]:.3f})")
    if len(curves) > 1:
        ax.plot(grid, np.mean(tprs, axis=0), color="black", lw=2.5,
                label=f"macro-average (AUC {np.mean(aucs):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate",
           ylabel="true positive rate", title="ROC curves (one-vs-rest)")
    if not curves:
        ax.text(0.5, 0.5, "undefined: y_true holds a single class", ha="center")
    _legend(ax, len(curves) + 2)
    return save_figure(fig, path)


def plot_pr_curves(y_true, probs, class_names: Sequence[str], path) -> Path:
    """One-vs-rest precision-recall curve per class, average precision (AP) in the legend, the
    macro-average curve (mean precision over a common recall grid; legend: mean AP) and, for a
    binary task, the chance level (prevalence).  Binary: one curve, for ``class_names[1]``.

    Args: y_true (N,) int labels, probs (N, K) probabilities, K class names, PNG path.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve
    curves = _one_vs_rest(y_true, probs, class_names)
    fig = new_figure((8.5, 6))
    ax = fig.add_subplot()
    colors = _class_colors(len(curves))
    grid = np.linspace(0, 1, 201)
    precisions, aps = [], []
    for (name, _, hits, score), color in zip(curves, colors):
        precision, recall, _ = precision_recall_curve(hits, score)
        aps.append(average_precision_score(hits, score))
        # recall is decreasing; np.interp needs increasing x.
        precisions.append(np.interp(grid, recall[::-1], precision[::-1]))
        ax.step(recall, precision, where="post", color=color, lw=1.3,
                label=f"{name} (AP {aps[-1]:.3f})")
    if len(curves) > 1:
        ax.plot(grid, np.mean(precisions, axis=0), color="black", lw=2.5,
                label=f"macro-average (AP {np.mean(aps):.3f})")
    elif curves:
        prevalence = curves[0][2].mean()
        ax.axhline(prevalence, ls="--", color="grey", lw=1, label=f"chance ({prevalence:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision",
           title="Precision-recall curves (one-vs-rest)")
    if not curves:
        ax.text(0.5, 0.5, "undefined: y_true holds a single class", ha="center")
    _legend(ax, len(curves) + 1)
    return save_figure(fig, path)


def plot_reliability(reliability: dict, path) -> Path:
    """Reliability diagram: accuracy vs mean confidence per bin (bars), the diagonal of perfect
    calibration, the gap per bin, and the sample count per bin below; ECE in the title.

    Args:
        reliability: ``metrics["reliability"]`` of :func:`compute_metrics`
            ({edges: B+1, confidence: B, accuracy: B, count: B}; empty bins hold None).
        path: PNG file to write.
    """
    edges = np.asarray(reliability["edges"], dtype=np.float64)
    count = np.asarray(reliability["count"], dtype=np.int64)
    nan = float("nan")
    conf = np.array([nan if v is None else v for v in reliability["confidence"]])
    acc = np.array([nan if v is None else v for v in reliability["accuracy"]])
    filled = count > 0
    # Same formula as compute_metrics' ECE: sum over bins of (n_b / N) * |acc_b - conf_b|.
    ece = float(np.sum(count[filled] * np.abs(acc[filled] - conf[filled])) / max(count.sum(), 1))
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = new_figure((6, 7))
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(centers[filled], acc[filled], width=widths[filled], color="tab:blue",
           edgecolor="white", label="accuracy")
    # Hatched, unfilled gap bars: readable whether the bin is over- or under-confident.
    ax.bar(centers[filled], np.abs(conf[filled] - acc[filled]),
           bottom=np.minimum(acc[filled], conf[filled]), width=widths[filled],
           facecolor="none", edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
           title=f"Reliability diagram (ECE {ece:.4f}, {len(count)} bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax_count.bar(centers, count, width=widths, color="grey", edgecolor="white")
    ax_count.set(xlabel="confidence (top-1 probability)", ylabel="samples")
    return save_figure(fig, path)
