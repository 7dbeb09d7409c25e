"""``cv``: stratified k-fold cross-validation (``vistrain cv``; see :mod:`vistrain.evaluation.cv`).

Example:
    >>> import vistrain
    >>> r = vistrain.cv("examples/fashion-mnist-small", folds=5, out="runs/fm-cv")  # doctest: +SKIP
    >>> m = r["summary"]["metrics"]["accuracy"]; round(m["mean"], 3), round(m["std"], 3)  # doctest: +SKIP
    (0.845, 0.006)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vistrain.data.scan import scan_folder
from vistrain.errors import VistrainError
from vistrain.evaluation.cv import make_folds, run_cv
from vistrain.workflows.common import default_out_dir, make_config, show_log_lines


def cv(data: str | Path | None = None, /, *, folds: int = 5, out: str | Path | None = None,
       fold: int | None = None, resume: bool = False, overwrite: bool = False, config=None,
       progress: bool = True, **settings: Any) -> dict:
    """Train one model per stratified fold into ``out/fold-<k>/`` and aggregate them.

    Returns the content of ``out/cv_metrics.json`` (``summary``: mean ± std over folds,
    ``pooled_oof``: metrics of the pooled out-of-fold predictions, ``folds``: one row per fold)
    plus ``out_dir``; while folds are missing (``fold=K`` runs only fold K)
    ``{"finished", "missing", "out_dir"}``.  ``config`` and ``settings`` as for
    :func:`vistrain.train`; ``resume`` skips finished folds and continues interrupted ones.

    Example:
        >>> import vistrain
        >>> r = vistrain.cv("data", folds=3, out="runs/cv3", epochs=5)  # doctest: +SKIP
        >>> r["n_folds"], r["pooled_oof"]["n_samples"]                 # doctest: +SKIP
        (3, 600)
    """
    show_log_lines()
    cfg = make_config(data, config, settings)
    if out is None:
        if resume or fold is not None:
            raise VistrainError("resume and fold need the cross-validation folder: --out OUT (out=OUT)")
        out = default_out_dir(cfg.data.root, f"-cv{folds}")
    # refuse what can be refused before run_cv creates (or with overwrite replaces) the folder:
    # the data folder and the folds it allows (a directory walk, no decoding)
    make_folds(scan_folder(cfg.data.root), folds, seed=cfg.data.split_seed,
               val_fraction=cfg.data.val_fraction)
    result = run_cv(cfg, Path(out), folds=folds, fold=fold, resume=resume, overwrite=overwrite,
                    progress=progress)
    return {**result, "out_dir": str(out)}
