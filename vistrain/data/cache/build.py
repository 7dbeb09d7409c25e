"""Building pixel caches: decode every image once into a memory-mapped ``(N, C, S, S)`` uint8 array.

:func:`build_pixel_caches` looks for each array under its key
(:func:`~vistrain.data.cache.fingerprint.cache_key`) and decodes the images only when one is
missing or damaged (then deleted, with a warning).  A build checks the free space first, reserves
the blocks of its ``.part`` files (a write into a hole of a memory map on a full disk is a SIGBUS,
a reserved block is not), decodes into them (:func:`~vistrain.data.cache.decode.decode_all`),
writes each sidecar and moves each array into place with ``os.replace``; a failed or interrupted
build leaves no ``.part`` file behind.  Every build ends by pruning the cache to its budget
(:func:`~vistrain.data.cache.budget.prune_cache`).

Example:
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> pixels, bad = build_pixel_cache(paths, Preprocess(size=64).pixels, (3, 64, 64))  # doctest: +SKIP
    >>> pixels.shape                                                                   # doctest: +SKIP
    (1500, 3, 64, 64)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from vistrain.data.cache.budget import (SPACE_ERRNOS, budget_root, check_budget,
                                        ensure_free_space, mark_used, npy_bytes, prune_cache,
                                        part_suffix, record_entry, write_error)
from vistrain.data.cache.decode import BLOCK_ROWS, decode_all
from vistrain.data.cache.entry import (CacheDamaged, open_array_entry, remove_entry, sidecar,
                                       unlink_quietly, write_sidecar)
from vistrain.data.cache.fingerprint import cache_key
from vistrain.imageio.read import max_image_pixels
from vistrain.fsutil import temp_beside

log = logging.getLogger(__name__)


def build_pixel_cache(paths, pixel_fn: Callable, shape: tuple[int, int, int], *,
                      spec: dict | None = None, cache_dir: Path | None = None, workers: int = -1,
                      progress: bool = True, desc: str = "decoding images", strict: bool | None = None):
    """Return ``(pixels, bad)``: ``pixels`` an ``(N, *shape)`` uint8 array (memory-mapped when
    ``cache_dir`` is set), ``bad`` a dict ``{path: reason}`` of files that could not be decoded
    (their rows are zero).  ``pixel_fn(path) -> (C, S, S) uint8 tensor`` must be picklable.
    """
    (pixels,), bad = build_pixel_caches(paths, pixel_fn, [shape], specs=[spec], cache_dir=cache_dir,
                                        workers=workers, progress=progress, desc=desc, strict=strict)
    return pixels, bad


def build_pixel_caches(paths, pixel_fn: Callable, shapes, *, specs, cache_dir: Path | None = None,
                       workers: int = -1, progress: bool = True, desc: str = "decoding images",
                       strict: bool | None = None):
    """Several caches from one decode: ``pixel_fn(path)`` returns one tensor per entry of
    ``shapes`` (a tuple when there are several).  Returns ``([arrays], bad)``; each array has its
    own key (``specs[i]`` + ``shapes[i]`` + the file list, see :func:`cache_key`; ``strict``
    fingerprints every byte), so a cache another run already built is reused; the images are
    decoded only when at least one array is missing or damaged (then deleted, with a warning).

    Raises:
        CacheSpaceError: the arrays do not fit on the disk of ``cache_dir`` (checked before
            decoding), or it filled up while decoding; no ``.part`` file is left behind.
    """
    paths = [str(p) for p in paths]
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if cache_dir is None:
        outs = [np.zeros((len(paths), *s), dtype=np.uint8) for s in shapes]
        bad, _ = decode_all(paths, pixel_fn, outs, None, workers, progress, desc)
        return outs, bad
    cache_dir = Path(cache_dir)
    specs = [dict(spec or {}, shape=list(shape), max_image_pixels=max_image_pixels())
             for spec, shape in zip(specs, shapes)]
    npys = [cache_dir / f"pixels-{cache_key(paths, spec, strict=strict)}.npy" for spec in specs]
    found = [_open_pixel_entry(f, (len(paths), *s)) for f, s in zip(npys, shapes)]
    if all(found):
        log.debug("pixel cache hit: %s", [str(f) for f in npys])
        mark_used(*npys, *map(sidecar, npys))
        return [arr for arr, _ in found], found[0][1]["bad"]
    bad, result = _build(paths, pixel_fn, shapes, npys, specs, cache_dir, workers, progress, desc)
    prune_cache(budget_root(cache_dir), keep=[*npys, *map(sidecar, npys)])
    return result, bad


def _build(paths, pixel_fn, shapes, npys, specs, cache_dir: Path, workers, progress, desc):
    """Decode ``paths`` into new entries ``npys``; returns ``(bad, [arrays])``.  A full disk or an
    unwritable folder is one line; no ``.part`` file outlives a failed or interrupted build."""
    needed = sum(npy_bytes((len(paths), *s)) for s in shapes)
    parts: list[Path] = []
    try:
        check_budget(needed, "pixel cache")
        cache_dir.mkdir(parents=True, exist_ok=True)
        ensure_free_space(cache_dir, needed, "pixel cache")
        outs = [_new_part(npy, (len(paths), *s), parts) for npy, s in zip(npys, shapes)]
        bad, sums = decode_all(paths, pixel_fn, outs, parts, workers, progress, desc)
        result = [_install(out, part, npy, dict(spec, n=len(paths)), bad, s)
                  for out, part, npy, spec, s in zip(outs, parts, npys, specs, sums)]
    except OSError as err:
        raise write_error(err, cache_dir, needed, "pixel cache") from None
    finally:
        for part in parts:
            unlink_quietly(part)
    return bad, result


def _open_pixel_entry(npy: Path, shape) -> tuple[np.ndarray, dict] | None:
    """The verified cached array and its sidecar; None when absent, or damaged (then deleted)."""
    if not npy.exists():
        return None
    try:
        arr, meta = open_array_entry(npy, expect_shape=shape)
        if not isinstance(meta.get("bad"), dict):
            raise CacheDamaged("its sidecar has no list of unreadable files")
        return arr, meta
    except CacheDamaged as err:
        log.warning("pixel cache %s is damaged (%s); deleting it and decoding the images again",
                    npy, err)
        remove_entry(npy)
        return None


def _new_part(npy: Path, shape, parts: list) -> np.memmap:
    """An ``(N, C, S, S)`` zero-filled memory map of a new ``.part`` file next to ``npy`` (added to
    ``parts``), with its disk blocks reserved."""
    record_entry(npy)
    tmp = temp_beside(npy, part_suffix())
    parts.append(tmp)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):
        # A write into a hole of a memory map on a full disk kills the writer with SIGBUS; with
        # the blocks allocated now, a full disk is an ENOSPC here instead.
        with open(tmp, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as err:
                if err.errno in SPACE_ERRNOS:
                    raise
    return out


def _install(out: np.memmap, part: Path, npy: Path, spec: dict, bad: dict, sums) -> np.ndarray:
    """Move a finished ``.part`` into place under ``npy`` (unless another run did meanwhile)."""
    out.flush()
    if not (npy.exists() and sidecar(npy).exists()):
        write_sidecar(npy, part, out.shape, out.dtype, BLOCK_ROWS, sums,
                      {"bad": bad, "spec": spec, "n": spec["n"]})
        os.replace(part, npy)  # atomic: an interrupted build never leaves a half cache behind
    return np.load(npy, mmap_mode="r")
