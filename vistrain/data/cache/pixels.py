"""The pixel function of a training cache: the eval crop and a larger train square from one decode.

Evaluation resizes the shorter side to ``S = floor(size / crop_pct)`` and keeps the centre
``size x size`` crop.  If training cached only that crop, random-resized-crop could never see the
border that the centre crop throws away.  :class:`EvalAndTrainPixels` therefore decodes each image
**once**, resizes its shorter side to ``S`` once, and cuts two crops from that one resized image:
the exact eval crop (``size x size``, identical to :meth:`Preprocess.pixels`) and the centre
``S x S`` square for training, on which the batch random-resized-crop draws its boxes and
resamples to ``size``.  Both are written by one
:func:`~vistrain.data.cache.build.build_pixel_caches` pass, each under its own key.  Only the
``crop`` resize mode has a border to recover; ``stretch``/``letterbox`` train on the eval pixels.

Example:
    >>> from vistrain.data.cache.build import build_pixel_caches
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> fn = EvalAndTrainPixels.for_paths(Preprocess(size=64), paths)            # doctest: +SKIP
    >>> shapes = [(3, 64, 64), (3, fn.train_size, fn.train_size)]                # doctest: +SKIP
    >>> (evals, trains), bad = build_pixel_caches(paths, fn, shapes, specs=[{}, {}])  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image

from vistrain.data.cache.budget import part_suffix, record_entry
from vistrain.data.cache.fingerprint import cache_key
from vistrain.fsutil import atomic_write_text
from vistrain.transforms.preprocess import pil_to_uint8
from vistrain.transforms.resize import (center_crop, crop_scale_size, pil_interpolation,
                                        resize_shorter_side)

log = logging.getLogger(__name__)


class EvalAndTrainPixels:
    """Picklable pixel function: ``path -> (eval (C, size, size), train (C, T, T))`` uint8 from
    one decode; ``S = floor(size / crop_pct)`` and ``T = train_size`` (default ``S``).

    The eval crop is bit-identical to ``pre.pixels(path)`` (same decode, same resize, same crop
    offsets).  With ``T == S`` the train square is cut from the same resized image; a smaller
    ``T`` (see :func:`native_train_size`) resizes the decoded image a second time, to its shorter
    side ``T``, so that images smaller than ``S`` are cached at their own resolution and enlarged
    only once, by the batch crop.  Requires ``pre.resize_mode == "crop"``.
    """

    def __init__(self, pre, train_size: int | None = None):
        if pre.resize_mode != "crop":
            raise ValueError("EvalAndTrainPixels needs resize_mode 'crop'")
        self.pre = pre
        self.scale_size = crop_scale_size(pre.size, pre.crop_pct)
        self.train_size = int(train_size or self.scale_size)

    @classmethod
    def for_paths(cls, pre, paths, cache_dir: Path | None = None) -> "EvalAndTrainPixels":
        """The pixel function for these files: train squares at :func:`native_train_size`."""
        fn = cls(pre)
        fn.train_size = native_train_size(paths, fn.scale_size, cache_dir)
        return fn

    def __call__(self, path):
        resample = pil_interpolation(self.pre.interpolation)
        img = self.pre.load(path)
        scaled = resize_shorter_side(img, self.scale_size, resample)
        own = scaled if self.train_size == self.scale_size else \
            resize_shorter_side(img, self.train_size, resample)
        return (pil_to_uint8(center_crop(scaled, self.pre.size)).numpy(),
                pil_to_uint8(center_crop(own, self.train_size)).numpy())


def native_train_size(paths, scale_size: int, cache_dir: Path | None = None) -> int:
    """Side of the train-time cache: ``min(scale_size, largest shorter side in the data)``.

    When every image is smaller than the eval resize (CIFAR's 32 px for a 224 px model), caching
    the train view at ``scale_size`` would store enlarged pixels -- 64x the bytes for 32 -> 256
    -- and make every batch augment them; the batch crop enlarges them anyway.  Reads only the
    image headers; the answer is remembered in ``cache_dir`` under the file-list key.  Unreadable
    files are ignored here (the decode reports them).
    """
    key = cache_key(paths, {"largest_shorter_side": 1})
    memo = Path(cache_dir) / f"sides-{key}.json" if cache_dir is not None else None
    largest = _read_memo(memo)
    if largest is None:
        largest = 0
        for p in paths:
            try:
                with Image.open(p) as img:
                    largest = max(largest, min(img.size))
            except Exception:  # noqa: BLE001 - reported by the decode, with the reason
                continue
            if largest >= scale_size:
                break  # one image as large as the cap decides it
        if memo is not None:
            memo.parent.mkdir(parents=True, exist_ok=True)
            try:
                record_entry(memo)
                atomic_write_text(memo, json.dumps({"largest_shorter_side": largest}), suffix=part_suffix())
            except OSError as err:  # only a memo: a full disk is reported by the pixel cache
                log.debug("could not write %s: %s", memo, err)
    return int(min(scale_size, largest)) if largest > 0 else int(scale_size)


def _read_memo(memo: Path | None) -> int | None:
    """The remembered largest shorter side; None when absent or damaged (then recomputed)."""
    if memo is None or not memo.exists():
        return None
    try:
        largest = json.loads(memo.read_text())["largest_shorter_side"]
        if isinstance(largest, int) and largest >= 0:
            return largest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.warning("cache memo %s is damaged; measuring the images again", memo)
    return None
