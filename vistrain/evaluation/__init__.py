"""Evaluation: metrics (``vistrain.evaluation.metrics``) and their figures (``.plots``).

Kept light: the names below are imported on first use, so ``import vistrain.evaluation`` loads
neither scikit-learn nor matplotlib.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "compute_metrics": "metrics", "format_table": "tables",
    "summarize_folds": "fold_metrics", "format_folds": "fold_metrics",
    "plot_confusion_matrix": "plots", "plot_roc_curves": "plots",
    "plot_pr_curves": "plots", "plot_reliability": "plots",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:  # lazy on purpose: the CLI imports evaluation.tables before any verb runs
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
