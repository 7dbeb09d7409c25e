"""``vistrain cv DATA --folds K``: stratified k-fold cross-validation (see vistrain.evaluation.cv)."""
from __future__ import annotations

from pathlib import Path

from vistrain.cli.common import add_train_options, config_from_args, job, print_json
from vistrain.errors import VistrainError


def register(sub) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation: mean ± std over folds, out-of-fold scores",
                       description="Split DATA into K stratified folds (train+val only when DATA has "
                                   "its own test/ folder), train one model per fold with the normal "
                                   "training path into OUT/fold-<k>/, and report mean ± std over "
                                   "folds and metrics of the pooled out-of-fold predictions.")
    p.add_argument("data", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--folds", type=int, default=5, help="number of folds K")
    p.add_argument("--fold", type=int, metavar="K",
                   help="run only fold K (0-based), e.g. one per device; the last one aggregates")
    p.add_argument("--out", help="output folder (default runs/<data>-cv<K>-<time>)")
    p.add_argument("--resume", action="store_true", help="skip finished folds, continue interrupted ones")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--per-class", action="store_true", help="always print per-class pooled metrics")
    p.add_argument("--json", action="store_true", help="print cv_metrics.json (without the per-fold "
                   "rows) as one JSON document instead of tables")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.out is None and (args.resume or args.fold is not None):
        raise VistrainError("--resume and --fold need --out OUT (the cross-validation folder)")
    cfg = config_from_args(args, args.data)
    work = job("cv")
    # the folder fixed here, so that an interrupted run's message can name it
    args.out = args.out or str(work.default_out_dir(cfg.data.root, f"-cv{args.folds}"))
    result = work.cv(config=cfg, folds=args.folds, out=args.out, fold=args.fold, resume=args.resume,
                overwrite=args.overwrite, progress=True)
    out = Path(result["out_dir"])
    if args.json:
        print_json({k: v for k, v in result.items() if k != "folds"})
        return 0
    if "summary" not in result:
        print(f"folds finished: {result['finished']}; missing: {result['missing']} "
              f"(run them with --fold K --out {out}, or all with --resume --out {out})")
        return 0
    # numpy: imported once the folds ran, not for --help or an argument error
    from vistrain.evaluation.cv import format_cv
    print(format_cv(result, per_class=True if args.per_class else None))
    issues = result.get("label_issues")
    if issues and issues.get("skipped"):
        print(f"label issues: none listed, {issues['skipped']}")
    elif issues:
        gallery = f", gallery {issues['png']}" if issues.get("png") else ""
        print(f"label issues: {issues['count']} likely mislabelled image(s), the out-of-fold "
              f"predictions contradict their label: {(out / issues['csv']).resolve()}{gallery}")
    print(f"report: {(out / 'report.html').resolve()}")
    return 0
