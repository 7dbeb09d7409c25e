"""Stratified k-fold cross-validation on arrays and indices: the folds, their console summary.

The job that trains one model per fold is :func:`vistrain.workflows.cv.run_cv` (below, its
contract).

``run_cv(cfg, out, folds=K)`` splits the data set (or train+val when the folder has its own
``test/``) into ``K`` stratified folds.  Fold ``k`` trains through the normal training path
(:func:`vistrain.training.run.run_training` with explicit parts) into ``OUT/fold-<k>/``:

* its **test** part is the held-out fold, never seen in training, early stopping or statistics;
* its **val** part is a stratified slice (``data.val_fraction``) of the fold's training part, used
  for early stopping and the best checkpoint;
* normalization statistics (``normalize=dataset``), feature standardization and class-balance
  weights are computed on the fold's **train** part only;
* with a user-given ``test/`` folder, every fold model is also scored on it (part ``given_test``).

Outputs in ``OUT``: ``folds.json`` (indices and files of every fold), ``fold-<k>/`` (a complete
run directory each), ``oof_predictions.json`` (every image's out-of-fold probabilities),
``cv_metrics.json`` (per-fold metrics, mean ± sample std over folds, metrics of the pooled
out-of-fold predictions), ``oof_*.png`` figures and ``report.html``.

Folds run one after another.  They are independent, so they can also run in parallel on several
devices or machines sharing ``OUT``: ``vistrain cv DATA --folds K --out OUT --fold k`` runs only
fold ``k`` (one command per device); the last one to finish (or any later
``vistrain cv ... --resume``) aggregates.  With ``--resume`` a finished fold (``fold-<k>/`` with
``metrics.json`` and ``run.json``) is skipped and an interrupted one continues from its checkpoint.

Pixels and features are cached on disk keyed by the file list and preprocessing, so the folds of
a pretrained feature-extraction run decode the images and extract their features once.

Example:
    >>> from vistrain.config import TrainConfig
    >>> from vistrain.workflows.cv import run_cv
    >>> cfg = TrainConfig.from_dict({"data": {"root": "examples/fashion-mnist-small"}})
    >>> result = run_cv(cfg, "runs/cv-demo", folds=5)            # doctest: +SKIP
    >>> round(result["summary"]["metrics"]["accuracy"]["mean"], 2)  # doctest: +SKIP
    0.85
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vistrain.data.splits import group_holdout, stratified_group_kfold, stratified_holdout, stratified_kfold
from vistrain.errors import DataError
from vistrain.evaluation.fold_metrics import format_folds
from vistrain.evaluation.tables import format_table


def fold_dir(out: Path, k: int) -> Path:
    return Path(out) / f"fold-{k}"


def fold_finished(path: Path) -> bool:
    return (path / "metrics.json").is_file() and (path / "run.json").is_file()


def make_folds(index, k: int, *, seed: int, val_fraction: float, groups: list[str] | None = None) -> dict:
    """The ``k`` folds of ``index`` as parts ``{"train", "val", "test"[, "given_test"]}``.

    Folds are made over the whole index, or over its train+val images when the folder came with
    its own test/ folder (then each fold also gets ``given_test``, the same for every fold).
    With ``groups`` (one per image, :func:`vistrain.data.groups.image_groups`) each group is in
    one test fold only and never in both a fold's train and val parts.
    """
    labels = np.asarray(index.labels, dtype=np.int64)
    given = index.given_split
    if given and "test" in given:
        pool = np.array([i for i, g in enumerate(given) if g != "test"], dtype=np.int64)
        given_test = [i for i, g in enumerate(given) if g == "test"]
    else:
        pool, given_test = np.arange(len(labels)), []
    groups = None if groups is None else np.asarray(groups)
    splits = (stratified_kfold(labels[pool].tolist(), k, seed=seed, classes=index.classes) if groups is None
              else stratified_group_kfold(labels[pool].tolist(), groups[pool].tolist(), k, seed=seed,
                                          classes=index.classes))
    folds = []
    for f, (tr, te) in enumerate(splits):
        train_pool = pool[np.asarray(tr, dtype=np.int64)]
        parts = {"train": sorted(map(int, train_pool)), "val": [],
                 "test": sorted(int(pool[i]) for i in te)}
        if val_fraction > 0:
            try:
                sub = (stratified_holdout(labels[train_pool].tolist(), val_fraction=val_fraction,
                                          test_fraction=0.0, seed=seed + 1 + f, classes=index.classes)
                       if groups is None else
                       group_holdout(labels[train_pool].tolist(), groups[train_pool].tolist(),
                                     val_fraction=val_fraction, test_fraction=0.0, seed=seed + 1 + f,
                                     classes=index.classes))
            except DataError as err:
                raise DataError(f"fold {f}: cannot carve a validation slice out of its training part "
                                f"({err}); use fewer folds, add images, or --set data.val_fraction=0") from None
            parts["train"] = sorted(int(train_pool[i]) for i in sub["train"])
            parts["val"] = sorted(int(train_pool[i]) for i in sub["val"])
        if given_test:
            parts["given_test"] = list(given_test)
        folds.append(parts)
    return {"k": k, "seed": seed, "val_fraction": val_fraction,
            "pool": "train+val (test/ folder held out)" if given_test else "whole data set",
            "by_groups": groups is not None, "folds": folds}


def format_cv(result: dict, per_class: bool | None = None) -> str:
    """Console summary: mean ± std over folds, pooled out-of-fold metrics (per class when the
    classes are imbalanced, ratio > 3, or when ``per_class``)."""
    lines = [format_folds(result["summary"])]
    p = result["pooled_oof"]
    lines.append(f"pooled out-of-fold ({p['n_samples']} images): accuracy {p['accuracy']:.4f}, "
                 f"macro F1 {p['macro']['f1']:.4f}, macro AUC-ROC "
                 + (f"{p['macro']['auc_roc']:.4f}" if p["macro"]["auc_roc"] is not None else "n/a"))
    if "given_test_summary" in result:
        lines += ["", "each fold model on the given test/ folder:", format_folds(result["given_test_summary"])]
    if per_class or (per_class is None and result["imbalance_ratio"] > 3):
        lines += ["", f"class imbalance ratio {result['imbalance_ratio']:.1f}: per-class pooled "
                  "out-of-fold metrics", format_table(p)]
    return "\n".join(lines)
