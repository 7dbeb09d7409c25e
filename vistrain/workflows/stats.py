"""``stats``: exact per-channel mean/std of an image folder after the resize training uses.

Example:
    >>> import vistrain
    >>> out = vistrain.stats("examples/fashion-mnist-small")             # doctest: +SKIP
    >>> [round(m, 3) for m in out["mean"]], out["resize"]["size"]         # doctest: +SKIP
    ([0.286, 0.286, 0.286], 224)
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vistrain.data.scan import scan_folder
from vistrain.data.stats import compute_stats, default_preprocess
from vistrain.errors import VistrainError
from vistrain.workflows.logs import show_log_lines


def stats(data: str | Path, /, *, model: str | None = None, size: int | None = None,
          grayscale: bool = False, workers: int = -1, cache: bool = True) -> dict:
    """Per-channel mean and std (0..1 scale) over every pixel of every image of ``data``.

    Images are resized as training resizes them for ``model`` (its input size, crop and
    interpolation; ``size`` overrides the side, 0 = native size). Exact: integer histograms in
    ``workers`` processes (-1: one per CPU), cached by the file list unless ``cache=False``.
    Returns the statistics (``mean``, ``std`` ... as ``DatasetStats.to_dict``) plus ``data``,
    ``resize`` (``None`` at native size) and ``describe`` (one line for people).
    """
    show_log_lines()
    if size is not None and size < 0:
        raise VistrainError(f"size must be >= 0 (0: native size), got {size}")
    index = scan_folder(data)
    pre = default_preprocess(model)
    if grayscale:
        pre = replace(pre, channels=1)
    st = compute_stats(index.paths, pre, size=size, workers=workers,
                       cache_dir="auto" if cache else None)
    out = st.to_dict()
    out.update(data=str(index.root), describe=st.describe(),
               resize=None if not st.size else {"size": st.size, "mode": pre.resize_mode,
                                                "interpolation": pre.interpolation,
                                                "crop_pct": pre.crop_pct})
    return out
