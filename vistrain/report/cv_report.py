"""``OUT/report.html`` of a cross-validation: fold table, mean ± std, pooled out-of-fold figures,
and the most suspicious labels (thumbnail, given and suggested label, score) or why none are listed.

Built from ``cv_metrics.json`` (read by :attr:`vistrain.rundir.RunFolder.cv`) and the ``oof_*.png``
figures that :func:`vistrain.workflows.cv.aggregate` writes, on the page template of
:mod:`vistrain.report.page` (autoescaped: a crafted ``cv_metrics.json`` cannot inject markup).
``vistrain report OUT`` rebuilds the page.

Example:
    >>> from vistrain.report.cv_report import build_cv_report
    >>> build_cv_report("runs/cv").name                            # doctest: +SKIP
    'report.html'
"""
from __future__ import annotations

from pathlib import Path

from vistrain.imageio.read import load_image
from vistrain.errors import ImageLoadError, RunDirError
from vistrain.evaluation.label_issues import read_label_issues
from vistrain.evaluation.png import array_png
from vistrain.fsutil import atomic_write_text
from vistrain.report.page import (Card, Cards, Cell, Heading, Section, Table, Text, file_picture, fmt, note,
                                  picture, render_page)
from vistrain.rundir import CvSummary, RunFolder

SUSPECTS_SHOWN = 12  # cards in the page's label-issue gallery (the csv has them all)
THUMB_SIDE = 96      # px

COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("macro_f1", "macro F1"),
           ("macro_auc_roc", "macro AUC-ROC"), ("ece", "ECE"))
FIGURES = (("oof_confusion_matrix", "Confusion matrix (counts)"),
           ("oof_confusion_matrix_normalized", "Confusion matrix (row-normalized)"),
           ("oof_roc_curves", "ROC curves (one vs rest)"),
           ("oof_pr_curves", "Precision-recall curves"),
           ("oof_reliability", "Reliability diagram"))


def cv_summary(folder: RunFolder) -> CvSummary:
    """``cv_metrics.json`` of the folder; a one-line RunDirError when the folds did not finish."""
    if folder.cv is None:
        raise RunDirError(f"{folder.path}: cross-validation not finished (no cv_metrics.json); run the "
                          f"missing folds with `vistrain cv DATA --folds K --out {folder.path} --resume`")
    return folder.cv


def fold_table(cv: CvSummary) -> Table:
    """One row per fold, then mean ± std (sample std over folds) and the pooled out-of-fold scores."""
    cols = [(key, label) for key, label in COLUMNS if key in cv.spread]
    rows = []
    for f, row in enumerate(cv.folds):
        values = [cv.spread[key].values for key, _ in cols]
        rows.append([f"fold {row.fold}", f"{row.n_train}/{row.n_val}/{row.n_test}", fmt(row.wall_seconds, 1),
                     _temperature_cell(row)] + [fmt(v[f] if f < len(v) else None) for v in values])
    rows.append([Cell("mean ± std", bold=True), "", "", ""]
                + [Cell(f"{fmt(cv.spread[k].mean)} ± {fmt(cv.spread[k].std)}", bold=True) for k, _ in cols])
    p = cv.pooled
    pooled = {"accuracy": p.accuracy, "balanced_accuracy": p.balanced_accuracy, "macro_f1": p.macro_f1,
              "macro_auc_roc": p.macro_auc_roc, "ece": p.ece}
    rows.append(["pooled out-of-fold", "", "", ""] + [fmt(pooled[k]) for k, _ in cols])
    return Table(["", "n train/val/test", "seconds", "T (calibration)", *(label for _, label in cols)], rows)


def _temperature_cell(row) -> str:
    """The fold's temperature, or why it is 1 (each fold decides on its own validation part)."""
    if row.calibration == "not applied":
        return "1 (not applied)"
    return fmt(row.temperature, 3)


def render_cv_page(folder: RunFolder) -> str:
    """The page (a string) of the cross-validation folder."""
    cv = cv_summary(folder)
    counts = ", ".join(f"{c}: {n}" for c, n in cv.class_counts.items())
    seed = "?" if cv.seed is None else cv.seed
    intro = [Text(f"Folds over the {cv.pool or '?'}, stratified, seed {seed}. Each fold model is "
                  "trained on train (early stopping on val, a stratified slice of the fold's training "
                  "part) and scored on its held-out fold. Std is the sample std (ddof=1) over folds."),
             Text(f"Classes ({len(cv.class_counts)}): {counts}; imbalance ratio {fmt(cv.imbalance_ratio, 2)}")]
    figures = [block for name, title in FIGURES if (path := folder.figure_file(name)) is not None
               for block in (Heading(title), file_picture(path, name))]
    sections = [Section("folds", "Folds", [fold_table(cv)]),
                Section("pooled", f"Pooled out-of-fold predictions ({cv.pooled.n_samples} images)", figures),
                Section("label-issues", "Likely mislabelled images", label_issue_blocks(folder))]
    title = f"vistrain {cv.n_folds or '?'}-fold cross-validation"
    return render_page(title, title, intro, sections)


def label_issue_blocks(folder: RunFolder) -> list:
    """The rule in words, then a card per suspect (most suspicious first): thumbnail, given label,
    suggested label, score; or the one line saying why no list was written."""
    try:
        entry = (folder.cv.label_issues if folder.cv is not None else None) or {}
    except RunDirError:
        entry = {}
    if not isinstance(entry, dict) or not entry:
        return [note("no label-issue record in cv_metrics.json")]
    if entry.get("skipped"):
        return [Text(f"No list: {entry['skipped']}.")]
    try:
        rows = read_label_issues(folder.path)
    except RunDirError as err:
        return [note(str(err))]
    limit = entry.get("max_given_probability")
    rule = (f"Confident learning (cleanlab) on the out-of-fold probabilities; listed when the probability "
            f"of the given label is below {limit}" if limit is not None else
            "Confident learning (cleanlab) on the out-of-fold probabilities")
    text = Text(f"{rule}: {len(rows)} image(s), most suspicious first "
                f"({'; '.join(x for x in [entry.get('precision')] if x) or 'precision not measured'}). "
                "Score: the out-of-fold probability of the given label.")
    if not rows:
        return [text]
    root = _data_root(folder)
    cards = [Card(_thumbnail(root, r["file"]), r["file"],
                  [f"given: {r['given_label']}", f"suggested: {r['suggested_label']}",
                   f"score {r['score']:.3f} (fold {r['fold']})"]) for r in rows[:SUSPECTS_SHOWN]]
    return [text, Cards(cards)]


def _data_root(folder: RunFolder) -> Path | None:
    try:
        folds = folder.folds
    except RunDirError:
        return None
    return Path(folds.data_root) if folds is not None and folds.data_root else None


def _thumbnail(root: Path | None, file: str):
    """A small picture of ``root/file``, or a note when it cannot be read (moved, outside root)."""
    if root is None:
        return note("data folder unknown")
    path = root / file
    if not path.resolve().is_relative_to(root.resolve()):
        return note("outside the data folder")
    try:
        img = load_image(path)
    except ImageLoadError as err:
        return note(f"not readable: {err.reason[:40]}")
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return picture(array_png(img), file)


def build_cv_report(out_dir) -> Path:
    """Write ``out_dir/report.html``; returns its path."""
    folder = RunFolder.read(out_dir)
    page = render_cv_page(folder)
    path = folder.path / "report.html"
    atomic_write_text(path, page)
    return path
