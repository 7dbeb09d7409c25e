"""``explain``: heat maps of what the model looked at (``vistrain explain``).

For each image: the Grad-CAM / Grad-CAM++ / LayerCAM overlay on the model input (after resize/crop,
before normalization, so pixels line up), optionally the early-vs-late feature-map grid, and for
Vision Transformers the per-head CLS attention and the attention rollout.

Example:
    >>> import vistrain
    >>> r = vistrain.explain("runs/demo", "examples/fashion-mnist-small/Bag/0000.png")  # doctest: +SKIP
    >>> r["images"][0]["predicted"], r["images"][0]["files"]["cam"]                    # doctest: +SKIP
    ('Bag', 'runs/demo/explain/0000_gradcam.png')
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vistrain import fsutil
from vistrain.artifact_meta import check_finite_probabilities
from vistrain.errors import VistrainError
from vistrain.interpret._utils import is_token_model
from vistrain.interpret.attention import attention_maps, attention_rollout, plot_attention_heads
from vistrain.interpret.cam import compute_cam, find_target_layer
from vistrain.interpret.featuremaps import feature_maps as get_feature_maps
from vistrain.interpret.featuremaps import list_layers, plot_feature_maps
from vistrain.interpret.render import save_cam_figure
from vistrain.prediction import image_entries
from vistrain.predictor import Classifier
from vistrain.training.run import recorded_data_root
from vistrain.workflows.logs import show_log_lines
from vistrain.workflows.predict import load_classifier

METHODS = ("gradcam", "gradcam++", "layercam")


def resolve_class(target: str | int | None, classes: list[str]) -> int | None:
    """A class name (exact, then case-insensitive) or an index -> index; None stays None."""
    if target is None:
        return None
    target = str(target)
    if target in classes:
        return classes.index(target)
    lower = [c.lower() for c in classes]
    if target.lower() in lower and lower.count(target.lower()) == 1:
        return lower.index(target.lower())
    if target.lstrip("-").isdigit():
        i = int(target)
        if 0 <= i < len(classes):
            return i
        raise VistrainError(f"--class {target}: index out of range, the model has {len(classes)} "
                            f"classes (0-{len(classes) - 1})")
    shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
    raise VistrainError(f"--class {target!r}: no such class; give a name ({shown}) or an index")


def readable_sources(images) -> list[tuple[str, str | Path | Image.Image]]:
    """``(name, source)`` of each image (files, folders, PIL images); a missing one is an error."""
    sources = []
    for name, source, error in image_entries(images):
        if error == "no such file or folder":
            raise VistrainError(f"{name}: image file not found")
        if error is not None:
            raise VistrainError(f"{name}: {error}")
        sources.append((name, source))
    if not sources:
        raise VistrainError("no images given: vistrain explain RUN_DIR IMAGE...")
    return sources


def _stems(sources) -> list[str]:
    """File-name stems for the outputs, unique (``a``, ``a-2``) and safe for PIL images."""
    seen: dict[str, int] = {}
    out = []
    for i, (name, source) in enumerate(sources):
        stem = f"image{i}" if isinstance(source, Image.Image) else Path(name).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def cam_layers(clf: Classifier) -> list[dict]:
    """The layers with spatial outputs: ``{"name", "kind", "shape", "default"}`` (default: the
    layer a CAM uses unless told otherwise)."""
    size = (clf.preprocess.channels, clf.preprocess.size, clf.preprocess.size)
    default = find_target_layer(clf.model, size)[0]
    return [{"name": name, "kind": kind, "shape": list(shape), "default": name == default}
            for name, kind, shape in list_layers(clf.model, size)]


def explain_each(clf: Classifier, images, out: Path, *, method: str = "gradcam", target=None,
                 layer: str | None = None, feature_maps: bool = False) -> list[dict]:
    """Write the figures of each image into ``out``; one record per image, in order:
    ``{"image", "predicted", "probability", "explained", "explained_probability", "method",
    "files": {"cam", ["attention", "rollout", "feature_maps"]}}`` (paths as strings)."""
    if method not in METHODS:
        raise VistrainError(f"method {method!r}: use one of {', '.join(METHODS)}")
    sources = readable_sources(images)
    model, pre, classes = clf.model, clf.preprocess, clf.classes
    cls = resolve_class(target, classes)
    vit = is_token_model(model)
    out = Path(out)
    records, fm_layers = [], None
    for (name, source), stem in zip(sources, _stems(sources)):
        pix = pre.pixels(source)
        hwc = pix.permute(1, 2, 0).numpy()
        hwc = np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc
        x = pre.normalize(pix[None].to(clf.device))
        cams, logits = compute_cam(model, x, target_class=cls, method=method, target_layer=layer)
        # the run's calibration, as predict gives it: one probability for one image and run
        probs = check_finite_probabilities((logits.float() / clf.temperature).softmax(1)[0],
                                          clf.weights_file)
        pred = int(probs.argmax())
        shown = pred if cls is None else cls
        title = (f"{classes[shown]} (p={float(probs[shown]):.3f})"
                 + ("" if cls is None else f"; predicted {classes[pred]} (p={float(probs[pred]):.3f})"))
        files = {"cam": save_cam_figure(hwc, {method: cams[0].cpu()}, out / f"{stem}_{method}.png",
                                        title=title)}
        if vit:
            files.update(_attention_figures(model, x, hwc, out, stem))
        if feature_maps:
            if fm_layers is None:
                fm_layers = _feature_map_layers(model, tuple(pix.shape), layer)
            files["feature_maps"] = plot_feature_maps(get_feature_maps(model, x, fm_layers),
                                                      out / f"{stem}_feature_maps.png")
        records.append({"image": name, "predicted": classes[pred], "probability": float(probs[pred]),
                        "explained": classes[shown], "explained_probability": float(probs[shown]),
                        "method": method, "feature_map_layers": fm_layers if feature_maps else None,
                        "files": {kind: str(path) for kind, path in files.items()}})
    return records


def _attention_figures(model, x, hwc, out: Path, stem: str) -> dict[str, Path]:
    """Per-head CLS attention (models with a CLS token) and the attention rollout of a ViT."""
    files = {}
    if getattr(model, "cls_token", None) is not None:
        files["attention"] = plot_attention_heads(attention_maps(model, x), out / f"{stem}_attention.png",
                                                  image_uint8=hwc, title="CLS attention per head, last block")
    roll = attention_rollout(model, x)
    roll = (roll - roll.min()) / (roll.max() - roll.min()) if roll.max() > roll.min() else roll * 0
    files["rollout"] = save_cam_figure(hwc, {"attention rollout": roll}, out / f"{stem}_rollout.png",
                                       title="attention rollout")
    return files


def _feature_map_layers(model, shape: tuple, layer: str | None) -> list[str]:
    """The first spatial layer and the CAM layer: what the network sees early and late."""
    names = [n for n, _, _ in list_layers(model, shape)]
    if not names:
        raise VistrainError(f"{type(model).__name__} has no spatial layer for feature maps")
    late = layer or find_target_layer(model, shape)[0]
    return [names[0], late] if names[0] != late else [names[0]]


def explain_images(clf: Classifier, images, out: Path, **options) -> list[Path]:
    """The paths :func:`explain_each` wrote, in order (options as there)."""
    return [Path(p) for r in explain_each(clf, images, out, **options) for p in r["files"].values()]


def image_folders(images) -> list[Path]:
    """The folders holding ``images`` (a folder itself, or a file's folder); PIL images have none.

    Example:
        >>> image_folders(["photos/a.png"])
        [PosixPath('photos')]
    """
    items = images if isinstance(images, (list, tuple)) else [images]
    return [Path(i) if Path(i).is_dir() else Path(i).parent for i in items if isinstance(i, (str, Path))]


def guarded_image_folders(images, run_dir) -> list[Path]:
    """The images' folders (:func:`image_folders`) that outputs must stay out of, less those that
    hold the run folder itself: ``RUN/explain`` is inside vistrain's own run folder, never read
    as images, even when the image lies in a folder around the run (``explain runs/x img.jpg``).

    Example:
        >>> guarded_image_folders(["img.jpg", "photos/a.png"], "runs/x")
        [PosixPath('photos')]
    """
    run = Path(run_dir).resolve() if run_dir else None
    return [d for d in image_folders(images)
            if run is None or not (run == d.resolve() or d.resolve() in run.parents)]


def explain(run_dir: str | Path | None = None, images=(), *, model: str | None = None,
            weights: str | None = None, method: str = "gradcam", target: str | int | None = None,
            layer: str | None = None, feature_maps: bool = False, out: str | Path | None = None,
            device: str = "cpu") -> dict:
    """Heat-map overlays of ``images`` (files, folders, PIL images, or a list of them).

    ``method``: gradcam, gradcam++ or layercam; ``target``: the class to explain, by name or
    index (default: each image's predicted class); ``layer``: the CAM layer (default: the last
    spatial feature map); ``feature_maps``: also an early-vs-late feature-map grid.  ``model``
    (with ``run_dir=None``) explains that pretrained ImageNet classifier.  Figures go to ``out``
    (default ``RUN_DIR/explain`` or ``./explain-<model>``).  Returns ``{"model", "out_dir",
    "images": [one record per image, see explain_each]}``.

    Example:
        >>> import vistrain
        >>> r = vistrain.explain("runs/demo", ["a.png", "b.png"], method="layercam", target="Bag")  # doctest: +SKIP
        >>> [i["files"]["cam"] for i in r["images"]]                                             # doctest: +SKIP
        ['runs/demo/explain/a_layercam.png', 'runs/demo/explain/b_layercam.png']
    """
    show_log_lines()
    if out is None:
        out = Path(f"explain-{model.replace('/', '_')}") if model else Path(run_dir) / "explain"
    # before the model loads: never into the training data or the images' own folders
    data_folders = [*guarded_image_folders(images, run_dir), recorded_data_root(run_dir) if run_dir else None]
    fsutil.check_outputs_folder(out, data_folders=data_folders)
    clf = load_classifier(run_dir, model=model, weights=weights, device=device)
    if method not in METHODS:  # checked again by explain_each; here before any folder is made
        raise VistrainError(f"method {method!r}: use one of {', '.join(METHODS)}")
    resolve_class(target, list(clf.classes))  # an unknown --class fails before any folder is made
    fsutil.prepare_outputs_folder(out, data_folders=data_folders)
    records = explain_each(clf, images, Path(out), method=method, target=target, layer=layer,
                           feature_maps=feature_maps)
    return {"model": clf.source, "out_dir": str(out), "images": records}
