"""Exact per-channel mean and std of a data set, after the resize training uses.

Every image is decoded (:func:`~vistrain.imageio.read.load_image`) and resized exactly as
``Preprocess.pixels`` does (or kept at native size with ``size=0``).  For each channel a
256-bin **integer histogram** of the uint8 pixel values is accumulated; sums and sums of squares
follow exactly from it (``Σ v·h[v]``, ``Σ v²·h[v]`` as Python integers), so the mean and the
(population) std are exact up to the final float64 division, independent of the number of images
and of the order in which worker processes merge their partial histograms.  Memory is constant in
the number of images: one image (processed in row chunks) plus ``256 x C`` counters per worker.

Grayscale and RGB:

* all images grey (``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``): one channel is reported;
* all colour: three channels;
* mixed: grey images are counted as **three equal channels** (which is what the RGB pipeline
  feeds the model: ``L -> RGB`` copies the grey value), and ``mixed`` is set in the result.

Results are cached (``~/.cache/vistrain/stats/``) under a key hashing the file list (path, size,
mtime) and the spatial preprocessing, so a second call on unchanged data is instant.

Example:
    >>> from vistrain.data.stats import compute_stats
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> st = compute_stats(paths, Preprocess(size=224))   # doctest: +SKIP
    >>> st.mean, st.std                                    # doctest: +SKIP
    ([0.52, 0.49, 0.41], [0.27, 0.26, 0.28])
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vistrain.config import ModelConfig
from vistrain.data.cache.budget import default_cache_dir, part_suffix, record_entry
from vistrain.data.cache.decode import num_workers
from vistrain.data.cache.fingerprint import cache_key
from vistrain.imageio.read import load_image
from vistrain.errors import ImageLoadError
from vistrain.fsutil import atomic_write_text
from vistrain.models import create
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.resize import resize_image

log = logging.getLogger(__name__)

GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
ROW_CHUNK = 256          # rows per histogram update: bounds the temporary memory per image
STATS_VERSION = 1        # bump when the computation changes (invalidates cached results)


@dataclass
class DatasetStats:
    """Per-channel statistics in the [0, 1] pixel scale (timm's convention)."""
    mean: list[float]
    std: list[float]
    channels: int
    n_images: int
    n_pixels: int                     # pixels per channel
    n_grey: int = 0                   # images that were grey at the source
    n_colour: int = 0
    mixed: bool = False               # grey and colour images: grey counted as 3 equal channels
    size: int = 0                     # resize side (0: native size)
    bad: dict[str, str] = field(default_factory=dict)  # unreadable files, skipped
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        chans = "grey" if self.channels == 1 else "R, G, B"
        how = f"after resize to {self.size}" if self.size else "at native size"
        lines = [f"{self.n_images} images ({self.n_colour} colour, {self.n_grey} grey), "
                 f"{self.n_pixels:,} pixels per channel, {how}",
                 f"channels: {self.channels} ({chans})"]
        if self.mixed:
            lines.append("mixed data: grey images counted as 3 equal channels (what the RGB "
                         "pipeline feeds the model)")
        lines.append("mean: " + ", ".join(f"{m:.6f}" for m in self.mean))
        lines.append("std:  " + ", ".join(f"{s:.6f}" for s in self.std))
        if self.bad:
            lines.append(f"skipped {len(self.bad)} unreadable file(s): "
                         + "; ".join(f"{p}: {r}" for p, r in list(self.bad.items())[:5]))
        if self.cached:
            lines.append("(from cache)")
        return "\n".join(lines)


@dataclass
class _Partial:
    """Histograms of one worker: ``grey`` (256,) and ``colour`` (256, 3) int64 counts."""
    grey: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    colour: np.ndarray = field(default_factory=lambda: np.zeros((256, 3), np.int64))
    n_grey: int = 0
    n_colour: int = 0
    bad: dict = field(default_factory=dict)

    def merge(self, other: "_Partial") -> None:
        self.grey += other.grey
        self.colour += other.colour
        self.n_grey += other.n_grey
        self.n_colour += other.n_colour
        self.bad.update(other.bad)


def source_is_grey(path) -> bool:
    """True when the file stores a single-channel image (header only, no decode)."""
    try:
        with Image.open(path) as im:
            return im.mode in GREY_MODES
    except Exception:
        return False  # load_image will report the real reason


def image_pixels(path, spec: dict, grey: bool) -> np.ndarray:
    """uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` pixels of ``path`` as training would see them."""
    size = spec["size"]
    img = load_image(path, background=tuple(spec["background"]), min_side=size or None,
                     grayscale=grey)
    if size:
        img = resize_image(img, size, mode=spec["resize_mode"], interpolation=spec["interpolation"],
                           crop_pct=spec["crop_pct"], fill=spec["fill"])
    return np.asarray(img, dtype=np.uint8)


def accumulate(arr: np.ndarray, hist: np.ndarray) -> None:
    """Add the per-channel value histogram of ``arr`` (H, W[, C]) to ``hist`` in row chunks."""
    for r in range(0, arr.shape[0], ROW_CHUNK):
        block = arr[r:r + ROW_CHUNK]
        if block.ndim == 2:
            hist += np.bincount(block.ravel(), minlength=256)
        else:
            for c in range(block.shape[2]):
                hist[:, c] += np.bincount(block[:, :, c].ravel(), minlength=256)


def _partial(args) -> _Partial:
    paths, spec = args
    out = _Partial()
    for p in paths:
        grey = spec["channels"] == 1 or source_is_grey(p)
        try:
            arr = image_pixels(p, spec, grey)
        except ImageLoadError as err:
            out.bad[str(p)] = err.reason
            continue
        except Exception as err:  # a decoder bug costs one file, not the whole computation
            out.bad[str(p)] = f"{type(err).__name__}: {err}"
            continue
        if arr.ndim == 2:
            accumulate(arr, out.grey)
            out.n_grey += 1
        else:
            accumulate(arr, out.colour)
            out.n_colour += 1
    return out


def _moments(hist: np.ndarray) -> tuple[float, float, int]:
    """Exact mean and population std (0..1 scale) of one channel's 256-bin histogram."""
    counts = [int(c) for c in hist]
    n = sum(counts)
    s = sum(v * c for v, c in enumerate(counts))
    ss = sum(v * v * c for v, c in enumerate(counts))
    if n == 0:
        return float("nan"), float("nan"), 0
    # n*ss - s*s is an exact integer: no cancellation error in the variance
    return s / n / 255.0, math.sqrt(n * ss - s * s) / n / 255.0, n


def spec_of(preprocess=None, *, size: int | None = None) -> dict:
    """The spatial preprocessing that changes pixel statistics, as a plain dict."""
    pre = preprocess or Preprocess()
    return {"size": pre.size if size is None else int(size), "resize_mode": pre.resize_mode,
            "interpolation": pre.interpolation, "crop_pct": pre.crop_pct, "fill": pre.fill,
            "background": list(pre.background), "channels": pre.channels}


def compute_stats(paths, preprocess=None, *, size: int | None = None, workers: int = -1,
                  cache_dir: str | Path | None = "auto", chunks_per_worker: int = 4) -> DatasetStats:
    """Exact per-channel mean/std of ``paths`` after ``preprocess``'s resize (module docstring).

    Args:
        paths: image files.
        preprocess: a :class:`~vistrain.transforms.preprocess.Preprocess` giving size, resize mode,
            interpolation, crop_pct, fill, background and channels (default ``Preprocess()``).
        size: override ``preprocess.size``; ``0`` keeps every image at its native size.
        workers: worker processes (-1: one per CPU; 0 or 1: in this process).
        cache_dir: where results are cached; ``"auto"`` for ``~/.cache/vistrain/stats``,
            ``None`` to disable caching.
    """
    paths = [str(p) for p in paths]
    spec = spec_of(preprocess, size=size)
    key = cache_key(paths, dict(spec, what="stats", version=STATS_VERSION))
    if cache_dir == "auto":
        cache_dir = default_cache_dir() / "stats"
    cache_file = Path(cache_dir) / f"stats-{key}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            res = DatasetStats(**json.loads(cache_file.read_text()))
            res.cached = True
            log.debug("stats cache hit: %s", cache_file)
            return res
        except (ValueError, TypeError):
            pass  # unreadable cache entry: recompute and overwrite
    total = _run(paths, spec, num_workers(workers), chunks_per_worker)
    res = _finish(total, spec)
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            record_entry(cache_file)
            atomic_write_text(cache_file, json.dumps(res.to_dict()), suffix=part_suffix())
        except OSError as err:  # a full or read-only disk costs the cache entry, not the result
            log.warning("could not cache the statistics in %s (%s); they will be computed again "
                        "next time", cache_file.parent, err.strerror or err)
    return res


def _run(paths: list[str], spec: dict, workers: int, chunks_per_worker: int) -> _Partial:
    total = _Partial()
    if workers <= 1 or len(paths) < 2 * max(workers, 1):
        total.merge(_partial((paths, spec)))
        return total
    n_chunks = min(len(paths), workers * chunks_per_worker)
    bounds = np.linspace(0, len(paths), n_chunks + 1).astype(int)
    jobs = [(paths[a:b], spec) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        for part in pool.imap_unordered(_partial, jobs):
            total.merge(part)   # each worker returns only its histograms: O(1) memory per chunk
    return total


def _finish(total: _Partial, spec: dict) -> DatasetStats:
    n_images = total.n_grey + total.n_colour
    if total.n_colour == 0:           # all grey (or nothing readable)
        hists, channels = [total.grey], 1
    else:                             # colour, grey images (if any) as 3 equal channels
        hists = [total.colour[:, c] + total.grey for c in range(3)]
        channels = 3
    moments = [_moments(h) for h in hists]
    return DatasetStats(mean=[m for m, _, _ in moments], std=[s for _, s, _ in moments],
                        channels=channels, n_images=n_images, n_pixels=moments[0][2],
                        n_grey=total.n_grey, n_colour=total.n_colour,
                        mixed=total.n_grey > 0 and total.n_colour > 0, size=spec["size"],
                        bad=dict(sorted(total.bad.items())))


def default_preprocess(model: str | None = None):
    """Spatial preprocessing training would use for ``model`` (default: the config's default)."""
    name = model or ModelConfig().name
    try:
        import timm  # heavy (hundreds of model definitions): only when a default is asked for
        pc = timm.models.get_pretrained_cfg(name)
    except Exception:
        pc = None
    if pc is not None:
        return Preprocess(size=int(pc.input_size[-1]), interpolation=pc.interpolation or "bicubic",
                          crop_pct=float(pc.crop_pct or 0.875),
                          mean=tuple(pc.mean), std=tuple(pc.std), normalize_mode="model")
    _, pcfg = create(name, 2, pretrained=False)  # vistrain/ scratch models: their own default config
    return Preprocess(size=int(pcfg.input_size[-1]), interpolation=pcfg.interpolation,
                      crop_pct=pcfg.crop_pct, mean=tuple(pcfg.mean), std=tuple(pcfg.std),
                      normalize_mode="model")
