"""Stratified k-fold cross-validation: ``K`` honest models, mean ± std, pooled out-of-fold scores.

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
    >>> from vistrain.evaluation.cv import run_cv
    >>> cfg = TrainConfig.from_dict({"data": {"root": "examples/fashion-mnist-small"}})
    >>> result = run_cv(cfg, "runs/cv-demo", folds=5)            # doctest: +SKIP
    >>> round(result["summary"]["metrics"]["accuracy"]["mean"], 2)  # doctest: +SKIP
    0.85
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from vistrain import fsutil
from vistrain.errors import DataError, VistrainError

log = logging.getLogger("vistrain")


def _write_json(path: Path, obj, indent=None) -> None:
    """Atomic write: parallel ``--fold`` processes may read the file while another writes it."""
    fsutil.atomic_write_json(path, obj, indent=indent)


def fold_dir(out: Path, k: int) -> Path:
    return Path(out) / f"fold-{k}"


def fold_finished(path: Path) -> bool:
    return (path / "metrics.json").is_file() and (path / "run.json").is_file()


def make_folds(index, k: int, *, seed: int, val_fraction: float) -> dict:
    """The ``k`` folds of ``index`` as parts ``{"train", "val", "test"[, "given_test"]}``.

    Folds are made over the whole index, or over its train+val images when the folder came with
    its own test/ folder (then each fold also gets ``given_test``, the same for every fold).
    """
    from vistrain.data.splits import stratified_holdout, stratified_kfold
    labels = np.asarray(index.labels, dtype=np.int64)
    given = index.given_split
    if given and "test" in given:
        pool = np.array([i for i, g in enumerate(given) if g != "test"], dtype=np.int64)
        given_test = [i for i, g in enumerate(given) if g == "test"]
    else:
        pool, given_test = np.arange(len(labels)), []
    splits = stratified_kfold(labels[pool].tolist(), k, seed=seed, classes=index.classes)
    folds = []
    for f, (tr, te) in enumerate(splits):
        train_pool = pool[np.asarray(tr, dtype=np.int64)]
        parts = {"train": sorted(map(int, train_pool)), "val": [],
                 "test": sorted(int(pool[i]) for i in te)}
        if val_fraction > 0:
            try:
                sub = stratified_holdout(labels[train_pool].tolist(), val_fraction=val_fraction,
                                         test_fraction=0.0, seed=seed + 1 + f, classes=index.classes)
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
            "folds": folds}


def _prepare_out(out: Path, cfg, *, resume: bool, overwrite: bool, single_fold: bool) -> None:
    """Create the cross-validation folder, or check it for ``--resume``/``--fold``; with
    ``overwrite`` an earlier cv folder is moved aside (never a folder vistrain did not write)."""
    fsutil.prepare_output_dir(out, kind="cv", overwrite=overwrite and not resume,
                              reuse=resume or single_fold, data_folder=cfg.data.root)


def _clean_index(cfg, progress: bool):
    """The scanned index without unreadable files (decoding fills the pixel cache for the folds)."""
    from vistrain.data.scan import scan_folder
    from vistrain.device import Runtime
    from vistrain.models import create
    from vistrain.training.run import prepare_data, scratch_kwargs, spatial_preprocess
    index = scan_folder(cfg.data.root)
    m = cfg.model
    _, pcfg = create(m.name, len(index.classes), pretrained=m.pretrained and not m.name.startswith("vistrain/"),
                     weights=m.weights, drop_rate=m.drop_rate, **scratch_kwargs(cfg))
    rt = Runtime.create(cfg.train.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        cpu_amp=cfg.train.cpu_amp)
    data = prepare_data(cfg, spatial_preprocess(cfg, pcfg), rt, progress, index=index,
                        parts=lambda ix: {})
    return data.index


def _save_folds(out: Path, index, spec: dict) -> None:
    folds = []
    for f, parts in enumerate(spec["folds"]):
        entry = {"fold": f}
        for name, ids in parts.items():
            counts = Counter(index.labels[i] for i in ids)
            entry[name] = {"indices": ids,
                           "files": [str(Path(index.paths[i]).relative_to(index.root)) for i in ids],
                           "counts": {c: counts.get(j, 0) for j, c in enumerate(index.classes)}}
        folds.append(entry)
    doc = {key: spec[key] for key in ("k", "seed", "val_fraction", "pool")}
    doc.update({"data_root": str(index.root), "classes": index.classes, "n_images": len(index),
                "folds": folds})
    _write_json(out / "folds.json", doc, indent=1)


def _check_same_folds(out: Path, index, spec: dict) -> None:
    """On resume / --fold, the saved folds must be the ones we would make now."""
    path = out / "folds.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    same = (saved.get("k") == spec["k"] and saved.get("seed") == spec["seed"]
            and saved.get("n_images") == len(index)
            and [f["test"]["indices"] for f in saved["folds"]] == [p["test"] for p in spec["folds"]]
            and [f["val"]["indices"] for f in saved["folds"]] == [p["val"] for p in spec["folds"]])
    if not same:
        raise VistrainError(f"{path}: the saved folds differ from the ones this data set and these "
                            "settings give (images added/removed, or other --folds/--seed/"
                            "data.val_fraction); use --overwrite or another --out")


def run_cv(cfg, out_dir, *, folds: int = 5, fold: int | None = None, resume: bool = False,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or continue) ``folds``-fold cross-validation into ``out_dir``; see the module docstring.

    ``fold`` runs only that fold.  Returns :func:`aggregate`'s dict once every fold is finished,
    else ``{"finished": [...], "missing": [...]}``.
    """
    from vistrain.training.run import run_training
    out = Path(out_dir)
    cfg.check()
    if folds < 2:
        raise VistrainError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if fold is not None and not 0 <= fold < folds:
        raise VistrainError(f"--fold {fold}: must be between 0 and {folds - 1} for --folds {folds}")
    fsutil.check_output_location(out, data_folder=cfg.data.root)
    t0 = time.perf_counter()
    index = _clean_index(cfg, progress)  # a missing or unusable data folder stops here
    spec = make_folds(index, folds, seed=cfg.data.split_seed, val_fraction=cfg.data.val_fraction)
    _prepare_out(out, cfg, resume=resume, overwrite=overwrite, single_fold=fold is not None)
    try:
        _check_same_folds(out, index, spec)
    except VistrainError:
        fsutil.restore_replaced(out)
        raise
    _save_folds(out, index, spec)
    cfg.save(out / "config.yaml")
    todo = [fold] if fold is not None else list(range(folds))
    for k in todo:
        fdir = fold_dir(out, k)
        if fold_finished(fdir) and resume:
            log.info("fold %d/%d: finished earlier, skipped (%s)", k + 1, folds, fdir)
            continue
        parts = spec["folds"][k]
        log.info("fold %d/%d: train %d, val %d, test %d%s", k + 1, folds, len(parts["train"]),
                 len(parts["val"]), len(parts["test"]),
                 f", given test {len(parts['given_test'])}" if "given_test" in parts else "")
        cont = resume and (fdir / "checkpoints" / "last.pt").is_file()
        try:
            run_training(cfg, fdir, overwrite=overwrite or (resume and not cont), resume=cont,
                         progress=progress, index=index, parts=parts)
        except BaseException:
            if not (fdir / "checkpoints" / "last.pt").is_file():  # nothing here can be resumed:
                fsutil.restore_replaced(out)                      # bring back what was replaced
            raise
        fsutil.discard_replaced(out)  # a fold finished: the replaced folder can go
    finished = [k for k in range(folds) if fold_finished(fold_dir(out, k))]
    if len(finished) < folds:
        missing = [k for k in range(folds) if k not in finished]
        log.info("%d of %d folds finished; run the missing fold(s) %s with --fold, or all with "
                 "--resume, to aggregate", len(finished), folds, missing)
        return {"finished": finished, "missing": missing}
    result = aggregate(out, index, spec)
    result["wall_seconds_this_call"] = round(time.perf_counter() - t0, 1)
    return result


def aggregate(out: Path, index, spec: dict) -> dict:
    """Collect the finished folds: OOF predictions, per-fold + pooled metrics, figures, report."""
    from vistrain.evaluation.figures import write_eval_figures
    from vistrain.evaluation.metrics import compute_metrics, summarize_folds
    out = Path(out)
    k, classes = spec["k"], index.classes
    oof, fold_rows, fold_metrics, given_metrics = [], [], [], []
    for f in range(k):
        fdir = fold_dir(out, f)
        preds = json.loads((fdir / "predictions.json").read_text())
        metrics = json.loads((fdir / "metrics.json").read_text())
        run = json.loads((fdir / "run.json").read_text())
        test = preds["test"]
        if sorted(test["indices"]) != spec["folds"][f]["test"]:
            raise VistrainError(f"{fdir}: its test part is not fold {f} of {out / 'folds.json'}; "
                                f"rerun that fold with --fold {f} --overwrite")
        for i, y, p in zip(test["indices"], test["labels"], test["probs"]):
            oof.append({"index": int(i), "file": str(Path(index.paths[i]).relative_to(index.root)),
                        "label": int(y), "class": classes[y], "probs": p, "fold": f})
        fold_metrics.append(metrics["test"])
        parts = spec["folds"][f]
        row = {"fold": f, "n_train": len(parts["train"]), "n_val": len(parts["val"]),
               "n_test": len(parts["test"]), "wall_seconds": run.get("wall_seconds"),
               "balance": (run.get("strategy") or {}).get("balance"),
               "test": metrics["test"]}
        if "given_test" in metrics:
            row["given_test"] = metrics["given_test"]
            given_metrics.append(metrics["given_test"])
        fold_rows.append(row)
    oof.sort(key=lambda r: r["index"])
    y = np.array([r["label"] for r in oof], dtype=np.int64)
    probs = np.array([r["probs"] for r in oof], dtype=np.float64)
    pooled = compute_metrics(y, probs, classes, n_bootstrap=1000)
    counts = np.bincount(np.asarray(index.labels), minlength=len(classes))
    result = {"n_folds": k, "seed": spec["seed"], "pool": spec["pool"], "classes": classes,
              "class_counts": dict(zip(classes, counts.tolist())),
              "imbalance_ratio": float(counts.max() / max(counts.min(), 1)),
              "summary": summarize_folds(fold_metrics), "pooled_oof": pooled, "folds": fold_rows}
    if given_metrics:
        result["given_test_summary"] = summarize_folds(given_metrics)
    _write_json(out / "oof_predictions.json", {"classes": classes, "predictions": oof})
    _write_json(out / "cv_metrics.json", result, indent=1)
    write_eval_figures(out, y, probs, classes, pooled, prefix="oof_")
    from vistrain.report.cv_report import build_cv_report
    build_cv_report(out)
    return result


def format_cv(result: dict, per_class: bool | None = None) -> str:
    """Console summary: mean ± std over folds, pooled out-of-fold metrics (per class when the
    classes are imbalanced, ratio > 3, or when ``per_class``)."""
    from vistrain.evaluation.metrics import format_folds, format_table
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
