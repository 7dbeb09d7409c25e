"""``OUT/report.html`` of ``vistrain compare``: curves per setting, final metrics, wall time.

Built from ``OUT/compare.json`` alone (the page :func:`vistrain.workflows.compare.run_compare`
writes as ``compare.html`` holds the same information).  Self-contained (figures as base64 data
URIs); every value of ``compare.json`` is HTML-escaped or formatted as a number, so a hand-edited
or crafted file cannot inject markup, and no path named in it is opened.
"""
from __future__ import annotations

import html
import json
import logging
import tempfile
from numbers import Real
from pathlib import Path

from vistrain.errors import RunDirError
from vistrain.evaluation.compare import plot_compare_curves
from vistrain.report.build import png_img
from vistrain.report.norm_axes import plot_norm_axes

log = logging.getLogger("vistrain")
_CURVE_KEYS = ("epoch", "train_loss", "val_loss", "val_accuracy")


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _num(v) -> float | None:
    return float(v) if isinstance(v, Real) and not isinstance(v, bool) else None


def _f(v, digits: int = 4) -> str:
    """A number with ``digits`` decimals, ``n/a`` for None, anything else escaped as text."""
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if _num(v) is not None else _esc(v)


def load_compare(out: Path) -> dict:
    """``compare.json`` of ``out``, checked to be a dict with a list of runs."""
    path = out / "compare.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path}: cannot read it ({err}); run `vistrain compare` again") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("runs"), list):
        raise RunDirError(f"{path}: not a compare.json of `vistrain compare` (no list of runs)")
    summary["runs"] = [r for r in summary["runs"] if isinstance(r, dict)]
    return summary


def _curves(summary: dict) -> str:
    """The curves figure, drawn from numbers only (names are legend text)."""
    clean = {"model": str(summary.get("model", "?")), "runs": []}
    for r in summary["runs"]:
        history = r.get("history") if isinstance(r.get("history"), list) else []
        rows = [{k: _num(h.get(k)) for k in _CURVE_KEYS} for h in history if isinstance(h, dict)]
        clean["runs"].append({"name": str(r.get("name", "?")),
                              "history": [h for h in rows if h["epoch"] is not None]})
    try:
        return png_img(plot_compare_curves(clean), "training curves per setting")
    except Exception as err:  # a broken history must not lose the page
        log.warning("report: cannot draw the compare curves: %s", err)
        return f"<p><i>no curves: {_esc(err)}</i></p>"


def render_compare_report(summary: dict) -> str:
    """The page (a string) for one ``compare.json``."""
    rows = "".join(
        f"<tr><td>{_esc(r.get('name', '?'))}</td><td>{_esc(r.get('part', '?'))}</td>"
        f"<td>{_esc(r.get('n_samples', '?'))}</td><td>{_f(r.get('accuracy'))}</td>"
        f"<td>{_f(r.get('macro_f1'))}</td><td>{_f(r.get('macro_auc'))}</td>"
        f"<td>{_f(r.get('wall_seconds'), 1)}</td>"
        f"<td>{len(r['history']) if isinstance(r.get('history'), list) else '?'}</td></tr>"
        for r in summary["runs"])
    vary = summary.get("vary") if isinstance(summary.get("vary"), dict) else {}
    varied = "; ".join(f"{_esc(k)} = {_esc(', '.join(map(str, v)) if isinstance(v, list) else v)}"
                       for k, v in vary.items())
    same = summary.get("same_split")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>vistrain compare</title>",
        "<style>body{font-family:sans-serif;max-width:1300px;margin:auto}table{border-collapse:"
        "collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>Comparison: {_esc(summary.get('model', '?'))}</h1>",
        f"<p>Data: {_esc(summary.get('data_root', '?'))}. Varied: {varied}. Seed "
        f"{_esc(summary.get('seed', '?'))}, split seed {_esc(summary.get('split_seed', '?'))}, "
        f"{_esc(summary.get('epochs', '?'))} epoch(s) per run. Same split for every run: "
        f"<b>{'yes' if same is True else 'NO' if same is False else '?'}</b>.</p>",
        "<h2>Curves</h2>", _curves(summary),
        "<h2>Final metrics</h2><table><tr><th>setting</th><th>part</th><th>n</th>"
        "<th>accuracy</th><th>macro-F1</th><th>macro AUC</th><th>wall time (s)</th>"
        f"<th>epochs</th></tr>{rows}</table>",
    ]
    if "norm" in vary:
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_norm_axes(Path(tmp) / "norm_axes.png", dpi=90).read_bytes()
        parts += ["<h2>What each normalization averages over</h2>", png_img(png, "normalization axes")]
    parts.append("</body></html>")
    return "\n".join(parts)


def build_compare_report(out_dir) -> Path:
    """Write ``out_dir/report.html`` from ``out_dir/compare.json``; returns its path."""
    out = Path(out_dir)
    path = out / "report.html"
    path.write_text(render_compare_report(load_compare(out)), encoding="utf-8")
    return path
