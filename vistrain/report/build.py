"""Entry point for a run's ``report.html`` (built by :mod:`vistrain.report.html`), and the
embedding helpers shared by the other self-contained pages (cross-validation, compare)."""
from __future__ import annotations

import base64
import html
from pathlib import Path


def png_img(data: bytes, alt: str) -> str:
    """An ``<img>`` whose source is the PNG bytes ``data`` as a data URI; ``alt`` is escaped."""
    return (f'<img alt="{html.escape(str(alt), quote=True)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def embed_png(path: Path) -> str:
    """An ``<img>`` whose source is the PNG itself as a data URI (no file next to the page)."""
    return png_img(Path(path).read_bytes(), Path(path).stem)


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's JSON files and pictures; returns its path.

    ``run_dir`` is the output folder of ``vistrain train``, ``cv`` or ``compare``.
    """
    from vistrain.report.html import build_full_report  # html imports this module: a real cycle
    return build_full_report(Path(run_dir))
