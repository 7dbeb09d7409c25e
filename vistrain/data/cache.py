"""Decode every image once into a memory-mapped array of resized uint8 pixels.

Decoding a JPEG costs far more than augmenting its pixels, and a CPU-bound training run decodes
every image every epoch in the usual torchvision recipe.  Here each image is decoded, EXIF-rotated,
converted and resized **once** (in parallel worker processes, with a progress bar) into
``(N, C, S, S)`` uint8 stored as a ``.npy`` file that later epochs and later runs memory-map.

The cache key hashes the file list (path, size, mtime) and the spatial preprocessing, so adding,
changing or removing a file, or changing the size, builds a new cache.  Unreadable files are found
during the build, in the main process, and reported as ``(path, reason)``: never a crash deep inside
a DataLoader worker.

**Train-time cache at a larger size.**  Evaluation resizes the shorter side to
``S = floor(size / crop_pct)`` and keeps the centre ``size x size`` crop.  If training cached only
that crop, random-resized-crop could never see the border that the centre crop throws away.
:class:`EvalAndTrainPixels` therefore decodes each image **once**, resizes its shorter side to
``S`` once, and cuts two crops from that one resized image: the exact eval crop
(``size x size``, identical to :meth:`Preprocess.pixels`) and the centre ``S x S`` square for
training, on which the batch random-resized-crop draws its boxes and resamples to ``size``.  Both
are written by one :func:`build_pixel_caches` pass, each under its own key.  Only the ``crop``
resize mode has a border to recover; ``stretch``/``letterbox`` train on the eval pixels.

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
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from vistrain.errors import ImageLoadError
from vistrain.progress import progress_bar

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$VISTRAIN_CACHE``, else ``~/.cache/vistrain``: pixel, feature and statistics caches."""
    return Path(os.environ.get("VISTRAIN_CACHE", Path.home() / ".cache" / "vistrain"))


# -- size budget ---------------------------------------------------------------------------------
# A pixel cache of a 224 px data set is ~150 kB an image, and every new file list, size or model
# makes a new one: without a budget ~/.cache/vistrain grows until the disk is full.
DEFAULT_CACHE_MAX_GB = 20.0
PART_MAX_AGE_S = 6 * 3600  # a ".part" file untouched this long belongs to a build that was killed


def cache_limit_bytes() -> int | None:
    """``$VISTRAIN_CACHE_MAX_GB`` (default 20) in bytes; ``None`` when set to 0 (no limit)."""
    raw = os.environ.get("VISTRAIN_CACHE_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_CACHE_MAX_GB
    except ValueError:
        log.warning("VISTRAIN_CACHE_MAX_GB=%r is not a number; using %g", raw, DEFAULT_CACHE_MAX_GB)
        gb = DEFAULT_CACHE_MAX_GB
    return None if gb <= 0 else int(gb * 1e9)


class CacheEntry(NamedTuple):
    """The files of one cache entry (``pixels-<key>.npy`` + ``.json``, ``features-<key>.npy``, ...)."""
    name: str          # "pixels-<key>", "features-<key>", "stats-<key>", "sides-<key>"
    files: tuple[Path, ...]
    size: int          # bytes, all files
    last_used: float   # newest mtime of its files: a cache hit touches them (see mark_used)
    partial: bool      # an unfinished build (a ".part" file)


def cache_entries(root: Path) -> list[CacheEntry]:
    """Every entry under ``root`` (recursively), least recently used first."""
    groups: dict[tuple[Path, str, bool], list[tuple[Path, os.stat_result]]] = {}
    for path in Path(root).rglob("*"):
        try:
            st = path.stat()
        except OSError:  # removed meanwhile by another process
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        partial = ".part" in path.name
        name = path.name if partial else path.name.split(".", 1)[0]
        groups.setdefault((path.parent, name, partial), []).append((path, st))
    entries = [CacheEntry(name, tuple(p for p, _ in items), sum(st.st_size for _, st in items),
                          max(st.st_mtime for _, st in items), partial)
               for (_, name, partial), items in groups.items()]
    return sorted(entries, key=lambda e: e.last_used)


def mark_used(*paths) -> None:
    """Touch ``paths`` so that the budget evicts them last (reading a memory map does not)."""
    for p in paths:
        try:
            os.utime(p)
        except OSError:
            pass


def prune_cache(root: Path, limit_bytes: int | None = -1, keep=()) -> list[CacheEntry]:
    """Delete least-recently-used entries under ``root`` until it fits ``limit_bytes``.

    ``limit_bytes=-1`` takes :func:`cache_limit_bytes`; ``None`` only removes stale ``.part``
    files of killed builds.  Entries holding a path in ``keep`` (what the caller is using) are
    never removed; on Linux a memory map stays valid after its file is deleted, so another
    process using an evicted entry is not disturbed (it rebuilds next time).  Returns what went.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "pixels-a.npy").write_bytes(bytes(8192))
        >>> [e.name for e in prune_cache(root, limit_bytes=0)]
        ['pixels-a']
    """
    limit = cache_limit_bytes() if limit_bytes == -1 else limit_bytes
    keep = {Path(k).resolve() for k in keep}
    entries = cache_entries(root)
    total = sum(e.size for e in entries)
    removed = []
    now = time.time()
    for e in entries:  # oldest first
        if any(f.resolve() in keep for f in e.files):
            continue
        stale_part = e.partial and now - e.last_used > PART_MAX_AGE_S
        if not stale_part and (e.partial or limit is None or total <= limit):
            continue
        for f in e.files:
            try:
                f.unlink()
            except OSError:  # in use elsewhere (Windows) or already gone
                pass
        total -= e.size
        removed.append(e)
    if removed:
        log.info("cache %s: removed %d least recently used entries (%.1f GB) to stay within %s",
                 root, len(removed), sum(e.size for e in removed) / 1e9,
                 "no limit" if limit is None else f"{limit / 1e9:g} GB (VISTRAIN_CACHE_MAX_GB)")
    return removed


def budget_root(cache_dir: Path) -> Path:
    """The folder whose total the budget applies to: the whole default cache when ``cache_dir``
    lies inside it (pixels, features and statistics share one budget), else ``cache_dir``."""
    root = default_cache_dir()
    try:
        Path(cache_dir).resolve().relative_to(root.resolve())
        return root
    except ValueError:
        return Path(cache_dir)


# Bumped whenever decoding itself changes what pixels a file gives (2: DC-scan decode of large
# progressive JPEGs), so that caches built by an older vistrain are not reused.
DECODE_VERSION = 2


def cache_key(paths, spec: dict) -> str:
    """Hash of the file list (path, size, mtime), the preprocessing spec and DECODE_VERSION."""
    h = hashlib.sha256(json.dumps({"decode_version": DECODE_VERSION, **spec}, sort_keys=True,
                                  default=str).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:24]


_WORKER_FN: Callable | None = None
_WORKER_OUTS: list | None = None  # cache files a worker writes its rows into (None: send them back)


def _init_worker(fn, out_files=None):
    global _WORKER_FN, _WORKER_OUTS
    _WORKER_FN = fn
    _WORKER_OUTS = None if out_files is None else [np.load(f, mmap_mode="r+") for f in out_files]
    import torch
    torch.set_num_threads(1)  # one decode per process; avoid oversubscription


def _decode(item):
    """``(i, arrays, None)``; ``(i, None, None)`` when the worker wrote the rows into the cache
    files itself (no pickling of pixels through the pipe); ``(i, None, reason)`` on failure."""
    i, path = item
    try:
        out = _WORKER_FN(path)
        arrs = tuple(np.asarray(o) for o in out) if isinstance(out, (tuple, list)) else (np.asarray(out),)
    except ImageLoadError as err:
        return i, None, err.reason
    except Exception as err:  # any decoder bug becomes a reported file, not a dead worker
        return i, None, f"{type(err).__name__}: {err}"
    if _WORKER_OUTS is None:
        return i, arrs, None
    reason = _shape_problem(arrs, _WORKER_OUTS)
    if reason is None:
        for dst, arr in zip(_WORKER_OUTS, arrs):
            dst[i] = arr
    return i, None, reason


def _shape_problem(arrs, outs) -> str | None:
    if len(arrs) != len(outs):
        return f"pixel function returned {len(arrs)} arrays, expected {len(outs)}"
    wrong = [f"{a.shape} (expected {o.shape[1:]})" for a, o in zip(arrs, outs) if a.shape != o.shape[1:]]
    return f"decoded to shape {', '.join(wrong)}" if wrong else None


def num_workers(requested: int = -1) -> int:
    return max(1, os.cpu_count() or 1) if requested is None or requested < 0 else max(0, requested)


def build_pixel_cache(paths, pixel_fn: Callable, shape: tuple[int, int, int], *,
                      spec: dict | None = None, cache_dir: Path | None = None, workers: int = -1,
                      progress: bool = True, desc: str = "decoding images"):
    """Return ``(pixels, bad)``: ``pixels`` an ``(N, *shape)`` uint8 array (memory-mapped when
    ``cache_dir`` is set), ``bad`` a dict ``{path: reason}`` of files that could not be decoded
    (their rows are zero).  ``pixel_fn(path) -> (C, S, S) uint8 tensor`` must be picklable.
    """
    (pixels,), bad = build_pixel_caches(paths, pixel_fn, [shape], specs=[spec], cache_dir=cache_dir,
                                        workers=workers, progress=progress, desc=desc)
    return pixels, bad


def build_pixel_caches(paths, pixel_fn: Callable, shapes, *, specs, cache_dir: Path | None = None,
                       workers: int = -1, progress: bool = True, desc: str = "decoding images"):
    """Several caches from one decode: ``pixel_fn(path)`` returns one tensor per entry of
    ``shapes`` (a tuple when there are several).  Returns ``([arrays], bad)``; each array has its
    own key (``specs[i]`` + ``shapes[i]`` + the file list), so a cache another run already built
    is reused; the images are decoded only when at least one array is missing.
    """
    paths = [str(p) for p in paths]
    shapes = [tuple(s) for s in shapes]
    specs = [dict(spec or {}, shape=list(shape)) for spec, shape in zip(specs, shapes)]
    keys = [cache_key(paths, spec) for spec in specs]
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        files = [(cache_dir / f"pixels-{k}.npy", cache_dir / f"pixels-{k}.json") for k in keys]
        if all(f.exists() and m.exists() for f, m in files):
            log.debug("pixel cache hit: %s", [str(f) for f, _ in files])
            mark_used(*(f for pair in files for f in pair))
            bad = json.loads(files[0][1].read_text())["bad"]
            return [np.load(f, mmap_mode="r") for f, _ in files], bad
        cache_dir.mkdir(parents=True, exist_ok=True)
    outs, bad = _decode_all(paths, pixel_fn, shapes, cache_dir, workers, progress, desc)
    if cache_dir is None:
        return outs, bad
    result = []
    for out, (final, meta), spec in zip(outs, files, specs):
        tmp = Path(out.filename)
        out.flush()
        del out
        if final.exists() and meta.exists():  # built by an earlier run: keep it
            tmp.unlink()
        else:
            os.replace(tmp, final)  # atomic: an interrupted build never leaves a half cache behind
            meta.write_text(json.dumps({"bad": bad, "spec": spec, "n": len(paths)}))
        result.append(np.load(final, mmap_mode="r"))
    prune_cache(budget_root(cache_dir), keep=[f for pair in files for f in pair])
    return result, bad


def _decode_all(paths, pixel_fn, shapes, cache_dir, workers, progress, desc):
    n = len(paths)
    outs = []
    for shape in shapes:
        if cache_dir is not None:
            fd, tmp = tempfile.mkstemp(prefix="pixels-", suffix=".npy.part", dir=cache_dir)
            os.close(fd)
            outs.append(np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape)))
        else:
            outs.append(np.zeros((n, *shape), dtype=np.uint8))
    bad: dict[str, str] = {}
    workers = num_workers(workers)
    items = list(enumerate(paths))
    bar = progress_bar(total=n, desc=desc, unit="img", enabled=progress and n >= 50, leave=False)
    if workers <= 1 or n < 64:
        _init_worker(pixel_fn)
        results = map(_decode, items)
        _collect(results, outs, bad, paths, bar)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        files = [o.filename for o in outs] if cache_dir is not None else None
        for o in outs:
            o.flush()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(pixel_fn, files)) as pool:
            _collect(pool.imap_unordered(_decode, items, chunksize=16), outs, bad, paths, bar)
    bar.close()
    return outs, bad


def _collect(results, outs, bad, paths, bar):
    for i, arrs, reason in results:
        if reason is None and arrs is not None:
            reason = _shape_problem(arrs, outs)
            if reason is None:
                for out, arr in zip(outs, arrs):
                    out[i] = arr
        if reason is not None:
            bad[paths[i]] = reason
        bar.update(1)


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
        from vistrain.transforms.resize import crop_scale_size
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
        from vistrain.transforms.preprocess import pil_to_uint8
        from vistrain.transforms.resize import center_crop, pil_interpolation, resize_shorter_side
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
    from PIL import Image
    key = cache_key(paths, {"largest_shorter_side": 1})
    memo = Path(cache_dir) / f"sides-{key}.json" if cache_dir is not None else None
    if memo is not None and memo.exists():
        largest = json.loads(memo.read_text())["largest_shorter_side"]
    else:
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
            memo.write_text(json.dumps({"largest_shorter_side": largest}))
    return int(min(scale_size, largest)) if largest > 0 else int(scale_size)
