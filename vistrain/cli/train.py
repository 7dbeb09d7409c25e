"""``vistrain train DATA``: the main job."""
from __future__ import annotations

import os
from pathlib import Path

from vistrain.cli.common import add_train_options, config_from_args


def register(sub) -> None:
    p = sub.add_parser("train", help="train a classifier on an image folder (DATA/<class>/<image>)",
                       description="Scan DATA, split it (stratified, seeded), train with transfer "
                                   "learning and write a self-describing run directory.")
    p.add_argument("data", nargs="?", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--out", help="run directory (default runs/<data>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import vistrain
    from vistrain.errors import VistrainError
    from vistrain.training.run import run_training
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise VistrainError(f"{run_dir}: no config.yaml; not a vistrain run directory to resume")
        args.config = args.config or str(run_dir / "config.yaml")
        cfg = config_from_args(args, args.data)
        result = run_training(cfg, run_dir, resume=True)
    else:
        if not args.data:
            raise VistrainError("give the image folder: vistrain train DATA")
        cfg = config_from_args(args, args.data)
        out = Path(args.out) if args.out else vistrain.default_out_dir(cfg.data.root)
        result = run_training(cfg, out, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    test = result.metrics.get("test") or result.metrics.get("val") or {}
    part = "test" if "test" in result.metrics else "val"
    if test:
        from vistrain.evaluation.metrics import format_table
        print(format_table(test))
        print(f"held-out {part} accuracy: {test['accuracy']:.4f} "
              f"(n={test.get('n_samples')}, 95% CI {_ci(test)})")
    print(f"report: {(result.run_dir / 'report.html').resolve()}")
    return 0


def _ci(m: dict) -> str:
    ci = (m.get("ci95") or {}).get("accuracy")
    return f"{ci['low']:.3f}-{ci['high']:.3f}" if ci else "n/a"
