"""What the augmentation does to your images: an N x K grid of random training views.

Row ``i`` is one image: its evaluation view (``original``), then ``K`` random augmentations drawn
exactly as training draws them (the batch ops of the preset, at the model input size, from the
larger train-time square of :mod:`vistrain.data.cache` when the resize mode is ``crop``).  With
mixup/cutmix the images of the preview batch are mixed with each other and each cell is labelled
with its soft target, e.g. ``0.7 Coat + 0.3 Bag``.

Example:
    >>> from vistrain.config import AugmentConfig
    >>> from vistrain.report.augment_preview import augment_preview
    >>> augment_preview(paths[:6], labels[:6], classes, AugmentConfig(preset="medium", mixup=0.2),
    ...                 224, "augment-preview.png")                          # doctest: +SKIP
    PosixPath('augment-preview.png')
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vistrain.data.cache.pixels import EvalAndTrainPixels
from vistrain.evaluation.png import new_figure, save_figure
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.presets import build_augmentation


def mixed_label(target: torch.Tensor, classes, min_weight: float = 0.005) -> str:
    """Soft-target row -> ``"0.7 Coat + 0.3 Bag"`` (weights >= ``min_weight``, largest first);
    a one-hot row -> the class name."""
    target = torch.as_tensor(target, dtype=torch.float32)
    order = torch.argsort(target, descending=True).tolist()
    parts = [(float(target[i]), classes[i]) for i in order if float(target[i]) >= min_weight]
    if len(parts) == 1 and parts[0][0] > 0.999:
        return str(parts[0][1])
    return " + ".join(f"{w:.2g} {name}" for w, name in parts)


def _load_pixels(paths, size: int, channels: int = 3):
    """Eval view and train-time view (the larger square when it exists) of each file."""
    fn = EvalAndTrainPixels.for_paths(Preprocess(size=size, channels=channels), paths)
    pairs = [fn(p) for p in paths]
    return (torch.from_numpy(np.stack([e for e, _ in pairs])),
            torch.from_numpy(np.stack([t for _, t in pairs])))


def augment_grid(paths_or_pixels, labels, classes, cfg_augment, size: int, *, k: int = 8,
                 seed: int = 0):
    """``(grid, texts)``: ``grid`` uint8 ``(N, 1 + K, C, size, size)`` (column 0: the eval view),
    ``texts`` N lists of 1 + K labels.  ``paths_or_pixels``: image files, or a uint8
    ``(N, C, H, W)`` array/tensor (used as the training view; its centre ``size`` crop as the eval
    view)."""
    if isinstance(paths_or_pixels, (np.ndarray, torch.Tensor)):
        train = torch.as_tensor(np.asarray(paths_or_pixels), dtype=torch.uint8)
        h, w = train.shape[-2:]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        original = train[..., top:top + size, left:left + size]
        if original.shape[-2:] != (size, size):
            original = torch.nn.functional.interpolate(train.float(), size=(size, size),
                                                       mode="bilinear").round().clamp(0, 255).byte()
    else:
        original, train = _load_pixels(list(paths_or_pixels), size)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    augment, mix = build_augmentation(cfg_augment, size, len(classes))
    g = torch.Generator().manual_seed(seed)
    # a preset without a random crop keeps the input size: it augments the eval view
    source = train if tuple(augment.output_shape(train.shape)[-2:]) == (size, size) else original
    columns, texts = [original], [[str(classes[int(c)]) for c in y]]
    for _ in range(k):
        x = augment(source, generator=g)
        col_text = [str(classes[int(c)]) for c in y]
        if mix is not None and len(y) > 1:
            x, target = mix(x, y, generator=g)
            col_text = [mixed_label(t, classes) for t in target]
        columns.append(x)
        texts.append(col_text)
    grid = torch.stack(columns, dim=1)
    return grid, [list(row) for row in zip(*texts)]


def augment_preview(paths_or_pixels, labels, classes, cfg_augment, size: int, out_path, n: int = 6,
                    k: int = 8, seed: int = 0) -> Path:
    """Write the preview grid (first ``n`` images x ``k`` augmentations) to ``out_path`` (PNG);
    returns the path.  ``cfg_augment``: an ``AugmentConfig`` (the run's ``augment`` section)."""
    grid, texts = augment_grid(paths_or_pixels[:n], list(labels)[:n], classes, cfg_augment, size,
                               k=k, seed=seed)
    rows, cols = grid.shape[:2]
    fig = new_figure((1.7 * cols, 1.9 * rows), layout=None)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i][j]
            img = grid[i, j].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=255)
            title = ("original: " if j == 0 else "") + texts[i][j]
            ax.set_title(title, fontsize=6.5)
            ax.axis("off")
    mixing = [s for s, a in (("mixup", cfg_augment.mixup), ("cutmix", cfg_augment.cutmix)) if a > 0]
    fig.suptitle(f"augmentation preview: preset {cfg_augment.preset}"
                 + (f" + {' + '.join(mixing)}" if mixing else "") + f", {size}px, seed {seed}",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_path, dpi=110)
