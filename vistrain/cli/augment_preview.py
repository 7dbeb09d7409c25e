"""``vistrain augment-preview DATA --augment P``: see what training augmentation does to your images."""
from __future__ import annotations

import argparse
from dataclasses import asdict

from vistrain.cli.common import print_json
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
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def pick(labels, n: int, seed: int) -> list[int]:
    """``n`` indices, round-robin over the classes (seeded order within each class)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    out: list[int] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(int(pool.pop(0)))
    return out


def run(args) -> int:
    from vistrain.config import AugmentConfig
    from vistrain.data.scan import scan_folder
    from vistrain.errors import VistrainError
    from vistrain.report.augment_preview import augment_preview
    if args.n < 1 or args.k < 1:
        raise VistrainError("--n and --k must be >= 1")
    index = scan_folder(args.data)
    idx = pick(index.labels, args.n, args.seed)
    if (args.mixup > 0 or args.cutmix > 0) and len(idx) < 2:
        raise VistrainError("mixup/cutmix mix images with each other: use --n 2 or more")
    cfg = AugmentConfig(preset=args.augment, mixup=args.mixup, cutmix=args.cutmix, policy=args.policy,
                        jitter=args.jitter)
    out = augment_preview([index.paths[i] for i in idx], [index.labels[i] for i in idx], index.classes,
                          cfg, args.size, args.out, n=len(idx), k=args.k, seed=args.seed)
    if args.json:
        print_json({"preview": str(out.resolve()), "images": [str(index.paths[i]) for i in idx],
                    "augment": asdict(cfg), "size": args.size, "k": args.k, "seed": args.seed})
    else:
        print(f"augmentation preview: {out.resolve()}")
    return 0
