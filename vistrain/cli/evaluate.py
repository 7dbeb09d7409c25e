"""``vistrain evaluate RUN_DIR DATA``: score a labelled folder with a saved model."""
from __future__ import annotations

from vistrain.cli.common import job, print_json
from vistrain.config import TTA_MODES
from vistrain.errors import VistrainError
from vistrain.evaluation.tables import format_table


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score a labelled image folder with a trained run",
                       description="Predict every image of DATA/<class>/<image> with the run's "
                                   "exact preprocessing and print accuracy, per-class metrics and "
                                   "95% bootstrap confidence intervals. Class folders must be "
                                   "named as the run's classes.")
    p.add_argument("run_dir", help="run directory of `vistrain train`")
    p.add_argument("data", help="image folder DATA/<class>/<image> with the run's class names")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON document")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    p.add_argument("--out", metavar="DIR", help="save metrics.json, predictions.json and the figures "
                   "(confusion matrices, ROC, PR, reliability) in DIR")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda | cuda:N")
    add_engine_options(p)
    p.set_defaults(func=run)


def add_engine_options(p) -> None:
    """``--engine`` and ``--threads``, the same for every verb that predicts with a run."""
    p.add_argument("--engine", default="auto",
                   help="auto | torch | onnxruntime | onnxruntime-int8 | openvino (auto: ONNX "
                        "Runtime on the CPU when `vistrain export` wrote an up-to-date "
                        "RUN/export/model.onnx, else torch; openvino: RUN/export/model.xml of "
                        "`vistrain export --format openvino`)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: torch's thread count)")
    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="test-time augmentation: average the probabilities of the image and its mirror "
                        "(flip), and of four corner crops (flip+crops)")


def run(args) -> int:
    if args.bootstrap < 0:
        raise VistrainError(f"--bootstrap {args.bootstrap}: must be >= 0 (0: no confidence intervals)")
    metrics = job("evaluate").evaluate(args.run_dir, args.data, bootstrap=args.bootstrap,
                                       out=args.out, device=args.device, progress=not args.json,
                                       engine=args.engine, threads=args.threads, tta=args.tta)
    if args.json:
        print_json(metrics)
        return 0
    print(format_table(metrics))
    print(f"engine: {metrics['engine']}, test-time augmentation: {metrics['tta']}, "
          f"temperature: {metrics['temperature']:.3f}")
    for s in metrics["skipped_files"]:
        print(f"skipped {s['file']}: {s['reason']}")
    if args.out:
        print(f"metrics, predictions and figures: {args.out}")
    return 0
