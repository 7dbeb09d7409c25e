"""``vistrain preview DATA``: a picture of sample images before and after preprocessing."""
from __future__ import annotations

from vistrain.cli.common import print_json


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
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def sample_paths(index, n: int, seed: int) -> list:
    """``n`` paths, round-robin over the classes, random (seeded) within each class."""
    import numpy as np
    rng = np.random.default_rng(seed)
    per_class = []
    for k in range(len(index.classes)):
        idx = [i for i, lab in enumerate(index.labels) if lab == k]
        per_class.append(list(rng.permutation(idx)))
    out = []
    while len(out) < n and any(per_class):
        for lst in per_class:
            if lst and len(out) < n:
                out.append(index.paths[lst.pop(0)])
    return out


def run(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from vistrain.data.io import is_image_file
    from vistrain.data.scan import scan_folder
    from vistrain.data.stats import default_preprocess
    from vistrain.errors import VistrainError
    from vistrain.report.preprocess_preview import preview_preprocessing
    if args.n < 1:
        raise VistrainError(f"--n must be at least 1, got {args.n}")
    data = Path(args.data)
    paths = [data] if data.is_file() and is_image_file(data) else sample_paths(scan_folder(data), args.n, args.seed)
    pre = default_preprocess(args.model)
    if args.size:
        pre = replace(pre, size=args.size)
    out = preview_preprocessing(paths, pre, args.out).resolve()
    if args.json:
        print_json({"preview": str(out), "images": [str(p) for p in paths],
                    "preprocess": pre.to_dict(), "describe": pre.describe()})
    else:
        print(f"preview: {out} ({len(paths)} images; {pre.describe()})")
    return 0
