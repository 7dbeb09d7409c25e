"""``vistrain train DATA``: the main job."""
from __future__ import annotations

import json
import os
from pathlib import Path

from vistrain.cli.common import add_train_options, config_from_args, job, print_json
from vistrain.config import json_schema
from vistrain.errors import RunDirError, VistrainError
from vistrain.evaluation.tables import format_table


def register(sub) -> None:
    p = sub.add_parser("train", help="train a classifier on an image folder (DATA/<class>/<image>)",
                       description="Scan DATA, split it (stratified, seeded), train with transfer "
                                   "learning and write a self-describing run directory.")
    p.add_argument("data", nargs="?", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--out", help="run directory (default runs/<data>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing vistrain run directory (kept aside as "
                   "OUT.old-<time> until the new run's first checkpoint)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint, "
                   "on the data it was started on (checked by a fingerprint of its file list); a "
                   "finished run is not resumed (--config RUN_DIR/config.yaml --epochs N trains anew)")
    p.add_argument("--auto-resume", action="store_true",
                   help="continue --out from its checkpoint when it has one, else start it (for "
                        "schedulers that rerun the same command, e.g. a Slurm requeue; a process "
                        "restarted by torchrun --max-restarts does this by itself)")
    p.add_argument("--data", dest="data_path", metavar="PATH",
                   help="with --resume: the run's data moved to PATH (accepted only if its files are "
                        "unchanged); else the same as DATA")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config.yaml and exit without writing anything")
    p.add_argument("--print-schema", action="store_true",
                   help="print the JSON Schema of a config file (every setting's type, choices, range "
                        "and default) and exit; no DATA needed")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (run folder, report, metrics) on stdout")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.print_schema:
        print(json.dumps(json_schema(), indent=1))
        return 0
    data = args.data_path or args.data
    if args.data_path and args.data and Path(args.data_path) != Path(args.data):
        raise VistrainError(f"two data folders given ({args.data} and --data {args.data_path}); give one")
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise RunDirError(f"{run_dir}: no config.yaml; not a vistrain run directory to resume")
        args.config = args.config or str(run_dir / "config.yaml")
        cfg = config_from_args(args, data)  # a bad value fails here, before torch loads
        work = job("train")
        cfg = work.resume_config(cfg, run_dir, data)
        if args.print_config:
            return _print_config(cfg)
        result = work.train(data, config=cfg, out=run_dir, resume=True, progress=True)
    else:
        if not data:
            raise VistrainError("give the image folder: vistrain train DATA")
        cfg = config_from_args(args, data)
        if args.print_config:
            return _print_config(cfg)
        work = job("train")
        # the folder fixed here, so that an interrupted run's message can name it
        args.out = args.out or str(work.default_out_dir(cfg.data.root))
        result = work.train(config=cfg, out=args.out, overwrite=args.overwrite,
                            auto_resume=args.auto_resume, progress=True)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    report = (result.run_dir / "report.html").resolve()
    if args.json:
        print_json({"run_dir": str(result.run_dir.resolve()), "report": str(report),
                    "classes": result.classes, "metrics": result.metrics})
        return 0
    test = result.metrics.get("test") or result.metrics.get("val") or {}
    part = "test" if "test" in result.metrics else "val"
    if test:
        print(format_table(test))
        print(f"held-out {part} accuracy: {test['accuracy']:.4f} "
              f"(n={test.get('n_samples')}, 95% CI {_ci(test)})")
    print(f"report: {report}")
    return 0


def _print_config(cfg) -> int:
    """Print the config as training would save it (absolute data folder); writes nothing."""
    if cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    print(cfg.to_yaml(), end="")
    return 0


def _ci(m: dict) -> str:
    ci = (m.get("ci95") or {}).get("accuracy")
    return f"{ci['low']:.3f}-{ci['high']:.3f}" if ci else "n/a"
