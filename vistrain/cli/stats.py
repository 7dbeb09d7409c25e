"""``vistrain stats DATA``: exact per-channel mean/std after the resize training uses."""
from __future__ import annotations


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
    from dataclasses import replace

    from vistrain.cli.common import print_json
    from vistrain.data.scan import scan_folder
    from vistrain.data.stats import compute_stats, default_preprocess
    from vistrain.errors import VistrainError
    if args.size is not None and args.size < 0:
        raise VistrainError(f"--size must be >= 0 (0: native size), got {args.size}")
    index = scan_folder(args.data)
    pre = default_preprocess(args.model)
    if args.grayscale:
        pre = replace(pre, channels=1)
    st = compute_stats(index.paths, pre, size=args.size, workers=args.workers,
                       cache_dir=None if args.no_cache else "auto")
    if args.json:
        d = st.to_dict()
        d.update(data=str(index.root), resize=None if not st.size else
                 {"size": st.size, "mode": pre.resize_mode, "interpolation": pre.interpolation,
                  "crop_pct": pre.crop_pct})
        print_json(d)
    else:
        print(f"{index.root}: " + st.describe())
        if st.size:
            print(f"resize: {pre.resize_mode} {st.size}, {pre.interpolation}, crop_pct {pre.crop_pct}")
        print("use: --normalize explicit --set preprocess.mean=[...] --set preprocess.std=[...] "
              "(or --normalize dataset, computed on the training split only)")
    return 0
