"""``vistrain explain RUN_DIR IMAGE|FOLDER...``: heat maps of what the model looked at.

The work is :func:`vistrain.workflows.explain.explain` (also ``vistrain.explain``); this module
parses the arguments and prints the written PNG paths (``--json``: one JSON document).
"""
from __future__ import annotations

from vistrain.cli.common import job, print_json
from vistrain.errors import VistrainError


def register(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM heat maps, feature maps and ViT attention for images",
                       description="Write heat-map overlays (and optionally feature maps / ViT attention) "
                                   "for images, with a trained run or a pretrained model.")
    p.add_argument("run_dir", nargs="?", help="run directory of `vistrain train` (omit with --model)")
    p.add_argument("images", nargs="*", help="image files and/or folders of images")
    p.add_argument("--model", help="explain this pretrained (ImageNet) model instead of a run")
    p.add_argument("--weights", help="with --model: weights file")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "layercam"],
                   help="class activation map method")
    p.add_argument("--class", dest="target", metavar="C",
                   help="class to explain, by name or index (default: each image's predicted class)")
    p.add_argument("--out", help="output folder (default RUN_DIR/explain, or ./explain-<model>)")
    p.add_argument("--layer", help="target layer name (default: the last spatial feature map)")
    p.add_argument("--list-layers", action="store_true", help="print the layers with spatial outputs and exit")
    p.add_argument("--feature-maps", action="store_true", help="also write an early-vs-late feature-map grid")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda | cuda:N")
    p.set_defaults(func=run)


def run(args) -> int:
    work = job("explain")
    images, run_dir = list(args.images), args.run_dir
    if args.model and run_dir:  # with --model the first positional is an image too
        images.insert(0, run_dir)
        run_dir = None
    if not args.model and not run_dir:
        raise VistrainError("give a run directory (or --model NAME) and image files: "
                            "vistrain explain RUN_DIR IMAGE...")
    if args.list_layers:
        clf = work.load_classifier(run_dir, model=args.model, weights=args.weights, device=args.device)
        return print_layers(work.cam_layers(clf), args.json)
    if not images:
        raise VistrainError("no image files given: vistrain explain RUN_DIR IMAGE...")
    result = work.explain(run_dir, images, model=args.model, weights=args.weights, method=args.method,
                         target=args.target, layer=args.layer, feature_maps=args.feature_maps,
                         out=args.out, device=args.device)
    if args.json:
        print_json(result)
        return 0
    for r in result["images"]:
        files = r["files"]
        print(f"{r['image']}: predicted {r['predicted']} (p={r['probability']:.3f}); {r['method']} for "
              f"{r['explained']}: {files['cam']}")
        if "attention" in files:
            print(f"  attention heads: {files['attention']}")
        if "rollout" in files:
            print(f"  attention rollout: {files['rollout']}")
        if "feature_maps" in files:
            print(f"  feature maps ({', '.join(r['feature_map_layers'])}): {files['feature_maps']}")
    return 0


def print_layers(layers: list[dict], as_json: bool) -> int:
    if as_json:
        print_json({"layers": layers})
        return 0
    for layer in layers:
        mark = "  <- default CAM layer" if layer["default"] else ""
        print(f"{layer['name']:40s} {layer['kind']:24s} {'x'.join(map(str, layer['shape']))}{mark}")
    return 0

