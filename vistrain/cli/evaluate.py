"""``vistrain evaluate RUN_DIR DATA``: score a labelled folder with a saved model."""
from __future__ import annotations

from vistrain.cli.common import print_json


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score a labelled image folder with a trained run")
    p.add_argument("run_dir")
    p.add_argument("data", help="image folder DATA/<class>/<image> with the run's class names")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    p.add_argument("--out", metavar="DIR", help="save metrics.json, predictions.json and the figures "
                   "(confusion matrices, ROC, PR, reliability) in DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from vistrain.artifact import read_meta
    from vistrain.evaluation.folder import evaluate_folder
    from vistrain.evaluation.metrics import format_table
    read_meta(args.run_dir)  # fail fast, before scanning data, on a missing run
    metrics = evaluate_folder(args.run_dir, args.data, progress=not args.json, n_bootstrap=args.bootstrap,
                              out_dir=args.out)
    if args.json:
        print_json(metrics)
    else:
        print(format_table(metrics))
        for s in metrics["skipped_files"]:
            print(f"skipped {s['file']}: {s['reason']}")
    return 0
