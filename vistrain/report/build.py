"""``report.html``: one self-contained file per run (images embedded as data URIs).

This is the minimal report; :mod:`vistrain.report.html` grows the full one when present.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path


def embed_png(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _load(run_dir: Path, name: str, default=None):
    p = run_dir / name
    return json.loads(p.read_text()) if p.exists() else default


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's JSON files and pictures; returns its path."""
    run_dir = Path(run_dir)
    try:
        from vistrain.report.html import build_full_report
    except ImportError:
        build_full_report = None
    if build_full_report is not None:
        return build_full_report(run_dir)
    from vistrain.report.curves import plot_history
    history = _load(run_dir, "history.json", [])
    if history:
        plot_history(history, run_dir / "curves.png")
    meta, metrics, run = _load(run_dir, "model.json", {}), _load(run_dir, "metrics.json", {}), _load(run_dir, "run.json", {})
    rows = "".join(f"<tr><td>{html.escape(part)}</td><td>{m.get('accuracy', float('nan')):.4f}</td>"
                   f"<td>{m.get('macro', {}).get('f1', float('nan')):.4f}</td></tr>"
                   for part, m in metrics.items())
    body = [f"<h1>vistrain run: {html.escape(str(meta.get('model_name', '')))}</h1>",
            f"<p>Classes: {html.escape(', '.join(meta.get('classes', [])))}</p>",
            f"<h2>Metrics</h2><table><tr><th>part</th><th>accuracy</th><th>macro F1</th></tr>{rows}</table>",
            "<h2>Curves</h2>" + (embed_png(run_dir / "curves.png") if (run_dir / "curves.png").exists() else ""),
            f"<h2>Reproducibility</h2><pre>{html.escape(json.dumps(run, indent=1))}</pre>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vistrain report</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}td,th{padding:2px 8px}"
            "img{max-width:100%}</style></head><body>" + "\n".join(body) + "</body></html>")
    out = run_dir / "report.html"
    out.write_text(page)
    return out
