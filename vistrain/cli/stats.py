"""``vistrain stats DATA``: exact per-channel mean/std after the resize training uses."""
from __future__ import annotations

from vistrain.cli.common import job, print_json


def register(sub) -> None:
    p = sub.add_parser("stats", help="exact per-channel mean/std of an image folder",
                       description="Per-channel mean and std (0..1 scale) over all pixels of all "
                                   "images in DATA (every split), after the resize training uses "
                                   "(the model's input size, crop, interpolation). Exact: integer "
                                   "histograms, parallel workers, cached by the file list.")
    p.add_argument("data", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--model", help="take size/crop/interpolation from this model "
                                   "(default tf_efficientnet_lite0: 224, crop 0.875, bicubic)")
    p.add_argument("--size", type=int, help="resize side; 0 = native size, no resize")
    p.add_argument("--grayscale", action="store_true", help="statistics of the grey images training "
                                                            "with preprocess.grayscale would use")
    p.add_argument("--workers", type=int, default=-1, help="worker processes (-1: one per CPU)")
    p.add_argument("--no-cache", action="store_true", help="recompute, do not read or write the cache")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    out = job("stats").stats(args.data, model=args.model, size=args.size, grayscale=args.grayscale,
                             workers=args.workers, cache=not args.no_cache)
    if args.json:
        print_json({k: v for k, v in out.items() if k != "describe"})
        return 0
    print(f"{out['data']}: {out['describe']}")
    if out["resize"]:
        r = out["resize"]
        print(f"resize: {r['mode']} {r['size']}, {r['interpolation']}, crop_pct {r['crop_pct']}")
    print("use: --normalize explicit --set preprocess.mean=[...] --set preprocess.std=[...] "
          "(or --normalize dataset, computed on the training split only)")
    return 0
