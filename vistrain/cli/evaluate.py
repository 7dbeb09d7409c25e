"""``vistrain evaluate RUN_DIR DATA``: score a labelled folder with a saved model."""
from __future__ import annotations

from vistrain.cli.common import print_json
from vistrain.errors import VistrainError


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score a labelled image folder with a trained run",
                       description="Predict every image of DATA/<class>/<image> with the run's "
                                   "exact preprocessing and print accuracy, per-class metrics and "
                                   "95%% bootstrap confidence intervals. Class folders must be "
                                   "named as the run's classes.")
    p.add_argument("run_dir", help="run directory of `vistrain train`")
    p.add_argument("data", help="image folder DATA/<class>/<image> with the run's class names")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON document")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    p.add_argument("--out", metavar="DIR", help="save metrics.json, predictions.json and the figures "
                   "(confusion matrices, ROC, PR, reliability) in DIR")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda | cuda:N")
    p.set_defaults(func=run)


def run(args) -> int:
    from vistrain.evaluation.metrics import format_table
    from vistrain.workflows.evaluate import evaluate  # torch loads only when a verb runs
    if args.bootstrap < 0:
        raise VistrainError(f"--bootstrap {args.bootstrap}: must be >= 0 (0: no confidence intervals)")
    metrics = evaluate(args.run_dir, args.data, bootstrap=args.bootstrap, out=args.out,
                       device=args.device, progress=not args.json)
    if args.json:
        print_json(metrics)
        return 0
    print(format_table(metrics))
    for s in metrics["skipped_files"]:
        print(f"skipped {s['file']}: {s['reason']}")
    if args.out:
        print(f"metrics, predictions and figures: {args.out}")
    return 0
