"""``vistrain report RUN_DIR``: (re)write the self-contained ``report.html`` of a run."""
from __future__ import annotations

from vistrain.cli.common import job, print_json


def register(sub) -> None:
    p = sub.add_parser("report", help="regenerate a run's self-contained report.html",
                       description="Write RUN_DIR/report.html: data, preprocessing, augmentation, "
                                   "strategy, curves, metrics, plots, a Grad-CAM gallery of the top "
                                   "losses and the reproducibility record, in one offline file.")
    p.add_argument("run_dir", help="run directory of `vistrain train`")
    p.add_argument("--json", action="store_true", help='print {"report": PATH} as one JSON document')
    p.set_defaults(func=run)


def run(args) -> int:
    path = job("report").build_report(args.run_dir).resolve()
    if args.json:
        print_json({"report": str(path)})
    else:
        print(f"report: {path}")
    return 0
