"""``vistrain predict RUN_DIR IMAGE|FOLDER...``: top-k classes of images with a run or a pretrained model.

Files, folders (their images, recursively, sorted) and unreadable files can be mixed: an
unreadable file is reported on its own line (``"error"`` in ``--json``) and the others are
predicted.  Exit code 0 when at least one image was predicted, 2 when none could be.
"""
from __future__ import annotations

import sys

from vistrain.cli.common import job, print_json
from vistrain.cli.evaluate import add_engine_options
from vistrain.errors import VistrainError


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a trained run or a pretrained model",
                       description="Print the most probable classes of each image (files, or "
                                   "folders of images searched recursively) with a trained run "
                                   "or, with --model, a pretrained ImageNet classifier.")
    p.add_argument("run_dir", nargs="?", help="run directory of `vistrain train` (omit with --model)")
    p.add_argument("images", nargs="*", help="image files and/or folders of images")
    p.add_argument("--model", help="use this pretrained (ImageNet) model instead of a run, e.g. tf_efficientnet_lite0")
    p.add_argument("--weights", help="with --model: weights file")
    p.add_argument("--top-k", type=int, default=5,
                   help="classes shown per image, 1 to the number of classes (more: all of them)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda | cuda:N")
    add_engine_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    images = list(args.images)
    run_dir = args.run_dir
    if args.model and run_dir:  # with --model the first positional is an image too
        images.insert(0, run_dir)
        run_dir = None
    if args.top_k < 1:
        raise VistrainError(f"--top-k {args.top_k}: must be at least 1 (values above the number of "
                            "classes show them all)")
    if not args.model and not run_dir:
        raise VistrainError("give a run directory (or --model NAME) and images: "
                            "vistrain predict RUN_DIR IMAGE|FOLDER...")
    if not images:
        raise VistrainError("no images given: vistrain predict RUN_DIR IMAGE|FOLDER...")
    result = job("predict").predict_job(run_dir, images, model=args.model, weights=args.weights,
                                        top_k=args.top_k, device=args.device, progress=not args.json,
                                        engine=args.engine, threads=args.threads, tta=args.tta)
    if result["n_predicted"] == 0:
        first = result["predictions"][0]
        raise VistrainError(f"none of the {len(result['predictions'])} images could be predicted; "
                            f"{first['image']}: {first['error']}")
    if args.json:
        print_json(result)
        return 0
    for r in result["predictions"]:
        if "error" in r:
            print(f"{r['image']}: error: {r['error']}")
            continue
        print(r["image"])
        for t in r["top"]:
            print(f"  {t['probability']:7.2%}  {t['class']}  [{t['index']}]")
    if result["n_failed"]:  # stdout keeps one line per image; the count is a warning
        print(f"warning: {result['n_failed']} of {len(result['predictions'])} images could not be "
              "read (their error lines are in the output)", file=sys.stderr)
    return 0
