"""``vistrain check DATA``: quick diagnostics of the training setup, without training.

Runs :func:`vistrain.workflows.check.check` (the Python API's ``vistrain.check``; see
:mod:`vistrain.training.checks`: normalization, overfit a small sample,
label-shuffle test, learning-rate finder -- the same range test as ``vistrain lr-find``) with the
same options as ``vistrain train``; prints one line per check on stdout (or, with ``--json``, one
JSON document and nothing else there); exits 1 when a check fails.
"""
from __future__ import annotations

from vistrain.cli.common import add_train_options, config_from_args, job, print_json


def register(sub) -> None:
    p = sub.add_parser("check", help="quick diagnostics before training (overfit, label shuffle, ...)",
                       description="Sanity checks of data, preprocessing and optimisation settings: "
                                   "normalization of a real batch, overfitting 2x16 images, a "
                                   "label-shuffle (leakage) test and the learning-rate finder.")
    p.add_argument("data", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--out", help="folder for checks.json and lr_finder.png (default: none written)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of the overfit test (default 100)")
    p.add_argument("--lr-steps", type=int, default=100, help="steps of the learning-rate range test (default 100)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON document")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config_from_args(args, args.data)
    # the results are printed here, once: not also logged (the log goes to the same terminal)
    results = job("check").check(config=cfg, out=args.out, steps=args.steps, lr_steps=args.lr_steps,
                                 progress=not args.json, log_results=False)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            print(r.line())
    return 1 if any(r.passed is False for r in results) else 0
