"""``vistrain explain RUN_DIR IMAGE...``: heat maps of what the model looked at.

For each image: the Grad-CAM / Grad-CAM++ / LayerCAM overlay on the model input (after resize/crop,
before normalization, so pixels line up), optionally the early-vs-late feature-map grid, and for
Vision Transformers the per-head CLS attention and the attention rollout.  ``--model NAME`` uses
a pretrained ImageNet classifier instead of a run.  The written PNG paths are printed.
"""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM heat maps, feature maps and ViT attention for images",
                       description="Write heat-map overlays (and optionally feature maps / ViT attention) "
                                   "for images, with a trained run or a pretrained model.")
    p.add_argument("run_dir", nargs="?", help="run directory of `vistrain train` (omit with --model)")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--model", help="explain this pretrained (ImageNet) model instead of a run")
    p.add_argument("--weights", help="with --model: weights file")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "layercam"])
    p.add_argument("--class", dest="target", metavar="C",
                   help="class to explain, by name or index (default: each image's predicted class)")
    p.add_argument("--out", help="output folder (default RUN_DIR/explain, or ./explain-<model>)")
    p.add_argument("--layer", help="target layer name (default: the last spatial feature map)")
    p.add_argument("--list-layers", action="store_true", help="print the layers with spatial outputs and exit")
    p.add_argument("--feature-maps", action="store_true", help="also write an early-vs-late feature-map grid")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def resolve_class(target: str | None, classes: list[str]) -> int | None:
    """A class name (exact, then case-insensitive) or an index -> index; None stays None."""
    from vistrain.errors import VistrainError
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    lower = [c.lower() for c in classes]
    if target.lower() in lower and lower.count(target.lower()) == 1:
        return lower.index(target.lower())
    if target.lstrip("-").isdigit():
        i = int(target)
        if 0 <= i < len(classes):
            return i
        raise VistrainError(f"--class {target}: index out of range, the model has {len(classes)} classes (0-{len(classes) - 1})")
    shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
    raise VistrainError(f"--class {target!r}: no such class; give a name ({shown}) or an index")


def load_classifier(args):
    """(Classifier, image list, default output folder) from RUN_DIR or --model."""
    from vistrain.errors import VistrainError
    from vistrain.predictor import Classifier
    images = list(args.images)
    if args.model:
        if args.run_dir:
            images.insert(0, args.run_dir)
        clf = Classifier.from_pretrained(args.model, weights=args.weights, device=args.device)
        default_out = Path(f"explain-{args.model.replace('/', '_')}")
    else:
        if not args.run_dir:
            raise VistrainError("give a run directory (or --model NAME) and image files: "
                                "vistrain explain RUN_DIR IMAGE...")
        clf = Classifier.from_run(args.run_dir, device=args.device)
        default_out = Path(args.run_dir) / "explain"
    return clf, images, Path(args.out) if args.out else default_out


def _stems(images) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for img in images:
        stem = Path(img).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def explain_images(clf, images, out: Path, *, method="gradcam", target=None, layer=None,
                   feature_maps=False) -> list[Path]:
    """Write the PNGs for ``images`` into ``out``; returns their paths (in order)."""
    import numpy as np
    import torch

    from vistrain.errors import VistrainError
    from vistrain.interpret import (attention_maps, attention_rollout, compute_cam, find_target_layer,
                                  list_layers, plot_attention_heads, plot_feature_maps, save_cam_figure)
    from vistrain.interpret import feature_maps as get_feature_maps
    from vistrain.interpret._utils import is_token_model
    for img in images:
        if not Path(img).is_file():
            raise VistrainError(f"{img}: image file not found")
    model, pre, classes = clf.model, clf.preprocess, clf.classes
    cls = resolve_class(target, classes)
    vit = is_token_model(model)
    written: list[Path] = []
    fm_layers = None
    for img, stem in zip(images, _stems(images)):
        pix = pre.pixels(img)
        hwc = pix.permute(1, 2, 0).numpy()
        hwc = np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc
        x = pre.normalize(pix[None].to(clf.device))
        cams, logits = compute_cam(model, x, target_class=cls, method=method, target_layer=layer)
        probs = logits.float().softmax(1)[0]
        pred = int(probs.argmax())
        shown = pred if cls is None else cls
        title = (f"{classes[shown]} (p={float(probs[shown]):.3f})"
                 + ("" if cls is None else f"; predicted {classes[pred]} (p={float(probs[pred]):.3f})"))
        path = save_cam_figure(hwc, {method: cams[0].cpu()}, out / f"{stem}_{method}.png", title=title)
        written.append(path)
        print(f"{img}: predicted {classes[pred]} (p={float(probs[pred]):.3f}); {method} for "
              f"{classes[shown]}: {path}")
        if vit:
            heads = attention_maps(model, x) if getattr(model, "cls_token", None) is not None else None
            if heads is not None:
                written.append(plot_attention_heads(heads, out / f"{stem}_attention.png", image_uint8=hwc,
                                                    title="CLS attention per head, last block"))
                print(f"  attention heads: {written[-1]}")
            roll = attention_rollout(model, x)
            roll = (roll - roll.min()) / (roll.max() - roll.min()) if roll.max() > roll.min() else roll * 0
            written.append(save_cam_figure(hwc, {"attention rollout": roll}, out / f"{stem}_rollout.png",
                                           title="attention rollout"))
            print(f"  attention rollout: {written[-1]}")
        if feature_maps:
            if fm_layers is None:
                names = [n for n, _, _ in list_layers(model, tuple(pix.shape))]
                if not names:
                    raise VistrainError(f"{type(model).__name__} has no spatial layer for feature maps")
                late = layer or find_target_layer(model, tuple(pix.shape))[0]
                fm_layers = [names[0], late] if names[0] != late else [names[0]]
            maps = get_feature_maps(model, x, fm_layers)
            written.append(plot_feature_maps(maps, out / f"{stem}_feature_maps.png"))
            print(f"  feature maps ({', '.join(fm_layers)}): {written[-1]}")
    return written


def run(args) -> int:
    from vistrain.errors import VistrainError
    clf, images, out = load_classifier(args)
    if args.list_layers:
        from vistrain.interpret import find_target_layer, list_layers
        size = (clf.preprocess.channels, clf.preprocess.size, clf.preprocess.size)
        default = find_target_layer(clf.model, size)[0]
        for name, kind, shape in list_layers(clf.model, size):
            mark = "  <- default CAM layer" if name == default else ""
            print(f"{name:40s} {kind:24s} {'x'.join(map(str, shape))}{mark}")
        return 0
    if not images:
        raise VistrainError("no image files given: vistrain explain RUN_DIR IMAGE...")
    explain_images(clf, images, out, method=args.method, target=args.target, layer=args.layer,
                   feature_maps=args.feature_maps)
    return 0
