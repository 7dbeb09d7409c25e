"""Entry point for an output folder's ``report.html`` (built by :mod:`vistrain.report.html`).

Example:
    >>> from vistrain.report.build import build_report
    >>> build_report("runs/demo").name                             # doctest: +SKIP
    'report.html'
"""
from __future__ import annotations

from pathlib import Path

from vistrain.report.html import build_full_report


def build_report(run_dir: str | Path, *, progress: bool = True) -> Path:
    """Write ``run_dir/report.html`` from the run's JSON files and pictures; returns its path.

    ``run_dir`` is the output folder of ``vistrain train``, ``cv`` or ``compare``.
    """
    return build_full_report(Path(run_dir), progress=progress)
