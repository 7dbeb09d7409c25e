"""Decode every image once into a memory-mapped array of resized uint8 pixels.

Decoding a JPEG costs far more than augmenting its pixels, and a CPU-bound training run decodes
every image every epoch in the usual torchvision recipe.  Here each image is decoded, EXIF-rotated,
converted and resized **once** (in parallel worker processes, with a progress bar) into
``(N, C, S, S)`` uint8 stored as a ``.npy`` file that later epochs and later runs memory-map.

The cache key hashes the file list (path, size, mtime) and the spatial preprocessing, so adding,
changing or removing a file, or changing the size, builds a new cache.  Unreadable files are found
during the build, in the main process, and reported as ``(path, reason)``: never a crash deep inside
a DataLoader worker.

Example:
    >>> from vistrain.data.cache import build_pixel_cache
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> pixels, bad = build_pixel_cache(paths, Preprocess(size=64).pixels, (3, 64, 64))  # doctest: +SKIP
    >>> pixels.shape                                                                   # doctest: +SKIP
    (1500, 3, 64, 64)
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from vistrain.errors import ImageLoadError

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("VISTRAIN_CACHE", Path.home() / ".cache" / "vistrain"))


def cache_key(paths, spec: dict) -> str:
    """Hash of the file list (path, size, mtime) and the preprocessing spec."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:24]


_WORKER_FN: Callable | None = None


def _init_worker(fn):
    global _WORKER_FN
    _WORKER_FN = fn
    import torch
    torch.set_num_threads(1)  # one decode per process; avoid oversubscription


def _decode(item):
    i, path = item
    try:
        return i, _WORKER_FN(path).numpy(), None
    except ImageLoadError as err:
        return i, None, err.reason
    except Exception as err:  # any decoder bug becomes a reported file, not a dead worker
        return i, None, f"{type(err).__name__}: {err}"


def num_workers(requested: int = -1) -> int:
    return max(1, os.cpu_count() or 1) if requested is None or requested < 0 else max(0, requested)


def build_pixel_cache(paths, pixel_fn: Callable, shape: tuple[int, int, int], *,
                      spec: dict | None = None, cache_dir: Path | None = None, workers: int = -1,
                      progress: bool = True, desc: str = "decoding images"):
    """Return ``(pixels, bad)``: ``pixels`` an ``(N, *shape)`` uint8 array (memory-mapped when
    ``cache_dir`` is set), ``bad`` a dict ``{path: reason}`` of files that could not be decoded
    (their rows are zero).  ``pixel_fn(path) -> (C, S, S) uint8 tensor`` must be picklable.
    """
    paths = [str(p) for p in paths]
    spec = dict(spec or {}, shape=list(shape))
    key = cache_key(paths, spec)
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        final, meta = cache_dir / f"pixels-{key}.npy", cache_dir / f"pixels-{key}.json"
        if final.exists() and meta.exists():
            bad = json.loads(meta.read_text())["bad"]
            log.debug("pixel cache hit: %s", final)
            return np.load(final, mmap_mode="r"), bad
        cache_dir.mkdir(parents=True, exist_ok=True)
    out, bad = _decode_all(paths, pixel_fn, shape, cache_dir, workers, progress, desc)
    if cache_dir is not None:
        tmp = Path(out.filename)
        out.flush()
        del out
        os.replace(tmp, final)  # atomic: an interrupted build never leaves a half cache behind
        meta.write_text(json.dumps({"bad": bad, "spec": spec, "n": len(paths)}))
        return np.load(final, mmap_mode="r"), bad
    return out, bad


def _decode_all(paths, pixel_fn, shape, cache_dir, workers, progress, desc):
    from tqdm.auto import tqdm
    n = len(paths)
    if cache_dir is not None:
        fd, tmp = tempfile.mkstemp(prefix="pixels-", suffix=".npy.part", dir=cache_dir)
        os.close(fd)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
    else:
        out = np.zeros((n, *shape), dtype=np.uint8)
    bad: dict[str, str] = {}
    workers = num_workers(workers)
    items = list(enumerate(paths))
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress or n < 50, leave=False)
    if workers <= 1 or n < 64:
        _init_worker(pixel_fn)
        results = map(_decode, items)
        _collect(results, out, bad, paths, bar)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(pixel_fn,)) as pool:
            _collect(pool.imap_unordered(_decode, items, chunksize=16), out, bad, paths, bar)
    bar.close()
    return out, bad


def _collect(results, out, bad, paths, bar):
    for i, arr, reason in results:
        if reason is not None:
            bad[paths[i]] = reason
        elif arr.shape != out.shape[1:]:
            bad[paths[i]] = f"decoded to shape {arr.shape}, expected {out.shape[1:]}"
        else:
            out[i] = arr
        bar.update(1)
