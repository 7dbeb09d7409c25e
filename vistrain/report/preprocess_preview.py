"""A picture of what preprocessing does to sample images, for users and for report.html.

Top rows: each sample image as decoded (EXIF-rotated, converted to RGB) and after resize + crop
+ normalize, de-normalized for display (so it shows exactly the pixels the model gets, in the
model's input size).  Bottom row: per-channel histograms of the sample pixels before (0..255)
and after normalization (the values the model sees; ~N(0, 1) when the statistics fit the data).

Example:
    >>> from vistrain.report.preprocess_preview import preview_preprocessing
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> preview_preprocessing(paths[:8], Preprocess(size=224), "preview.png")  # doctest: +SKIP
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from vistrain.errors import ImageLoadError
from vistrain.evaluation.png import new_figure, save_figure
from vistrain.transforms.normalize import denormalize_batch
from vistrain.transforms.preprocess import pil_to_uint8

CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:blue")


def preview_preprocessing(paths, preprocess, out_path, *, title: str | None = None, dpi: int = 90) -> Path:
    """Write the before/after figure of ``paths`` under ``preprocess`` to ``out_path`` (PNG/SVG/PDF).

    Unreadable files are left out (their names go into the figure title); returns ``out_path``.
    ``dpi``: the report uses a lower one (the page shows it at its width; fewer pixels to draw).
    """
    originals, after, normed, names, skipped = [], [], [], [], []
    for p in paths:
        try:
            img = preprocess.load(p)
        except ImageLoadError:
            skipped.append(Path(p).name)
            continue
        x = pil_to_uint8(preprocess.resize(img))
        z = preprocess.normalize(x)
        originals.append(np.asarray(img))
        normed.append(z.numpy())
        shown = denormalize_batch(z, preprocess.scale, preprocess.mean, preprocess.std)
        after.append(shown.permute(1, 2, 0).numpy().squeeze())
        names.append(Path(p).name)
    if not originals:
        raise ImageLoadError(paths[0] if paths else "?", "none of the sample images could be decoded")
    n = len(originals)
    fig = new_figure((max(8, 2.2 * n), 7.5))
    grid = fig.add_gridspec(3, max(n, 2), height_ratios=[1, 1, 1.1])
    for i in range(n):
        for row, (imgs, label) in enumerate(((originals, "decoded"), (after, "model input"))):
            ax = fig.add_subplot(grid[row, i])
            im = imgs[i]
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=255)
            h, w = im.shape[:2]
            ax.set_title(f"{names[i][:18]}\n{w}x{h}" if row == 0 else f"{label} {w}x{h}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    half = max(n, 2) // 2
    ax_before = fig.add_subplot(grid[2, :half])
    ax_after = fig.add_subplot(grid[2, half:])
    channels = normed[0].shape[0]
    labels = ("grey",) if channels == 1 else ("R", "G", "B")
    for c in range(channels):
        before = np.concatenate([(o if o.ndim == 2 else o[:, :, c]).ravel() for o in originals])
        colour = "black" if channels == 1 else CHANNEL_COLOURS[c]
        ax_before.hist(before, bins=64, range=(0, 255), histtype="step", color=colour, label=labels[c],
                       density=True)
        vals = np.concatenate([z[c].ravel() for z in normed])
        ax_after.hist(vals, bins=64, histtype="step", color=colour, density=True,
                      label=f"{labels[c]}: mean {vals.mean():.2f}, std {vals.std():.2f}")
    ax_before.set_title("pixels before (decoded, 0..255)", fontsize=9)
    ax_after.set_title(f"model input after normalize={preprocess.normalize_mode}", fontsize=9)
    for ax in (ax_before, ax_after):
        ax.legend(fontsize=7)
        ax.set_yticks([])
    head = "\n".join(textwrap.wrap(title or preprocess.describe(), 100))
    if skipped:
        head += f"\nunreadable, left out: {', '.join(skipped)}"
    fig.suptitle(head, fontsize=9)
    return save_figure(fig, out_path, dpi=dpi)
