"""``vistrain doctor DATA``: find everything that is wrong with an image folder before training on it.

With ``--labels CV_DIR`` the likely mislabelled images that ``vistrain cv`` found (its
``label_issues.csv``, see :mod:`vistrain.evaluation.label_issues`) join the other findings.
"""
from __future__ import annotations

from pathlib import Path

from vistrain import fsutil
from vistrain.cli.common import print_json
from vistrain.config import TrainConfig
from vistrain.data.doctor import NEAR_DUP_DISTANCE, Finding, diagnose
from vistrain.errors import VistrainError
from vistrain.evaluation.label_issues import CSV_NAME, PNG_NAME, read_label_issues

LABELS_TOP = 10              # label issues printed with --labels (all of them are in ``paths``)


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check an image folder: structure, bad files, duplicates, leakage",
                       description="Check the folder layout (empty or single classes, files outside "
                                   "class folders, system and non-image files) and decode every image "
                                   "(zero-byte, truncated, corrupt, CMYK, 16-bit, EXIF-rotated, tiny), "
                                   "then report per-class counts and imbalance, exact and "
                                   "near-duplicates (within a class, across classes, across the "
                                   "train/val/test split training would make) and classes too small "
                                   "for the split or for k folds, all in one list; with --labels, the "
                                   "likely mislabelled images `vistrain cv` found. Exit code 1 when "
                                   "there is an error (training would fail or be unsound).")
    p.add_argument("data", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--folds", type=int,
                   help="check for K-fold cross-validation: classes under K images are an error "
                        "(without --folds: a warning for K=5)")
    p.add_argument("--config", help="YAML config whose data section (fractions, split seed) gives the split")
    p.add_argument("--max-distance", type=int, default=None,
                   help="near-duplicate candidate: pHash Hamming distance (default 10 of 64 bits)")
    p.add_argument("--workers", type=int, default=-1, help="worker processes (-1: one per CPU)")
    p.add_argument("--labels", metavar="CV_DIR",
                   help="also list the likely mislabelled images found by `vistrain cv` (the "
                        f"{CSV_NAME} of its output folder CV_DIR)")
    p.add_argument("--top", type=int, default=LABELS_TOP,
                   help=f"label issues listed with --labels, most suspicious first (default {LABELS_TOP})")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document: findings (severity, code, message, paths, fix), "
                        "summary, counts, sizes, modes")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.folds is not None and args.folds < 2:
        raise VistrainError(f"--folds must be at least 2, got {args.folds}")
    if args.top < 1:
        raise VistrainError(f"--top must be at least 1, got {args.top}")
    # a damaged csv is refused before the (long) decoding of every image
    labels = label_findings(args.labels, args.data, args.top) if args.labels else []
    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    dist = NEAR_DUP_DISTANCE if args.max_distance is None else args.max_distance
    report = diagnose(args.data, cfg, folds=args.folds, workers=args.workers, max_distance=dist)
    report.findings += labels
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format())
    return 0 if report.ok else 1


def label_findings(folder, data, top: int = LABELS_TOP) -> list[Finding]:
    """The label issues of the cross-validation folder ``folder`` as one finding: a ``warning``
    listing the ``top`` most suspicious (all files in ``paths``), an ``info`` when there are none;
    for a training run folder an ``info`` saying how to make them.

    Raises :class:`VistrainError` (one line) for a folder that is neither, or a missing or
    damaged ``label_issues.csv``.
    """
    folder, data = Path(folder), Path(data)
    kind = fsutil.vistrain_output_kind(folder) if folder.is_dir() else None
    if kind == "run":
        return [Finding("info", "label-issues-need-cv",
                        f"{folder} is a training run: label issues come from `vistrain cv`, whose "
                        "fold models each predict images they never trained on",
                        fix=f"vistrain cv {data} --out CV_DIR, then vistrain doctor {data} --labels CV_DIR")]
    if kind != "cv" and not (folder / CSV_NAME).is_file():
        raise VistrainError(f"--labels {folder}: not an output folder of `vistrain cv`; give the "
                            f"--out folder of `vistrain cv {data}`")
    rows = read_label_issues(folder)
    if not rows:
        return [Finding("info", "label-issues", f"no likely mislabelled image ({folder / CSV_NAME})")]
    gone = [r["file"] for r in rows if not (data / r["file"]).is_file()]
    lines = [f"\n    {r['file']}: {r['given_label']} -> {r['suggested_label']} "
             f"(score {r['score']:.3f}, fold {r['fold']})" for r in rows[:top]]
    more = f"\n    ... and {len(rows) - top} more" if len(rows) > top else ""
    moved = (f"; {len(gone)} of them are no longer in {data} (moved already, or another data folder)"
             if gone else "")
    return [Finding("warning", "label-issues",
                    f"{len(rows)} image(s) whose out-of-fold predictions contradict the given label "
                    f"(confident learning, {folder / CSV_NAME}; score = probability of the given "
                    f"label){moved}; most suspicious first:" + "".join(lines) + more,
                    paths=[str(data / r["file"]) for r in rows],
                    fix=f"look at them ({folder / PNG_NAME}); move a mislabelled image into its "
                        "class folder (or delete it), then run `vistrain cv` again")]
