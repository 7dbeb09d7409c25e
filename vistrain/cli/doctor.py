"""``vistrain doctor DATA``: find everything that is wrong with an image folder before training on it.

With ``--labels CV_DIR`` the likely mislabelled images that ``vistrain cv`` found (its
``label_issues.csv``, see :mod:`vistrain.evaluation.label_issues`) join the other findings.
"""
from __future__ import annotations

from vistrain.cli.common import job, print_json

# vistrain.evaluation.label_issues.CSV_NAME, spelled out: that module imports numpy and PIL, which
# `vistrain doctor --help` must not wait for (a test holds the two equal)
CSV_NAME = "label_issues.csv"

LABELS_TOP = 10              # label issues printed with --labels (as vistrain.workflows.doctor)


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
    report = job("doctor").doctor(args.data, config=args.config, folds=args.folds, workers=args.workers,
                                  max_distance=args.max_distance, labels=args.labels, top=args.top)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format())
    return 0 if report.ok else 1
