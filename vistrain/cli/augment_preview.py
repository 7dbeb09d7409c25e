"""``vistrain augment-preview DATA --augment P``: see what training augmentation does to your images."""
from __future__ import annotations

import argparse
from vistrain.cli.common import job, print_json
from vistrain.cli.main import DeprecatedAlias


def register(sub) -> None:
    p = sub.add_parser("augment-preview", help="picture of N images x K random training augmentations",
                       description="Write a PNG grid: each row one image of DATA (its evaluation "
                                   "view first), then K random augmentations as training draws them; "
                                   "with --mixup/--cutmix each cell shows its mixed label.")
    p.add_argument("data", help="image folder: DATA/<class>/<image>")
    p.add_argument("--augment", default="light", choices=["none", "light", "medium", "heavy"],
                   help="augmentation preset, as `vistrain train --augment`")
    p.add_argument("--preset", dest="augment", action=DeprecatedAlias, new="--augment",
                   choices=["none", "light", "medium", "heavy"], help=argparse.SUPPRESS)
    p.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(alpha, alpha); 0 disables")
    p.add_argument("--cutmix", type=float, default=0.0, help="cutmix Beta(alpha, alpha); 0 disables")
    p.add_argument("--policy", default="none", choices=["none", "randaugment", "trivialaugment"],
                   help="automatic augmentation policy on top of the preset")
    p.add_argument("--jitter", default="matrix", choices=["matrix", "hsv"],
                   help="colour jitter as one colour matrix (default) or exact HSV steps")
    p.add_argument("--n", type=int, default=6, help="images (rows), spread over the classes")
    p.add_argument("--k", type=int, default=8, help="random augmentations per image (columns)")
    p.add_argument("--size", type=int, default=224, help="model input size")
    p.add_argument("--seed", type=int, default=0, help="which images and augmentations")
    p.add_argument("--out", default="augment-preview.png", help="output PNG")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file that vistrain did not write (never one "
                        "inside the data)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args) -> int:
    out = job("preview").augment_preview(args.data, out=args.out, augment=args.augment, mixup=args.mixup,
                                         cutmix=args.cutmix, policy=args.policy, jitter=args.jitter,
                                         n=args.n, k=args.k, size=args.size, seed=args.seed,
                                         overwrite=args.overwrite)
    if args.json:
        print_json(out)
    else:
        print(f"augmentation preview: {out['preview']}")
    return 0
