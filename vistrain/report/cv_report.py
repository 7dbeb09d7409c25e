"""``OUT/report.html`` of a cross-validation run: fold table, mean ± std, pooled OOF figures.

Self-contained (figures embedded as base64 data URIs), built from ``cv_metrics.json`` and the
``oof_*.png`` figures that :func:`vistrain.workflows.cv.aggregate` writes.  Every value read from
``cv_metrics.json`` is HTML-escaped (numbers are formatted, anything else shown as text), so a
hand-edited or crafted file cannot inject markup.  ``vistrain report OUT`` rebuilds the page.
"""
from __future__ import annotations

import html
import json
from numbers import Real
from pathlib import Path

from vistrain.errors import RunDirError
from vistrain.report.build import embed_png

_COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("macro_f1", "macro F1"),
            ("macro_auc_roc", "macro AUC-ROC"), ("ece", "ECE"))
_FIGURES = (("oof_confusion_matrix.png", "Confusion matrix (counts)"),
            ("oof_confusion_matrix_normalized.png", "Confusion matrix (row-normalized)"),
            ("oof_roc_curves.png", "ROC curves (one vs rest)"),
            ("oof_pr_curves.png", "Precision-recall curves"),
            ("oof_reliability.png", "Reliability diagram"))


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _f(v, digits: int = 4) -> str:
    """A number with ``digits`` decimals, ``-`` for None, anything else escaped as text."""
    if v is None:
        return "-"
    if isinstance(v, Real) and not isinstance(v, bool):
        return f"{v:.{digits}f}"
    return _esc(v)


def _get(d, *keys):
    """``d[k1][k2]...`` or None when a level is missing or not a dict/list."""
    for k in keys:
        try:
            d = d[k]
        except (KeyError, IndexError, TypeError):
            return None
    return d


def cv_outputs_present(out: Path) -> bool:
    """True for an output folder of ``vistrain cv`` (finished or not)."""
    return (Path(out) / "cv_metrics.json").is_file() or (Path(out) / "folds.json").is_file()


def _load_result(out: Path) -> dict:
    path = out / "cv_metrics.json"
    if not path.is_file():
        raise RunDirError(f"{out}: cross-validation not finished (no cv_metrics.json); run the "
                          f"missing folds with `vistrain cv DATA --folds K --out {out} --resume`")
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path}: cannot read it ({err}); run `vistrain cv ... --resume` again "
                          "to rewrite it") from None
    if not isinstance(res, dict) or not isinstance(_get(res, "summary", "metrics"), dict):
        raise RunDirError(f"{path}: not a cv_metrics.json of `vistrain cv` (no summary.metrics)")
    return res


def _fold_rows(res: dict, cols) -> list[str]:
    summary = res["summary"]["metrics"]
    rows = []
    folds = res.get("folds") if isinstance(res.get("folds"), list) else []
    for f, row in enumerate(folds):
        cells = "".join(f"<td>{_f(_get(summary, key, 'values', f))}</td>" for key, _ in cols)
        sizes = "/".join(_esc(_get(row, k)) for k in ("n_train", "n_val", "n_test"))
        rows.append(f"<tr><td>fold {_esc(_get(row, 'fold'))}</td><td>{sizes}</td>"
                    f"<td>{_f(_get(row, 'wall_seconds'), 1)}</td>{cells}</tr>")
    mean = "".join(f"<td><b>{_f(_get(summary, key, 'mean'))} ± {_f(_get(summary, key, 'std'))}</b></td>"
                   for key, _ in cols)
    rows.append(f"<tr><td><b>mean ± std</b></td><td></td><td></td>{mean}</tr>")
    p = res.get("pooled_oof") or {}
    pooled = {"accuracy": _get(p, "accuracy"), "balanced_accuracy": _get(p, "balanced_accuracy"),
              "macro_f1": _get(p, "macro", "f1"), "macro_auc_roc": _get(p, "macro", "auc_roc"),
              "ece": _get(p, "ece")}
    rows.append("<tr><td>pooled out-of-fold</td><td></td><td></td>"
                + "".join(f"<td>{_f(pooled.get(key))}</td>" for key, _ in cols) + "</tr>")
    return rows


def render_cv_report(out: Path, res: dict) -> str:
    """The page (a string) for the cross-validation folder ``out`` and its ``cv_metrics.json``."""
    summary = res["summary"]["metrics"]
    cols = [(key, label) for key, label in _COLUMNS if key in summary]
    head = "".join(f"<th>{_esc(label)}</th>" for _, label in cols)
    class_counts = res.get("class_counts") if isinstance(res.get("class_counts"), dict) else {}
    counts = ", ".join(f"{_esc(c)}: {_esc(n)}" for c, n in class_counts.items())
    figs = "".join(f"<h3>{_esc(title)}</h3>{embed_png(out / name)}"
                   for name, title in _FIGURES if (out / name).is_file())
    body = [f"<h1>vistrain {_esc(res.get('n_folds', '?'))}-fold cross-validation</h1>",
            f"<p>Folds over the {_esc(res.get('pool', '?'))}, stratified, seed {_esc(res.get('seed', '?'))}. "
            f"Each fold model is trained on train (early stopping on val, a stratified slice of "
            f"the fold's training part) and scored on its held-out fold. Std is the sample std "
            f"(ddof=1) over folds.</p>",
            f"<p>Classes ({len(class_counts)}): {counts}; imbalance ratio "
            f"{_f(res.get('imbalance_ratio'), 2)}</p>",
            f"<table><tr><th></th><th>n train/val/test</th><th>seconds</th>{head}</tr>"
            + "".join(_fold_rows(res, cols)) + "</table>",
            f"<h2>Pooled out-of-fold predictions ({_esc(_get(res, 'pooled_oof', 'n_samples'))} images)</h2>"
            + figs]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>vistrain cross-validation</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}td,th{padding:2px 8px;"
            "text-align:right}img{max-width:100%}</style></head><body>" + "\n".join(body) + "</body></html>")


def build_cv_report(out_dir) -> Path:
    """Write ``out_dir/report.html``; returns its path."""
    out = Path(out_dir)
    page = render_cv_report(out, _load_result(out))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
