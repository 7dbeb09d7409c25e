"""``build_report``: (re)write the self-contained ``report.html`` of a train, cv or compare folder.

Example:
    >>> import vistrain
    >>> vistrain.build_report("runs/demo")            # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""
from __future__ import annotations

from pathlib import Path

from vistrain import fsutil
from vistrain.errors import RunDirError
from vistrain.report.html import build_full_report
from vistrain.workflows.logs import show_log_lines


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` and return its path; ``run_dir`` is the output folder of
    ``vistrain train``, ``vistrain cv`` or ``vistrain compare`` (a damaged file is one line naming it)."""
    show_log_lines()
    kind = fsutil.vistrain_output_kind(run_dir)
    if kind not in fsutil.REPLACEABLE:  # report.html only ever goes into a folder vistrain wrote
        raise RunDirError(f"{run_dir}: not a vistrain run directory (report.html goes only into a "
                          f"train, cv or compare folder vistrain wrote, with its {fsutil.MARKER}); "
                          "give the --out folder of `vistrain train`, `cv` or `compare`")
    return build_full_report(run_dir)
