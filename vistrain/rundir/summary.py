"""A few lines that say what a run is: what ``RunResult`` and ``Classifier`` print in a notebook.

Example:
    >>> from pathlib import Path
    >>> test = {"accuracy": 0.9, "n_samples": 300, "ci95": {"accuracy": {"low": 0.86, "high": 0.93}}}
    >>> print(run_summary("RunResult", Path("runs/demo"), ["cat", "dog"], test))
    RunResult runs/demo
      classes: 2 (cat, dog)
      test accuracy: 0.900 (95% CI 0.860-0.930, n=300)
      report: runs/demo/report.html
"""
from __future__ import annotations

from pathlib import Path

SHOWN_CLASSES = 5  # the first few class names; the count says how many there are


def run_summary(kind: str, run_dir: Path | None, classes: list[str], test: dict | None,
                extra: tuple[str, ...] = ()) -> str:
    """``kind`` and the run folder, the classes (first few + count), the test accuracy with its
    95 % interval (``test``: the ``"test"`` part of metrics.json) and the report path; ``extra``
    lines go before the report."""
    names = ", ".join(classes[:SHOWN_CLASSES]) + (", ..." if len(classes) > SHOWN_CLASSES else "")
    lines = [f"{kind} {run_dir if run_dir is not None else ''}".rstrip(),
             f"  classes: {len(classes)} ({names})",
             f"  test accuracy: {accuracy_text(test)}", *extra]
    if run_dir is not None:
        lines.append(f"  report: {run_dir / 'report.html'}")
    return "\n".join(lines)


def accuracy_text(test: dict | None) -> str:
    """``0.900 (95% CI 0.860-0.930, n=300)``, or ``n/a`` without a test part."""
    if not isinstance(test, dict) or not isinstance(test.get("accuracy"), (int, float)):
        return "n/a (no held-out test part)"
    ci = (test.get("ci95") or {}).get("accuracy") or {}
    interval = f"95% CI {ci['low']:.3f}-{ci['high']:.3f}" if {"low", "high"} <= set(ci) else "no interval"
    n = f", n={test['n_samples']}" if test.get("n_samples") is not None else ""
    return f"{test['accuracy']:.3f} ({interval}{n})"
