"""``build_report``: (re)write the self-contained ``report.html`` of a train, cv or compare folder.

Example:
    >>> import vistrain
    >>> vistrain.build_report("runs/demo")            # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""
from __future__ import annotations

from pathlib import Path

from vistrain.report.html import build_full_report
from vistrain.workflows.common import show_log_lines


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` and return its path; ``run_dir`` is the output folder of
    ``vistrain train``, ``vistrain cv`` or ``vistrain compare`` (a damaged file is one line naming it)."""
    show_log_lines()
    return build_full_report(run_dir)
