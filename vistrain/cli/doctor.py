"""``vistrain doctor DATA``: find everything that is wrong with an image folder before training on it."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check an image folder: structure, bad files, duplicates, leakage",
                       description="Check the folder layout (empty or single classes, files outside "
                                   "class folders, system and non-image files) and decode every image "
                                   "(zero-byte, truncated, corrupt, CMYK, 16-bit, EXIF-rotated, tiny), "
                                   "then report per-class counts and imbalance, exact and "
                                   "near-duplicates (within a class, across classes, across the "
                                   "train/val/test split training would make) and classes too small "
                                   "for the split or for k folds, all in one list. Exit code 1 when "
                                   "there is an error (training would fail or be unsound).")
    p.add_argument("data", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--folds", type=int,
                   help="check for K-fold cross-validation: classes under K images are an error "
                        "(without --folds: a warning for K=5)")
    p.add_argument("--config", help="YAML config whose data section (fractions, split seed) gives the split")
    p.add_argument("--max-distance", type=int, default=None,
                   help="near-duplicate candidate: pHash Hamming distance (default 10 of 64 bits)")
    p.add_argument("--workers", type=int, default=-1, help="worker processes (-1: one per CPU)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document: findings (severity, code, message, paths, fix), "
                        "summary, counts, sizes, modes")
    p.set_defaults(func=run)


def run(args) -> int:
    from vistrain.cli.common import print_json
    from vistrain.config import TrainConfig
    from vistrain.data.doctor import NEAR_DUP_DISTANCE, diagnose
    from vistrain.errors import VistrainError
    if args.folds is not None and args.folds < 2:
        raise VistrainError(f"--folds must be at least 2, got {args.folds}")
    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    dist = NEAR_DUP_DISTANCE if args.max_distance is None else args.max_distance
    report = diagnose(args.data, cfg, folds=args.folds, workers=args.workers, max_distance=dist)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format())
    return 0 if report.ok else 1
