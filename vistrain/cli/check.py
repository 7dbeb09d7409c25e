"""``vistrain check DATA``: quick diagnostics of the training setup, without training.

Runs :func:`vistrain.interpret.diagnostics.run_checks` (normalization, overfit a small sample,
label-shuffle test, learning-rate finder -- the same range test as ``vistrain lr-find``) with the
same options as ``vistrain train``; prints one line per check on stdout (or, with ``--json``, one
JSON document and nothing else there); exits 1 when a check fails.
"""
from __future__ import annotations

from pathlib import Path

from vistrain.cli.common import add_train_options, config_from_args


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


def prepare(cfg, progress: bool = True):
    """Model, pretrained config, preprocessing and prepared data exactly as ``train`` makes them."""
    from vistrain.device import Runtime
    from vistrain.training.run import prepare_model_and_data
    rt = Runtime.create(cfg.train.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        cpu_amp=cfg.train.cpu_amp)
    model, pcfg, pre, data = prepare_model_and_data(cfg, rt, progress=progress)
    return model, pcfg, pre, data, rt


def run(args) -> int:
    from vistrain.cli.common import print_json
    from vistrain.interpret.diagnostics import run_checks
    cfg = config_from_args(args, args.data)
    model, pcfg, pre, data, rt = prepare(cfg)
    # the results are printed here, once: not also logged (the log goes to the same terminal)
    results = run_checks(cfg, model, pcfg, pre, data, rt, out_dir=Path(args.out) if args.out else None,
                         overfit_steps=args.steps, lr_steps=args.lr_steps, log_results=False)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            print(r.line())
    return 1 if any(r.passed is False for r in results) else 0
