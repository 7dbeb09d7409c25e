"""Entry point for a run's ``report.html`` (built by :mod:`vistrain.report.html`), and the
embedding helper shared by the other self-contained pages (cross-validation, compare)."""
from __future__ import annotations

import base64
import html
from pathlib import Path


def embed_png(path: Path) -> str:
    """An ``<img>`` whose source is the PNG itself as a data URI (no file next to the page)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's JSON files and pictures; returns its path."""
    from vistrain.report.html import build_full_report
    return build_full_report(Path(run_dir))
