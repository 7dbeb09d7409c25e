"""Likely mislabelled images from out-of-fold predictions: confident learning (cleanlab).

Confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021; the method of the cleanlab library), on given labels ``y`` (N,) and
out-of-fold probabilities ``p`` (N, K):

1. per-class thresholds ``t[j]`` = mean of ``p[n, j]`` over the images *labelled* ``j`` (how sure
   the model usually is of a class on its own images; a class without images gets ``inf``);
2. image ``n`` is *confidently* in class ``j`` when ``p[n, j] >= t[j]``; with several such classes,
   the one of highest probability (the paper's tie rule), with none, it is not counted;
3. the confident joint ``C`` (K, K): ``C[i, j]`` = images labelled ``i`` confidently in ``j``;
4. the candidates, by ``filter_by``, are ``cleanlab.filter.find_label_issues``'s:
   ``prune_by_noise_rate`` (default, cleanlab's default) scales each row of ``C`` to the number
   of images labelled ``i`` and, for each ``i != j``, takes the ``round(C_cal[i, j])`` images
   labelled ``i`` of largest margin ``p[n, j] - p[n, i]``; ``confident_learning`` takes the
   off-diagonal members of ``C`` themselves (fewer, surer).  (An earlier NumPy version of the
   same rule chose exactly the same 334 images on the shipped data with 5 % flipped labels.)
   Steps 1-3 are kept here for the suggested label and the record;
5. a candidate whose predicted class (argmax) is its given label is dropped (as cleanlab does:
   the model itself agrees with the label); the suggested label is the confident class, else the
   predicted one;
6. ranked by a label-quality score, lowest (most suspicious) first: ``self_confidence`` =
   ``p[n, y[n]]`` (default), or ``normalized_margin`` = ``(p[n, y[n]] - max_{k != y[n]} p[n, k] + 1) / 2``.

The probabilities must be out-of-fold (``vistrain cv``): a model that trained on an image has
learned its label, right or wrong, and would not contradict it.

:func:`write_label_issues` saves the ranking of a cross-validation as ``label_issues.csv``
(columns ``file, given_label, suggested_label, score, fold``, most suspicious first) and a gallery
of the first ones, ``label_issues.png``; :func:`read_label_issues` reads the csv back.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> p = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.3, .7], [.1, .9]])
    >>> r = find_label_issues(y, p)
    >>> r.indices.tolist(), r.suggested.tolist(), r.scores.round(2).tolist()
    ([2], [1], [0.1])
    >>> r.thresholds.round(3).tolist(), r.confident_joint.tolist()
    ([0.6, 0.8], [[2, 1], [0, 2]])
"""
from __future__ import annotations

import csv
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistrain import fsutil
from vistrain.imageio.read import load_image
from vistrain.errors import ImageLoadError, RunDirError, VistrainError
from vistrain.evaluation.png import figure_png, new_figure
from vistrain.rundir import RunFolder

log = logging.getLogger("vistrain")

CSV_NAME = "label_issues.csv"
PNG_NAME = "label_issues.png"
CSV_COLUMNS = ("file", "given_label", "suggested_label", "score", "fold")
RANK_BY = ("self_confidence", "normalized_margin")
FILTERS = ("prune_by_noise_rate", "confident_learning")
# The list of a cross-validation keeps the candidates whose out-of-fold probability of the given
# label is below this: on the shipped data (3 folds, 64 px) with 5 % of the labels flipped, 68 %
# of the images it flagged were flipped ones (64 of 94; 0.65 with every candidate) and 1.6 % of
# the correct labels were flagged (13.4 % with every candidate); without flips it listed 45 of
# the 2,000 images (2.2 %; 229 with every candidate).
MAX_GIVEN_PROBABILITY = 0.02
PRECISION_NOTE = ("on the shipped data with 5 % of the labels flipped, 68 % of the flagged images "
                  "were mislabelled and 1.6 % of the correct labels were flagged; without flips, "
                  "2.2 % of the images were flagged")
GALLERY_MAX = 24             # thumbnails in label_issues.png (the csv has them all)
THUMB_SIDE = 96              # px, longer side of a gallery thumbnail
# p >= t - EPS: a threshold is a mean of the same floats, rounding must not drop the image that
# equals it (cleanlab uses the same tolerance)
EPS = 1e-6


@dataclass(frozen=True)
class LabelIssues:
    """The ranked candidates of :func:`find_label_issues`, most suspicious first.

    ``indices`` (M,) rows of the inputs; ``scores`` (M,) their label-quality score (lower = more
    suspicious); ``suggested`` (M,) their confident class, else their predicted class (never the
    given one); ``thresholds`` (K,); ``confident_joint`` (K, K) counts, rows = given label,
    columns = confident class (not calibrated).
    """
    indices: np.ndarray
    scores: np.ndarray
    suggested: np.ndarray
    thresholds: np.ndarray
    confident_joint: np.ndarray


def _check(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or y.shape != (p.shape[0],):
        raise VistrainError(f"label issues need labels (N,) and probabilities (N, K >= 2), got "
                            f"{y.shape} and {p.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise VistrainError(f"labels must be integers in 0..{p.shape[1] - 1} (one per column of the "
                            "probabilities)")
    if not np.isfinite(p).all() or (p < 0).any():
        raise VistrainError("probabilities must be finite and >= 0")
    return y.astype(np.int64), p


def confident_thresholds(labels, probs) -> np.ndarray:
    """``t`` (K,): ``t[j]`` = mean ``probs[n, j]`` over the ``n`` with ``labels[n] == j``; ``inf`` for
    a class no image is labelled with (nothing can be confidently in it).

    Example:
        >>> confident_thresholds([0, 0, 1], [[.9, .1], [.7, .3], [.4, .6]]).tolist()
        [0.8, 0.6]
    """
    y, p = _check(labels, probs)
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    sums = np.bincount(y, weights=p[np.arange(len(y)), y], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_classes(probs, thresholds) -> np.ndarray:
    """(N,) the class each row is confidently in: of the ``j`` with ``probs[n, j] >= t[j]``, the
    most probable; ``-1`` where no class reaches its threshold.

    Example:
        >>> confident_classes([[.9, .1], [.5, .5], [.3, .7]], [.8, .6]).tolist()
        [0, -1, 1]
    """
    p = np.asarray(probs, dtype=np.float64)
    above = p >= np.asarray(thresholds, dtype=np.float64) - EPS
    best = np.where(above, p, -np.inf).argmax(axis=1)
    return np.where(above.any(axis=1), best, -1)


def confident_joint(labels, probs, thresholds=None) -> np.ndarray:
    """``C`` (K, K) int64: ``C[i, j]`` = images labelled ``i`` confidently in class ``j`` (not
    calibrated: images confident in no class are not counted).

    Example:
        >>> confident_joint([0, 0, 1, 1], [[.9, .1], [.2, .8], [.3, .7], [.1, .9]]).tolist()
        [[1, 1], [0, 1]]
    """
    y, p = _check(labels, probs)
    t = confident_thresholds(y, p) if thresholds is None else thresholds
    return _joint(y, confident_classes(p, t), p.shape[1])


def _joint(y: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    counted = c >= 0
    return np.bincount(y[counted] * k + c[counted], minlength=k * k).reshape(k, k).astype(np.int64)


def label_quality(labels, probs, rank_by: str = "self_confidence") -> np.ndarray:
    """(N,) score of each given label, in [0, 1], lower = more likely wrong (see module docstring).

    Example:
        >>> label_quality([0, 1], [[.7, .3], [.6, .4]], "normalized_margin").round(2).tolist()
        [0.7, 0.4]
    """
    y, p = _check(labels, probs)
    given = p[np.arange(len(y)), y]
    if rank_by == "self_confidence":
        return given
    if rank_by == "normalized_margin":
        others = p.copy()
        others[np.arange(len(y)), y] = -np.inf
        return (given - others.max(axis=1) + 1) / 2
    raise VistrainError(f"rank_by {rank_by!r}: use one of {', '.join(RANK_BY)}")


def _cleanlab_mask(y: np.ndarray, p: np.ndarray, filter_by: str) -> np.ndarray:
    """(N,) bool: cleanlab's candidates (``cleanlab.filter.find_label_issues``, one process)."""
    from cleanlab.filter import find_label_issues as cleanlab_find  # imported where needed: ~1 s

    # cleanlab wants rows that sum to 1 and warns about small classes; neither changes its choice
    rows = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(cleanlab_find(y, rows, filter_by=filter_by, n_jobs=1), dtype=bool)


def find_label_issues(labels, probs, *, filter_by: str = "prune_by_noise_rate",
                      rank_by: str = "self_confidence") -> LabelIssues:
    """Rank the images whose given label the (out-of-fold) probabilities contradict.

    ``labels`` (N,) ints in ``0..K-1``; ``probs`` (N, K).  Returns a :class:`LabelIssues`: the
    candidates of ``filter_by`` (module docstring) whose argmax is not their label, ordered by
    ``rank_by`` score (lowest first; ties keep the input order).

    Example:
        >>> r = find_label_issues([0, 0, 1, 1], [[.9, .1], [.2, .8], [.3, .7], [.1, .9]])
        >>> r.indices.tolist(), r.suggested.tolist(), r.scores.tolist()
        ([1], [1], [0.2])
    """
    y, p = _check(labels, probs)
    k = p.shape[1]
    t = confident_thresholds(y, p)
    c = confident_classes(p, t)
    joint = _joint(y, c, k)
    if filter_by not in FILTERS:
        raise VistrainError(f"filter_by {filter_by!r}: use one of {', '.join(FILTERS)}")
    mask = _cleanlab_mask(y, p, filter_by)
    predicted = p.argmax(axis=1)
    candidates = np.flatnonzero(mask & (predicted != y))
    suggested = np.where((c >= 0) & (c != y), c, predicted)[candidates]
    score = label_quality(y, p, rank_by)[candidates]
    order = np.argsort(score, kind="stable")
    return LabelIssues(indices=candidates[order].astype(np.int64), scores=score[order],
                       suggested=suggested[order].astype(np.int64), thresholds=t,
                       confident_joint=joint)


# ---- the files of a cross-validation ---------------------------------------------------------
def ranking_problem(labels, probs) -> str | None:
    """Why out-of-fold predictions are too weak for a ranking of labels to mean anything, or None.

    The rule: accuracy must be at least halfway from chance (the largest class's share, what
    always answering that class scores) to perfect, ``accuracy >= (1 + chance) / 2`` (0.55 for
    10 balanced classes, 0.75 for 2).  Below it, most disagreements are the model's own errors.

    Example:
        >>> ranking_problem([0, 1, 1, 0], [[.6, .4], [.3, .7], [.2, .8], [.4, .6]])
        >>> ranking_problem([0, 1, 1, 0], [[.6, .4], [.3, .7], [.8, .2], [.4, .6]])[:40]
        'out-of-fold accuracy 0.50 is below 0.75 '
    """
    y, p = _check(labels, probs)
    if not len(y):
        return "no out-of-fold predictions"
    accuracy = float((p.argmax(axis=1) == y).mean())
    chance = float(np.bincount(y).max() / len(y))
    needed = (1 + chance) / 2
    if accuracy >= needed:
        return None
    return (f"out-of-fold accuracy {accuracy:.2f} is below {needed:.2f} (halfway from chance, "
            f"{chance:.2f}, to perfect): disagreements with the labels are mostly the models' own "
            "errors, so no list of label issues is written; train longer or with more folds")


def write_label_issues(out, labels, probs, classes, *, files, folds, root=None,
                       filter_by: str = "prune_by_noise_rate", rank_by: str = "self_confidence",
                       max_given_probability: float | None = MAX_GIVEN_PROBABILITY) -> dict:
    """Rank the label issues of out-of-fold ``probs`` (N, K) and write ``out/label_issues.csv``,
    plus ``out/label_issues.png`` (the first :data:`GALLERY_MAX`) when there are any and the
    images are under ``root``.

    ``files`` (N,) image paths relative to ``root`` (as the csv names them), ``folds`` (N,) the
    fold that held each image out.  Only candidates whose probability of the given label is below
    ``max_given_probability`` are listed (:data:`MAX_GIVEN_PROBABILITY`; None: all).  Returns the
    ``label_issues`` entry of ``cv_metrics.json``: ``{"count", "csv", "png" (None without issues),
    "filter_by", "rank_by", "max_given_probability", "precision", "method", "skipped"}``; when
    :func:`ranking_problem` finds the predictions too weak, ``count``, ``csv`` and ``png`` are
    None, ``skipped`` says why and no file is written (earlier ones are removed).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> e = write_label_issues(d, [0, 0, 1, 1], [[.9, .1], [.01, .99], [.3, .7], [.1, .9]],
        ...                        ["cat", "dog"], files=["cat/a", "cat/b", "dog/c", "dog/d"],
        ...                        folds=[0, 1, 0, 1])
        >>> e["count"], (d / "label_issues.csv").read_text().splitlines()[1]
        (1, 'cat/b,cat,dog,0.010000,1')
    """
    out = Path(out)
    entry = {"filter_by": filter_by, "rank_by": rank_by, "max_given_probability": max_given_probability,
             "precision": PRECISION_NOTE if max_given_probability == MAX_GIVEN_PROBABILITY else None,
             "method": "confident learning (cleanlab) on the out-of-fold probabilities", "skipped": None}
    problem = ranking_problem(labels, probs)
    if problem is not None:
        for stale in (out / CSV_NAME, out / PNG_NAME):  # an earlier list would still be read
            stale.unlink(missing_ok=True)
        log.warning("label issues: %s", problem)
        return {**entry, "count": None, "csv": None, "png": None, "skipped": problem}
    found = find_label_issues(labels, probs, filter_by=filter_by, rank_by=rank_by)
    y = np.asarray(labels)
    if max_given_probability is not None:
        given = np.asarray(probs, dtype=np.float64)[found.indices, y[found.indices]]
        keep = given < max_given_probability
        found = LabelIssues(found.indices[keep], found.scores[keep], found.suggested[keep],
                            found.thresholds, found.confident_joint)
    rows = [{"file": str(files[i]), "given_label": classes[y[i]], "suggested_label": classes[s],
             "score": f"{v:.6f}", "fold": int(folds[i])}
            for i, s, v in zip(found.indices, found.suggested, found.scores)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    fsutil.atomic_write_text(out / CSV_NAME, buf.getvalue())
    png = out / PNG_NAME
    if rows and root is not None:
        plot_label_issues([Path(root) / r["file"] for r in rows[:GALLERY_MAX]], rows[:GALLERY_MAX], png)
    elif png.exists():
        png.unlink()  # the gallery of an earlier aggregation would show issues that are gone
    log.info("label issues: %d image(s) whose out-of-fold predictions contradict the given label "
             "(%s)", len(rows), out / CSV_NAME)
    return {**entry, "count": len(rows), "csv": CSV_NAME, "png": PNG_NAME if png.exists() else None}


def plot_label_issues(paths, rows, path, *, cols: int = 6) -> Path:
    """Write a grid of thumbnails of ``paths``, each titled ``#rank given -> suggested``, its
    score and file name (``rows``: csv rows as dicts, aligned with ``paths``); returns ``path``.
    Unreadable files get an empty cell saying so."""
    n = len(rows)
    cols = max(1, min(cols, n))
    nrows = -(-n // cols)
    fig = new_figure((max(1.9 * cols, 4.5), 2.1 * nrows + 0.5))
    for k, (p, row) in enumerate(zip(paths, rows)):
        ax = fig.add_subplot(nrows, cols, k + 1)
        ax.set_axis_off()
        try:
            img = load_image(p, min_side=THUMB_SIDE)
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            ax.imshow(np.asarray(img))
        except ImageLoadError as err:
            ax.text(0.5, 0.5, f"not readable:\n{err.reason[:30]}", ha="center", va="center", fontsize=6)
        ax.set_title(f"#{k + 1} {row['given_label']} \u2192 {row['suggested_label']}\n"
                     f"score {float(row['score']):.3f}  {Path(row['file']).name[:18]}", fontsize=7)
    fig.suptitle("likely mislabelled, most suspicious first: given \u2192 suggested label\n"
                 "score = out-of-fold probability of the given label", fontsize=8)
    fsutil.atomic_write_bytes(path, figure_png(fig, dpi=100))
    return Path(path)


def _rebuild_hint(folder: Path) -> str:
    """How to rewrite the csv: re-aggregating the finished folds (no training)."""
    try:
        folds = RunFolder(Path(folder), "cv").folds
    except RunDirError:
        folds = None
    data = folds.data_root if folds is not None and folds.data_root else "DATA"
    k = folds.k if folds is not None and folds.k is not None else "K"
    return f"`vistrain cv {data} --folds {k} --out {folder} --resume` rewrites it from the finished folds"


def read_label_issues(folder) -> list[dict]:
    """The rows of ``folder/label_issues.csv`` (most suspicious first), ``score`` as float and
    ``fold`` as int.  A missing or damaged file is a :class:`~vistrain.errors.RunDirError` (one
    line: the file, the problem, how to rewrite it).

    Example:
        >>> rows = read_label_issues("runs/fm-cv")      # doctest: +SKIP
        >>> rows[0]["file"], rows[0]["given_label"], rows[0]["suggested_label"]  # doctest: +SKIP
        ('Coat/0042.png', 'Coat', 'Pullover')
    """
    folder = Path(folder)
    path = folder / CSV_NAME
    if not path.is_file():
        raise RunDirError(f"{folder}: no {CSV_NAME} (a cross-validation that is unfinished or older "
                          f"than label issues); {_rebuild_hint(folder)}")
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"columns {reader.fieldnames}, expected {list(CSV_COLUMNS)}")
        rows = []
        for n, row in enumerate(reader, start=2):
            if None in row or any(row[c] in (None, "") for c in CSV_COLUMNS):
                raise ValueError(f"line {n} does not have the {len(CSV_COLUMNS)} columns")
            try:
                rows.append({**row, "score": float(row["score"]), "fold": int(row["fold"])})
            except ValueError:
                raise ValueError(f"line {n}: score/fold not numbers") from None
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise RunDirError(f"{path}: damaged ({err}); {_rebuild_hint(folder)}") from None
    return rows
