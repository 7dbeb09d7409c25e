"""``cv``: stratified k-fold cross-validation (``vistrain cv``; folds from :mod:`vistrain.evaluation.cv`).

Example:
    >>> import vistrain
    >>> r = vistrain.cv("examples/fashion-mnist-small", folds=5, out="runs/fm-cv")  # doctest: +SKIP
    >>> m = r["summary"]["metrics"]["accuracy"]; round(m["mean"], 3), round(m["std"], 3)  # doctest: +SKIP
    (0.845, 0.006)
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vistrain import fsutil
from vistrain.config.spelling import option
from vistrain.data.groups import image_groups
from vistrain.data.scan import scan_folder
from vistrain.device import Runtime
from vistrain.errors import RunDirError, VistrainError
from vistrain.evaluation.cv import fold_dir, fold_finished, make_folds
from vistrain.evaluation.figures import write_eval_figures
from vistrain.evaluation.fold_metrics import summarize_folds
from vistrain.evaluation.label_issues import write_label_issues
from vistrain.evaluation.metrics import compute_metrics
from vistrain.report.cv_report import build_cv_report
from vistrain.rundir import RunFolder, write_run_file
from vistrain.rundir.parts import FIXES
from vistrain.rundir.summaries import FoldsRecord
from vistrain.training.auto import apply_choice
from vistrain.training.context import spatial_preprocess
from vistrain.training.prepare import begin_run, create_model, prepare_data, resolve_auto
from vistrain.training.race_memo import race_or_kept
from vistrain.training.run import check_output_ready
from vistrain.workflows.common import default_out_dir, make_config
from vistrain.workflows.logs import show_log_lines
from vistrain.workflows.train import train_run

log = logging.getLogger("vistrain")


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
    result = run_cv(cfg, Path(out), folds=folds, fold=fold, resume=resume, overwrite=overwrite,
                    progress=progress)
    return {**result, "out_dir": str(out)}


def _write_json(path: Path, obj, indent=None) -> None:
    """Atomic write: parallel ``--fold`` processes may read the file while another writes it."""
    fsutil.atomic_write_json(path, obj, indent=indent)


def _prepare_out(out: Path, cfg, *, resume: bool, overwrite: bool, single_fold: bool) -> None:
    """Create the cross-validation folder, or check it for ``--resume``/``--fold``; with
    ``overwrite`` an earlier cv folder is moved aside (never a folder vistrain did not write)."""
    fsutil.prepare_output_dir(out, kind="cv", overwrite=overwrite and not resume,
                              reuse=resume or single_fold, data_folder=cfg.data.root)


def choose_once(cfg, out: Path, index, first: dict, rt: Runtime, *, again: bool, progress: bool):
    """``(config, strategy auto's reasoning or None)``: strategy auto chooses one recipe for every
    fold, on the first fold's training and validation parts -- by the recipe race where several
    candidates fit the budget (in a temporary folder, removed after it), or the outcome an earlier
    race of the same cross-validation kept.  A resumed cross-validation, or one fold run alone,
    takes the choice saved in ``strategy_auto.json``.  Each fold then trains the chosen recipe as
    a named one (:func:`vistrain.training.prepare.prepare_run`)."""
    saved = _saved_choice(out) if again and cfg.strategy.name == "auto" else None
    if saved is not None:
        log.info("strategy auto: the recipe chosen when this cross-validation started (%s)", saved["chosen"])
        return apply_choice(cfg, saved["settings"]), saved
    started = time.monotonic()
    chosen, auto = resolve_auto(cfg, index, rt, parts=first, started=started)
    if auto is not None and len(auto.get("entrants") or []) >= 2:
        with tempfile.TemporaryDirectory(prefix="vistrain-race-") as folder:
            chosen, _ = race_or_kept(cfg, index, rt, first, auto, Path(folder) / "race", started=started,
                                     progress=progress)
    return chosen, auto


def _saved_choice(out: Path) -> dict | None:
    try:
        saved = json.loads((out / "strategy_auto.json").read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and isinstance(saved.get("settings"), dict) else None


def _clean_index(cfg, index, rt: Runtime, progress: bool):
    """``index`` without unreadable files (decoding fills the pixel cache for the folds, at the
    chosen recipe's size)."""
    _, pcfg = create_model(cfg, len(index.classes))
    data = prepare_data(cfg, spatial_preprocess(cfg, pcfg), rt, progress, index=index, parts=lambda ix: {})
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
    doc = {key: spec[key] for key in ("k", "seed", "val_fraction", "pool", "by_groups")}
    doc.update({"data_root": str(index.root), "classes": index.classes, "n_images": len(index),
                "folds": folds})
    write_run_file(out / "folds.json", doc)


def _read_folds(out: Path) -> FoldsRecord:
    """The saved ``folds.json``, checked: truncated, edited or of another shape is one line naming
    the file and the way out, never a traceback."""
    path = out / "folds.json"
    saved = RunFolder(out, "cv").folds  # RunDirError naming the file when it is not a JSON object
    parts = [f.parts.get(name) for f in saved.folds for name in ("test", "val")]
    if not saved.folds or not all(isinstance(p, dict) and isinstance(p.get("indices"), list) for p in parts):
        raise RunDirError(f"{path}: damaged (not the folds document vistrain cv writes); "
                          f"{FIXES['folds.json']}")
    return saved


def _check_same_folds(out: Path, index, spec: dict) -> None:
    """On resume / --fold, the saved folds must be the ones we would make now."""
    path = out / "folds.json"
    if not path.is_file():
        return
    saved = _read_folds(out)
    same = (saved.k == spec["k"] and saved.seed == spec["seed"] and saved.n_images == len(index)
            and [f.part("test").indices for f in saved.folds] == [p["test"] for p in spec["folds"]]
            and [f.part("val").indices for f in saved.folds] == [p["val"] for p in spec["folds"]])
    if not same:
        raise VistrainError(f"{path}: the saved folds differ from the ones this data set and these "
                            "settings give (images added/removed, or other --folds/--seed/"
                            f"data.val_fraction); use {option('overwrite')} or another {option('out', 'DIR')}")


def run_cv(cfg, out_dir, *, folds: int = 5, fold: int | None = None, resume: bool = False,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or continue) ``folds``-fold cross-validation into ``out_dir``; see the module docstring.

    ``fold`` runs only that fold.  Returns :func:`aggregate`'s dict once every fold is finished,
    else ``{"finished": [...], "missing": [...]}``.
    """
    out = Path(out_dir)
    begin_run(cfg)  # the image-size limit too: the folds' pixels are decoded below, before any fold
    if fold is not None and not 0 <= fold < folds:
        raise VistrainError(f"--fold {fold}: must be between 0 and {folds - 1} for --folds {folds}")
    # a taken --out is refused first thing, before the scan and strategy auto's measuring
    check_output_ready(out, overwrite=overwrite, resume=resume or fold is not None,
                       data_folder=cfg.data.root, kind="cv")
    t0 = time.perf_counter()
    # refused before decoding: a missing or unusable data folder, folds it cannot make
    scanned = scan_folder(cfg.data.root)
    first = make_folds(scanned, folds, seed=cfg.data.split_seed, val_fraction=cfg.data.val_fraction,
                       groups=image_groups(scanned, cfg.data))["folds"][0]
    rt = Runtime.for_train(cfg.train)  # auto measures with it; the decode reads only its rank
    cfg, auto = choose_once(cfg, out, scanned, first, rt, again=resume or fold is not None, progress=progress)
    # the budget shaped the recipe (auto) once; every fold then trains that recipe in full, so
    # that no fold is cut or stopped on its own and the folds stay comparable
    cfg.train.budget = None
    index = _clean_index(cfg, scanned, rt, progress)
    spec = make_folds(index, folds, seed=cfg.data.split_seed, val_fraction=cfg.data.val_fraction,
                      groups=image_groups(index, cfg.data))
    _prepare_out(out, cfg, resume=resume, overwrite=overwrite, single_fold=fold is not None)
    try:
        _check_same_folds(out, index, spec)
    except VistrainError:
        fsutil.restore_replaced(out)
        raise
    _save_folds(out, index, spec)
    cfg.save(out / "config.yaml")
    if auto is not None:
        fsutil.atomic_write_json(out / "strategy_auto.json", auto)
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
            train_run(cfg, fdir, overwrite=overwrite or (resume and not cont), resume=cont,
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
    """Collect the finished folds: OOF predictions, per-fold + pooled metrics, label issues,
    figures, report."""
    out = Path(out)
    k, classes = spec["k"], index.classes
    oof, fold_rows, fold_metrics, given_metrics = [], [], [], []
    for f in range(k):
        fdir = fold_dir(out, f)
        run_folder = RunFolder(fdir, "train")
        test = run_folder.predictions.get("test")
        metrics = {part: m.to_doc() for part, m in run_folder.metrics.items()}
        run = run_folder.run
        if test is None or "test" not in metrics:
            raise VistrainError(f"{fdir}: no test predictions or metrics; rerun that fold with "
                                f"{option('fold', f)} {option('overwrite')}")
        if sorted(test.indices.tolist()) != spec["folds"][f]["test"]:
            raise VistrainError(f"{fdir}: its test part is not fold {f} of {out / 'folds.json'}; "
                                f"rerun that fold with {option('fold', f)} {option('overwrite')}")
        for i, y, p in zip(test.indices.tolist(), test.labels.tolist(), test.probs.tolist()):
            oof.append({"index": i, "file": str(Path(index.paths[i]).relative_to(index.root)),
                        "label": y, "class": classes[y], "probs": p, "fold": f})
        fold_metrics.append(metrics["test"])
        parts = spec["folds"][f]
        row = {"fold": f, "n_train": len(parts["train"]), "n_val": len(parts["val"]),
               "n_test": len(parts["test"]), "wall_seconds": run.wall_seconds,
               "balance": run.strategy.settings.get("balance"),
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
    # only out-of-fold probabilities can contradict a label: each model never saw these images
    result["label_issues"] = write_label_issues(out, y, probs, classes, root=index.root,
                                                files=[r["file"] for r in oof],
                                                folds=[r["fold"] for r in oof])
    write_run_file(out / "cv_metrics.json", result)
    write_eval_figures(out, y, probs, classes, pooled, prefix="oof_")
    build_cv_report(out)
    return result
