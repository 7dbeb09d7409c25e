"""The sections of a run's report on how well it does: metrics, confusion matrix, ROC/PR/reliability.

Pictures the run already wrote (``confusion_matrix.png``... in its folder or ``figures/``) are
embedded as they are; missing ones are drawn now from ``metrics.json`` / ``predictions.json``.

Example:
    >>> from vistrain.rundir import RunFolder
    >>> blocks = metrics_blocks(RunFolder.read("runs/demo"))       # doctest: +SKIP
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from vistrain.evaluation.plots import plot_confusion_matrix, plot_pr_curves, plot_reliability, plot_roc_curves
from vistrain.report.page import Card, Cards, Cell, Heading, Table, Text, file_picture, fmt, note
from vistrain.rundir import CalibrationMetrics, PartMetrics, RunFolder

# the figure names a run may hold for each plot, preferred first
EVAL_FIGURES = {"confusion": ("confusion_matrix_normalized", "confusion_matrix"),
                "roc": ("roc_curves",), "pr": ("pr_curves",), "reliability": ("reliability",)}
CI_KEYS = {"accuracy": "accuracy", "balanced accuracy": "balanced_accuracy", "macro F1": "macro_f1",
           "macro AUC-ROC": "macro_auc_roc", "ECE": "ece"}


def metric_rows(m: PartMetrics) -> list[list]:
    """``[name, value cell]`` rows of one part: accuracies, macro F1/AUC and ECE with 95% CI, top-k."""
    values = {"accuracy": m.accuracy, "balanced accuracy": m.balanced_accuracy, "macro F1": m.macro_f1,
              "macro AUC-ROC": m.macro_auc_roc, "ECE": m.ece}
    rows = []
    for name, v in values.items():
        ci = m.ci95.get(CI_KEYS[name])
        detail = f"[{fmt(ci.low)}, {fmt(ci.high)}]" if ci is not None and ci.low is not None else None
        rows.append([name, Cell(fmt(v), detail=detail)])
    rows.append(["NLL (log loss)", fmt(m.nll)])
    rows += [[f"top-{k} accuracy", fmt(v)] for k, v in m.top_k_accuracy.items() if k != "1"]
    return rows


def metrics_blocks(folder: RunFolder) -> list:
    if not folder.metrics:
        return [note("no metrics.json")]
    out: list = []
    for part, m in folder.metrics.items():
        out += [Heading(f"{part} ({m.n_samples} images)"), Table(["metric", "value [95% CI]"], metric_rows(m))]
        if m.per_class:
            out.append(Table(["class", "support", "predicted", "precision", "recall", "F1", "AUC-ROC"],
                             [[r.name, r.support, r.n_predicted, fmt(r.precision), fmt(r.recall), fmt(r.f1),
                               fmt(r.auc_roc)] for r in m.per_class]))
    return out


def eval_figure_blocks(folder: RunFolder, key: str, draw) -> list:
    """The run's PNG for plot ``key`` if it wrote one, else ``draw(path)`` now (a temp file)."""
    for name in EVAL_FIGURES[key]:
        path = folder.figure_file(name)
        if path is not None:
            return [file_picture(path, name)]
    with tempfile.TemporaryDirectory() as tmp:
        return [file_picture(draw(Path(tmp) / f"{key}.png"), key)]


def confusion_blocks(folder: RunFolder) -> list:
    part = folder.evaluated_part()
    m = folder.metrics.get(part) if part else None
    if m is None or m.confusion_matrix is None:
        return [note("no predictions to draw a confusion matrix from")]
    return [Text(f"{part} part, rows = true class, columns = predicted class"),
            *eval_figure_blocks(folder, "confusion",
                                lambda p: plot_confusion_matrix(m.confusion_matrix, m.class_names, p))]


def roc_pr_reliability_blocks(folder: RunFolder) -> list:
    part = folder.evaluated_part()
    m = folder.metrics.get(part) if part else None
    if m is None or m.reliability is None:
        return [note("no predictions.json: no ROC / PR / reliability plots")]
    pred, classes = folder.predictions[part], folder.classes
    y, p = pred.labels, pred.probs
    return [Heading("ROC curves (one vs rest)"),
            *eval_figure_blocks(folder, "roc", lambda q: plot_roc_curves(y, p, classes, q)),
            Heading("Precision-recall curves"),
            *eval_figure_blocks(folder, "pr", lambda q: plot_pr_curves(y, p, classes, q)),
            Heading("Reliability (calibration)"),
            *(calibration_blocks(m.calibration, part) if m.calibration is not None else
              eval_figure_blocks(folder, "reliability", lambda q: plot_reliability(m.reliability, q)))]


def calibration_blocks(c: CalibrationMetrics, part: str) -> list:
    """Temperature scaling in words (applied or not, and why) and the reliability diagrams before
    and after, side by side; a kept raw softmax shows its one diagram."""
    if c.decision == "not applied":
        text = Text(f"Temperature scaling not applied (T = 1): {c.reason or 'no reason recorded'}. "
                    f"The probabilities are the raw softmax; on the {part} part ECE {fmt(c.ece_before)}, "
                    f"NLL {fmt(c.nll_before)}.")
        return [text, Cards([Card(_reliability_picture(c.reliability_before, "raw softmax"),
                                  "raw softmax", [])])] if c.reliability_before else [text]
    changed = ("lower" if (c.ece_after or 0) < (c.ece_before or 0) else "not lower: the fit on val did "
               "not carry over to this part")
    text = Text(f"Temperature scaling: T = {fmt(c.temperature, 3)}, fitted on the {c.fitted_on or 'val'} "
                f"part only{'' if not c.reason else ' (' + c.reason + ')'}; the model's probabilities are "
                f"softmax(logits / T) (predict, evaluate, explain and the export apply it). On the {part} "
                f"part: ECE {fmt(c.ece_before)} raw, {fmt(c.ece_after)} scaled ({changed}); "
                f"NLL {fmt(c.nll_before)} raw, {fmt(c.nll_after)} scaled; accuracy is unchanged (the argmax is).")
    cards = []
    for label, bins in (("before (raw softmax)", c.reliability_before), ("after (temperature-scaled)", c.reliability_after)):
        if bins is None:
            cards.append(Card(note("no reliability bins"), label, []))
            continue
        cards.append(Card(_reliability_picture(bins, label), label, []))
    return [text, Cards(cards)]


def _reliability_picture(bins: dict, alt: str):
    """The reliability diagram of ``bins`` as an embedded picture (drawn in a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        return file_picture(plot_reliability(bins, Path(tmp) / "r.png"), alt)
