"""``OUT/report.html`` of a cross-validation run: fold table, mean ± std, pooled OOF figures.

Self-contained (figures embedded as base64 data URIs), built from ``cv_metrics.json`` and the
``oof_*.png`` figures that :func:`vistrain.evaluation.cv.aggregate` writes.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from vistrain.report.build import embed_png

_COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("macro_f1", "macro F1"),
            ("macro_auc_roc", "macro AUC-ROC"), ("ece", "ECE"))


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def build_cv_report(out_dir) -> Path:
    """Write ``out_dir/report.html``; returns its path."""
    out = Path(out_dir)
    res = json.loads((out / "cv_metrics.json").read_text())
    summary = res["summary"]["metrics"]
    cols = [(key, label) for key, label in _COLUMNS if key in summary]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    rows = []
    for f, row in enumerate(res["folds"]):
        cells = "".join(f"<td>{_f(summary[key]['values'][f])}</td>" for key, _ in cols)
        rows.append(f"<tr><td>fold {row['fold']}</td><td>{row['n_train']}/{row['n_val']}/{row['n_test']}</td>"
                    f"<td>{row.get('wall_seconds') or '-'}</td>{cells}</tr>")
    mean = "".join(f"<td><b>{_f(summary[key]['mean'])} ± {_f(summary[key]['std'])}</b></td>" for key, _ in cols)
    rows.append(f"<tr><td><b>mean ± std</b></td><td></td><td></td>{mean}</tr>")
    p = res["pooled_oof"]
    pooled = {"accuracy": p["accuracy"], "balanced_accuracy": p["balanced_accuracy"],
              "macro_f1": p["macro"]["f1"], "macro_auc_roc": p["macro"]["auc_roc"], "ece": p["ece"]}
    rows.append("<tr><td>pooled out-of-fold</td><td></td><td></td>"
                + "".join(f"<td>{_f(pooled.get(key))}</td>" for key, _ in cols) + "</tr>")
    counts = ", ".join(f"{html.escape(c)}: {n}" for c, n in res["class_counts"].items())
    figs = "".join(f"<h3>{html.escape(title)}</h3>{embed_png(out / name)}"
                   for name, title in (("oof_confusion_matrix.png", "Confusion matrix (counts)"),
                                       ("oof_confusion_matrix_normalized.png", "Confusion matrix (row-normalized)"),
                                       ("oof_roc_curves.png", "ROC curves (one vs rest)"),
                                       ("oof_pr_curves.png", "Precision-recall curves"),
                                       ("oof_reliability.png", "Reliability diagram"))
                   if (out / name).exists())
    body = [f"<h1>vistrain {res['n_folds']}-fold cross-validation</h1>",
            f"<p>Folds over the {html.escape(res['pool'])}, stratified, seed {res['seed']}. "
            f"Each fold model is trained on train (early stopping on val, a stratified slice of "
            f"the fold's training part) and scored on its held-out fold. Std is the sample std "
            f"(ddof=1) over folds.</p>",
            f"<p>Classes ({len(res['classes'])}): {counts}; imbalance ratio "
            f"{res['imbalance_ratio']:.2f}</p>",
            f"<table><tr><th></th><th>n train/val/test</th><th>seconds</th>{head}</tr>"
            + "".join(rows) + "</table>",
            f"<h2>Pooled out-of-fold predictions ({p['n_samples']} images)</h2>{figs}"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vistrain cross-validation</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}td,th{padding:2px 8px;"
            "text-align:right}img{max-width:100%}</style></head><body>" + "\n".join(body) + "</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path
