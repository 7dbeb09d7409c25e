"""``vistrain predict``: top-k classes of images with a run or a pretrained model."""
from __future__ import annotations

from pathlib import Path

from vistrain.cli.common import print_json


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a trained run or a pretrained model")
    p.add_argument("run_dir", nargs="?", help="run directory of `vistrain train`")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--model", help="use this pretrained (ImageNet) model instead of a run, e.g. tf_efficientnet_lite0")
    p.add_argument("--weights", help="with --model: weights file")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from vistrain.errors import VistrainError
    from vistrain.predictor import Classifier
    images = list(args.images)
    if args.model:
        if args.run_dir:  # with --model the first positional is an image too
            images.insert(0, args.run_dir)
        clf = Classifier.from_pretrained(args.model, weights=args.weights, device=args.device)
    else:
        if not args.run_dir:
            raise VistrainError("give a run directory (or --model NAME) and image files")
        clf = Classifier.from_run(args.run_dir, device=args.device)
    if not images:
        raise VistrainError("no image files given")
    for img in images:
        if not Path(img).is_file():
            raise VistrainError(f"{img}: image file not found")
    results = clf.predict(images, top_k=args.top_k)
    if args.json:
        print_json({"model": clf.source, "predictions": results})
        return 0
    for r in results:
        print(r["image"])
        for t in r["top"]:
            print(f"  {t['probability']:7.2%}  {t['class']}  [{t['index']}]")
    return 0
