"""``vistrain preview DATA``: a picture of sample images before and after preprocessing."""
from __future__ import annotations

from vistrain.cli.common import job, print_json


def register(sub) -> None:
    p = sub.add_parser("preview", help="show sample images before/after resize, crop and normalize",
                       description="Write a figure of N sample images (spread over the classes, "
                                   "seeded) as decoded and as the model gets them (de-normalized), "
                                   "with per-channel pixel histograms before and after.")
    p.add_argument("data", help="image folder (DATA/<class>/<image>) or one image file")
    p.add_argument("--out", default="preprocess-preview.png", help="output image (.png, .svg, .pdf)")
    p.add_argument("--model", help="preprocessing of this model (default tf_efficientnet_lite0)")
    p.add_argument("--n", type=int, default=8, help="number of sample images")
    p.add_argument("--size", type=int, help="override the model's input size")
    p.add_argument("--seed", type=int, default=0, help="which sample images")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file that vistrain did not write (never one "
                        "inside the data)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args) -> int:
    out = job("preview").preview(args.data, out=args.out, model=args.model, n=args.n, size=args.size,
                                 seed=args.seed, overwrite=args.overwrite)
    if args.json:
        print_json(out)
    else:
        print(f"preview: {out['preview']} ({len(out['images'])} images; {out['describe']})")
    return 0
