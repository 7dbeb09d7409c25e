"""``vistrain compare DATA --vary norm=batch,group [--vary act=relu,gelu]``: one run per setting."""
from __future__ import annotations

from pathlib import Path

from vistrain.cli.common import add_train_options, config_from_args, job, print_json


def register(sub) -> None:
    p = sub.add_parser("compare", help="train the same network once per setting (e.g. each "
                                       "normalization) and compare curves, metrics and time",
                       description="Train one run per setting of the cartesian product of the "
                                   "--vary lists with the same split and seed into OUT/<setting>/ "
                                   "and write OUT/compare.html and OUT/compare.json. Default model "
                                   "vistrain/resnet-tiny, trained from scratch end to end (finetune).")
    p.add_argument("data", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a setting's name (norm, act, init, model, lr, batch_size, ...) or SECTION.KEY "
                        "with a comma-separated list of values "
                        "(repeatable; the runs are the cartesian product)")
    p.add_argument("--out", help="output folder (default runs/<data>-compare-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--json", action="store_true", help="print compare.json as one JSON document "
                   "instead of a table")
    add_train_options(p)
    for action in p._actions:  # compare's own default model, not train's
        if action.dest == "model":
            action.help = "timm model name or vistrain/<name> (default vistrain/resnet-tiny)"
    p.set_defaults(func=run)


def run(args) -> int:
    # numpy and PIL come with this module: imported when the verb runs, not for --help
    from vistrain.evaluation.compare import format_compare_table, parse_vary
    parse_vary(args.vary)  # fail on a bad --vary before anything else (torch included)
    work = job("compare")
    if not args.model and not args.config:
        args.model = work.DEFAULT_MODEL
    cfg = config_from_args(args, args.data)
    summary = work.compare(config=cfg, vary=args.vary, out=args.out, overwrite=args.overwrite,
                      progress=True)
    if args.json:
        print_json(summary)
        return 0
    print(format_compare_table(summary))
    if not summary["same_split"]:
        print("warning: the runs did not get the same split")
    print(f"report: {(Path(summary['out_dir']) / 'compare.html').resolve()}")
    return 0
