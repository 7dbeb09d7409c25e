"""``preview`` and ``augment_preview``: pictures of what preprocessing and augmentation do.

Example:
    >>> import vistrain
    >>> vistrain.preview("examples/fashion-mnist-small", out="pre.png")["preview"]      # doctest: +SKIP
    '/home/me/pre.png'
    >>> vistrain.augment_preview("examples/fashion-mnist-small", augment="heavy")["k"]  # doctest: +SKIP
    8
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from vistrain import fsutil
from vistrain.config import AugmentConfig
from vistrain.data.scan import scan_folder
from vistrain.data.stats import default_preprocess
from vistrain.errors import VistrainError
from vistrain.imageio.read import is_image_file
from vistrain.report.augment_preview import augment_preview as draw_augment_preview
from vistrain.report.preprocess_preview import preview_preprocessing
from vistrain.workflows.logs import show_log_lines


def spread_over_classes(labels, n: int, seed: int) -> list[int]:
    """``n`` indices into ``labels``, round-robin over the classes, seeded order within each.

    Example:
        >>> labels = [0, 0, 1, 1, 2]
        >>> picked = spread_over_classes(labels, 3, seed=0)
        >>> len(picked), sorted(labels[i] for i in picked)      # one image of each class
        (3, [0, 1, 2])
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    out: list[int] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(int(pool.pop(0)))
    return out


def preview(data: str | Path, /, *, out: str | Path = "preprocess-preview.png", model: str | None = None,
            n: int = 8, size: int | None = None, seed: int = 0, overwrite: bool = False) -> dict:
    """A figure of ``n`` sample images of ``data`` (a folder, spread over its classes, or one
    image file) as decoded and as ``model`` gets them, with pixel histograms before and after.

    ``out`` is never inside the data (nor its folder, for one image file), and an existing file
    there is replaced only when vistrain wrote it or with ``overwrite``
    (:func:`vistrain.fsutil.check_output_file`).

    Returns ``{"preview": figure path, "images", "preprocess", "describe"}``.
    """
    show_log_lines()
    if n < 1:
        raise VistrainError(f"n must be at least 1, got {n}")
    data = Path(data)
    fsutil.check_output_file(out, data_folders=[data if data.is_dir() else data.parent],
                             overwrite=overwrite)
    if data.is_file() and is_image_file(data):
        paths = [data]
    else:
        index = scan_folder(data)
        paths = [index.paths[i] for i in spread_over_classes(index.labels, n, seed)]
    pre = default_preprocess(model)
    if size:
        pre = replace(pre, size=size)
    figure = fsutil.write_owned_png(out, lambda tmp: preview_preprocessing(paths, pre, tmp)).resolve()
    return {"preview": str(figure), "images": [str(p) for p in paths], "preprocess": pre.to_dict(),
            "describe": pre.describe()}


def augment_preview(data: str | Path, /, *, out: str | Path = "augment-preview.png",
                    augment: str = "light", mixup: float = 0.0, cutmix: float = 0.0,
                    policy: str = "none", jitter: str = "matrix", n: int = 6, k: int = 8,
                    size: int = 224, seed: int = 0, overwrite: bool = False) -> dict:
    """A PNG grid: each row one image of ``data`` (its evaluation view first), then ``k`` random
    training augmentations of the ``augment`` preset (mixed labels shown with mixup/cutmix).

    Returns ``{"preview": PNG path, "images", "augment", "size", "k", "seed"}``.
    """
    show_log_lines()
    if n < 1 or k < 1:
        raise VistrainError("n and k must be >= 1")
    fsutil.check_output_file(out, data_folders=[data], overwrite=overwrite)  # before any decoding
    cfg = AugmentConfig(preset=augment, mixup=mixup, cutmix=cutmix, policy=policy, jitter=jitter)
    index = scan_folder(data)
    idx = spread_over_classes(index.labels, n, seed)
    if (mixup > 0 or cutmix > 0) and len(idx) < 2:
        raise VistrainError("mixup/cutmix mix images with each other: use n=2 or more")
    figure = fsutil.write_owned_png(out, lambda tmp: draw_augment_preview(
        [index.paths[i] for i in idx], [index.labels[i] for i in idx], index.classes, cfg, size, tmp,
        n=len(idx), k=k, seed=seed))
    return {"preview": str(Path(figure).resolve()), "images": [str(index.paths[i]) for i in idx],
            "augment": asdict(cfg), "size": size, "k": k, "seed": seed}
