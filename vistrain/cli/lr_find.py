"""``vistrain lr-find DATA``: learning-rate range test with the training settings.

The model, preprocessing, split and trainable layers are set up exactly as ``vistrain train``
would (same flags/config) and the range test of :func:`vistrain.training.lrfind.run_range_test`
(through :func:`vistrain.workflows.lr_find.lr_find`, the Python API's ``vistrain.lr_find``)
runs on the training part -- the same test as the ``lr-finder`` check of ``vistrain check``, so
both suggest the same rate.  With ``feature-extraction`` it trains the new head on the cached,
standardized features (seconds once the features are cached); other strategies run through the
model.  Nothing is trained or written except the plot (``--out``).  Text on stdout, or with
``--json`` one JSON document (rates, losses, suggestion).
"""
from __future__ import annotations

import argparse
import logging
import math

from vistrain.cli.common import add_train_options, config_from_args, job, print_json
from vistrain.cli.main import DeprecatedAlias

log = logging.getLogger("vistrain")


def register(sub) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test: suggest a rate (plot with --out)",
                       description="Exponential ramp of the learning rate from 1e-7 to 10 over ~100 "
                                   "steps; smoothed loss; stops at divergence; suggests the rate of "
                                   "steepest descent. Same test as the lr-finder of `vistrain check`.")
    p.add_argument("data", help="image folder: DATA/<class>/<image>")
    p.add_argument("--out", metavar="PNG", help="write the loss-vs-rate plot here")
    p.add_argument("--plot", dest="out", action=DeprecatedAlias, new="--out", help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file that vistrain did not write (never one "
                        "inside the data)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (rates, losses, suggestion) on stdout")
    p.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=10.0)
    add_train_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config_from_args(args, args.data)
    res = job("lr_find").lr_find(config=cfg, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr,
                  out=args.out, progress=not args.json, overwrite=args.overwrite)
    if "plot" in res:
        log.info("plot: %s", res["plot"])
    if args.json:
        print_json(_jsonable(res))
        return 0
    diverged = f", diverged at {res['diverged_at']:.2e}" if res["diverged_at"] else ""
    print(f"range test: {len(res['lrs'])} steps{diverged} ({res['trained_as']})")
    if res["suggestion"] is None:
        print("no suggestion: too few steps")
    else:
        print(f"suggested learning rate: {res['suggestion']:.2e} ({res['method']}); "
              f"min/10: {res['min_div_10']:.2e}; configured: {res['configured_lr']:.2e}")
    return 0


def _jsonable(res: dict) -> dict:
    """Non-finite numbers as null: strict JSON has no NaN/Infinity."""
    return {k: [_finite_or_none(x) for x in v] if isinstance(v, list) else _finite_or_none(v)
            for k, v in res.items()}


def _finite_or_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value
