"""Decode every image once into a memory-mapped array of resized uint8 pixels.

Decoding a JPEG costs far more than augmenting its pixels, and a CPU-bound training run decodes
every image every epoch in the usual torchvision recipe.  Here each image is decoded, EXIF-rotated,
converted and resized **once** (in parallel worker processes, with a progress bar) into
``(N, C, S, S)`` uint8 stored as a ``.npy`` file that later epochs and later runs memory-map.

The cache key hashes the file list (path, size, mtime and a hash of each file's first and last
64 KiB; of all its bytes with ``VISTRAIN_CACHE_STRICT=1``) and the spatial preprocessing, so
adding, changing or removing a file, or changing the size, builds a new cache.  Unreadable files
are found during the build, in the main process, and reported as ``(path, reason)``: never a crash
deep inside a DataLoader worker.

**Integrity and faults.**  Every file is written under a temporary ``.part`` name and moved into
place with ``os.replace``; each array has a JSON sidecar with its shape, size and a CRC-32 per
block of rows, checked (sampled for large entries) when it is opened: a truncated, overwritten or
mis-shaped entry is deleted and rebuilt with a warning, never used.  Before a build the free disk
space is checked and the file's blocks are reserved, so a full disk is one line naming the folder,
not a decode worker killed by SIGBUS; a worker that dies anyway ends the build with that line
(a ``ProcessPoolExecutor`` notices dead workers, a ``multiprocessing.Pool`` waits forever).

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

import errno
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import signal
import stat
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from vistrain.data.io import max_image_pixels
from vistrain.errors import ImageLoadError, VistrainError
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
# Bumped whenever what the key hashes changes (3: each file's content fingerprint), so that
# entries keyed by an older, weaker rule are rebuilt rather than trusted.
KEY_VERSION = 3
# A file's fingerprint hashes its first and last FINGERPRINT_BLOCK bytes (all of a smaller file):
# an image re-encoded with other content changes there even at the same size (a PNG ends with
# its deflate checksum and CRC; a JPEG's entropy-coded data runs to its end).
FINGERPRINT_BLOCK = 64 * 1024
STRICT_ENV = "VISTRAIN_CACHE_STRICT"
SLOW_FILE_S = 0.5e-3  # fingerprinting slower than this a file: read the rest with threads
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

# Integrity: every cached array has a JSON sidecar with its shape, dtype, file size and one CRC-32
# per block of rows.  Opening checks the sidecar, the size and the shape, and the checksums of all
# blocks of an entry up to FULL_VERIFY_BYTES, else of the first, the last and SAMPLE_BLOCKS random
# ones (a few ms); `vistrain cache --verify` checks every block of every entry.
ENTRY_FORMAT = 1
BLOCK_ROWS = 16                 # rows per checksum block of a pixel cache = one unit of decode work
FULL_VERIFY_BYTES = 64 << 20
SAMPLE_BLOCKS = 8


class CacheSpaceError(VistrainError):
    """The disk holding a cache has no room for it (checked before building, or hit while building)."""


class CacheDamaged(Exception):
    """A cache entry failed its integrity check; ``str(err)`` says how.  Never reaches the user:
    the entry is deleted and rebuilt."""


def strict_fingerprints(strict: bool | None = None) -> bool:
    """``strict`` if given, else ``$VISTRAIN_CACHE_STRICT`` (1/true/yes/on): hash every byte of
    every file for the cache key instead of its first and last blocks."""
    if strict is not None:
        return bool(strict)
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# (path, device, inode, size, mtime, ctime, strict) -> fingerprint, for this process: a run keys the
# same file list several times.  ctime is in the memo key (any write, rename or utime changes it)
# but not in the cache key, which must survive copying the data set elsewhere.
_FINGERPRINTS: dict[tuple, str] = {}
FINGERPRINT_MEMO_MAX = 2_000_000  # ~0.5 GB of memo at most


def file_fingerprint(path, strict: bool = False) -> str:
    """``"<size>:<mtime_ns>:<hash>"`` of a file's first and last FINGERPRINT_BLOCK bytes, or of
    all its bytes when ``strict``.  Raises OSError when the file cannot be read."""
    st = os.stat(path)
    memo = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, strict)
    if memo in _FINGERPRINTS:
        return _FINGERPRINTS[memo]
    return _hash_file(path, st, memo, strict)


def _hash_file(path, st: os.stat_result, memo: tuple, strict: bool) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if strict or st.st_size <= 2 * FINGERPRINT_BLOCK:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(FINGERPRINT_BLOCK))
            f.seek(-FINGERPRINT_BLOCK, os.SEEK_END)
            h.update(f.read(FINGERPRINT_BLOCK))
    fingerprint = f"{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()[:32]}"
    if len(_FINGERPRINTS) >= FINGERPRINT_MEMO_MAX:  # a long notebook session over many data sets
        _FINGERPRINTS.clear()
    _FINGERPRINTS[memo] = fingerprint
    return fingerprint


def _fingerprints(paths: list[str], strict: bool) -> list[str]:
    """:func:`file_fingerprint` of each path (``"missing"`` when unreadable).  Files not seen
    before in this process are read serially while that is fast (page cache: ~40 us a file, where
    threads only add overhead), by 8 threads once the first 64 show a slow disk or network share,
    whose waits the threads overlap."""
    prints: list[str | None] = [None] * len(paths)
    todo = []
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError:
            prints[i] = "missing"
            continue
        memo = (p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, strict)
        prints[i] = _FINGERPRINTS.get(memo)
        if prints[i] is None:
            todo.append((i, p, st, memo))

    def one(job):
        i, p, st, memo = job
        try:
            return _hash_file(p, st, memo, strict)
        except OSError:
            return "missing"
    t = time.perf_counter()
    done = [one(job) for job in todo[:64]]
    if len(todo) > 64 and time.perf_counter() - t > 64 * SLOW_FILE_S:
        with ThreadPoolExecutor(8) as pool:
            done += pool.map(one, todo[64:], chunksize=16)
    else:
        done += [one(job) for job in todo[64:]]
    for (i, *_), fingerprint in zip(todo, done):
        prints[i] = fingerprint
    return prints


def cache_key(paths, spec: dict, *, strict: bool | None = None) -> str:
    """Hash of the file list (path + :func:`file_fingerprint`), the preprocessing spec,
    DECODE_VERSION and KEY_VERSION.  ``strict`` (default ``$VISTRAIN_CACHE_STRICT``) fingerprints
    every byte of every file; a strict key differs from a default one."""
    strict = strict_fingerprints(strict)
    h = hashlib.sha256(json.dumps({"decode_version": DECODE_VERSION, "key_version": KEY_VERSION,
                                   "strict": strict, **spec}, sort_keys=True, default=str).encode())
    paths = [str(p) for p in paths]
    for p, fingerprint in zip(paths, _fingerprints(paths, strict)):
        h.update(f"{p}\0{fingerprint}\n".encode())
    return h.hexdigest()[:24]


# -- atomic files, integrity, free space ----------------------------------------------------------
def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _temp_beside(path: Path) -> Path:
    """A new empty ``<name>.<random>.part`` file next to ``path`` (same filesystem: os.replace is
    atomic; ``.part``: the budget treats it as an unfinished build)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write_text(path, text: str) -> None:
    """Write ``path`` through a temporary file and ``os.replace``: readers see the old file or the
    new one, never a half-written one."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def sidecar(npy: Path) -> Path:
    """``pixels-<key>.json`` for ``pixels-<key>.npy``."""
    return Path(npy).with_suffix(".json")


def _crc_rows(arr: np.ndarray, start: int, stop: int) -> int:
    return zlib.crc32(np.ascontiguousarray(arr[start:stop]))


def block_checksums(arr: np.ndarray, block_rows: int) -> list[int]:
    """CRC-32 of each block of ``block_rows`` rows of ``arr`` (its bytes in C order)."""
    return [_crc_rows(arr, a, a + block_rows) for a in range(0, len(arr), block_rows)]


def _write_sidecar(npy: Path, arr_file: Path, shape, dtype, block_rows: int, checksums,
                   extra: dict) -> None:
    meta = {"format": ENTRY_FORMAT, "shape": list(shape), "dtype": np.dtype(dtype).str,
            "file_bytes": os.path.getsize(arr_file), "block_rows": int(block_rows),
            "checksums": [int(c) for c in checksums], **extra}
    atomic_write_text(sidecar(npy), json.dumps(meta))


def save_array_entry(npy, arr: np.ndarray, extra: dict | None = None) -> None:
    """Store ``arr`` as ``npy`` + checksummed sidecar, both atomically (sidecar first: an array
    without its sidecar is never taken for a finished entry)."""
    npy = Path(npy)
    arr = np.ascontiguousarray(arr)
    rows = max(1, (1 << 20) // max(1, arr[:1].nbytes))  # blocks of ~1 MiB
    tmp = _temp_beside(npy)
    try:
        with open(tmp, "wb") as f:
            np.save(f, arr)
        _write_sidecar(npy, tmp, arr.shape, arr.dtype, rows, block_checksums(arr, rows), extra or {})
        os.replace(tmp, npy)
    except BaseException:
        _unlink(tmp)
        raise


def _read_sidecar(npy: Path) -> dict:
    try:
        meta = json.loads(sidecar(npy).read_text())
        if meta.get("format") != ENTRY_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {ENTRY_FORMAT}")
        meta["shape"] = tuple(int(d) for d in meta["shape"])
        meta["dtype"] = np.dtype(meta["dtype"])
        meta["block_rows"], meta["file_bytes"] = int(meta["block_rows"]), int(meta["file_bytes"])
        if not isinstance(meta["checksums"], list) or meta["block_rows"] < 1:
            raise ValueError("no checksums")
    except FileNotFoundError:
        raise CacheDamaged(f"its sidecar {sidecar(npy).name} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CacheDamaged(f"unreadable sidecar {sidecar(npy).name} "
                           f"({type(err).__name__}: {err})") from None
    return meta


def _blocks_to_check(nblocks: int, full: bool) -> list[int]:
    if full or nblocks <= SAMPLE_BLOCKS + 2:
        return list(range(nblocks))
    return sorted({0, nblocks - 1, *random.sample(range(nblocks), SAMPLE_BLOCKS)})


def open_array_entry(npy, *, full: bool = False, expect_shape=None,
                     in_memory: bool = False) -> tuple[np.ndarray, dict]:
    """``(array, sidecar)`` of a cache entry after checking it: sidecar readable, file size and
    shape as written (``expect_shape``: also as expected, ``None`` dimensions match any), and the
    block checksums -- all of them when ``full`` or the entry is small, else a sample.  The array
    is memory-mapped read-only unless ``in_memory``.  Raises :class:`CacheDamaged`."""
    npy = Path(npy)
    meta = _read_sidecar(npy)
    try:
        size = npy.stat().st_size
    except OSError as err:
        raise CacheDamaged(f"unreadable array ({err})") from None
    if size != meta["file_bytes"]:
        raise CacheDamaged(f"{size:,} bytes where {meta['file_bytes']:,} were written "
                           "(truncated or overwritten)")
    try:
        arr = np.load(npy, mmap_mode=None if in_memory else "r")
    except (OSError, ValueError, EOFError) as err:
        raise CacheDamaged(f"unreadable array ({type(err).__name__}: {err})") from None
    if arr.shape != meta["shape"] or arr.dtype != meta["dtype"]:
        raise CacheDamaged(f"array {arr.shape} {arr.dtype} where {meta['shape']} "
                           f"{meta['dtype']} was written")
    if expect_shape is not None and (len(expect_shape) != arr.ndim or any(
            e is not None and e != d for e, d in zip(expect_shape, arr.shape))):
        raise CacheDamaged(f"shape {arr.shape}, expected {tuple(expect_shape)}")
    rows, sums = meta["block_rows"], meta["checksums"]
    if len(sums) != -(-len(arr) // rows):
        raise CacheDamaged(f"{len(sums)} checksums for {len(arr)} rows in blocks of {rows}")
    for b in _blocks_to_check(len(sums), full or arr.nbytes <= FULL_VERIFY_BYTES):
        if _crc_rows(arr, b * rows, (b + 1) * rows) != sums[b]:
            last = min(len(arr), (b + 1) * rows) - 1
            raise CacheDamaged(f"rows {b * rows}-{last} fail their checksum")
    return arr, meta


def remove_entry(npy) -> None:
    """Delete an entry's array and sidecar."""
    for f in (Path(npy), sidecar(npy)):
        _unlink(f)


def _space_message(folder, needed: int, free: int, what: str) -> str:
    return (f"not enough disk space for the {what} in {folder}: it needs {needed:,} bytes "
            f"({needed / 1e9:.2f} GB), {free:,} bytes are free; set VISTRAIN_CACHE to a folder on "
            "a bigger disk, or turn the cache off with --set data.cache=off")


def _free_bytes(folder) -> int:
    """Free bytes on the disk of ``folder``, or of its nearest existing parent (not made yet)."""
    folder = Path(folder)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def ensure_free_space(folder, needed: int, what: str) -> None:
    """Raise :class:`CacheSpaceError` (folder, bytes needed and free, the fix) when ``needed``
    bytes do not fit on the disk holding ``folder``."""
    free = _free_bytes(folder)
    if needed > free:
        raise CacheSpaceError(_space_message(folder, needed, free, what))


def npy_bytes(shape, dtype=np.uint8) -> int:
    """Size of a ``.npy`` file of this shape: data plus NumPy's (at most 64 KiB) header."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize + 4096


def verify_cache(root) -> tuple[int, list[tuple[Path, str]]]:
    """Check every block of every array entry and parse every JSON-only entry under ``root``;
    delete what is damaged.  Returns ``(number of entries checked, [(file, reason), ...])``."""
    checked, damaged = 0, []
    for path in sorted(Path(root).rglob("*")):
        if ".part" in path.name or not path.is_file():
            continue
        try:
            if path.suffix == ".npy":
                checked += 1
                open_array_entry(path, full=True)
            elif path.suffix == ".json" and not path.with_suffix(".npy").exists():
                checked += 1
                try:
                    json.loads(path.read_text())
                except (OSError, ValueError) as err:
                    raise CacheDamaged(f"unreadable JSON ({type(err).__name__}: {err})") from None
        except CacheDamaged as err:
            damaged.append((path, str(err)))
            remove_entry(path) if path.suffix == ".npy" else _unlink(path)
    for path, reason in damaged:  # info: `vistrain cache --verify` prints them itself
        log.info("cache entry %s is damaged (%s); deleted, it is rebuilt when next needed", path, reason)
    return checked, damaged


# -- building pixel caches ------------------------------------------------------------------------
def num_workers(requested: int = -1) -> int:
    return max(1, os.cpu_count() or 1) if requested is None or requested < 0 else max(0, requested)


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
        bad, _ = _decode_all(paths, pixel_fn, outs, None, workers, progress, desc)
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
    needed = sum(npy_bytes((len(paths), *s)) for s in shapes)
    parts: list[Path] = []
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        ensure_free_space(cache_dir, needed, "pixel cache")
        outs = [_new_part(cache_dir, (len(paths), *s), parts) for s in shapes]
        bad, sums = _decode_all(paths, pixel_fn, outs, parts, workers, progress, desc)
        result = [_install(out, part, npy, dict(spec, n=len(paths)), bad, s)
                  for out, part, npy, spec, s in zip(outs, parts, npys, specs, sums)]
    except OSError as err:
        raise _write_error(err, cache_dir, needed, "pixel cache") from None
    finally:
        for part in parts:  # an interrupted or failed build leaves nothing behind
            _unlink(part)
    prune_cache(budget_root(cache_dir), keep=[*npys, *map(sidecar, npys)])
    return result, bad


def _write_error(err: OSError, folder: Path, needed: int, what: str) -> Exception:
    """The one-line error for a cache write that failed on a full disk or an unwritable folder;
    ``err`` itself for anything else."""
    if err.errno in SPACE_ERRNOS:
        return CacheSpaceError(_space_message(folder, needed, _free_bytes(folder), what)
                               + f" ({err.strerror})")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return VistrainError(f"cannot write the {what} in {folder} ({err.strerror}); set "
                             "VISTRAIN_CACHE to a writable folder, or turn the cache off with "
                             "--set data.cache=off")
    return err


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


def _new_part(cache_dir: Path, shape, parts: list) -> np.memmap:
    """An ``(N, C, S, S)`` zero-filled ``.npy.part`` memory map with its disk blocks reserved."""
    fd, tmp = tempfile.mkstemp(prefix="pixels-", suffix=".npy.part", dir=cache_dir)
    os.close(fd)
    parts.append(Path(tmp))
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
        _write_sidecar(npy, part, out.shape, out.dtype, BLOCK_ROWS, sums,
                       {"bad": bad, "spec": spec, "n": spec["n"]})
        os.replace(part, npy)  # atomic: an interrupted build never leaves a half cache behind
    return np.load(npy, mmap_mode="r")


def _decode_all(paths, pixel_fn, outs, part_files, workers, progress, desc):
    """Decode ``paths`` into ``outs`` (arrays, or memory maps of ``part_files``) in blocks of
    BLOCK_ROWS rows.  Returns ``(bad, checksums)``: ``{path: reason}`` in file order and, with
    ``part_files``, one list of block CRCs per output."""
    n = len(paths)
    blocks = [(a, paths[a:a + BLOCK_ROWS]) for a in range(0, n, BLOCK_ROWS)]
    sums = [[0] * len(blocks) for _ in outs]
    reasons: dict[int, str] = {}
    workers = num_workers(workers)
    bar = progress_bar(total=n, desc=desc, unit="img", enabled=progress and n >= 50, leave=False)

    def collect(result):
        start, rows, block_reasons, block_sums = result
        if rows is not None:
            for out, r in zip(outs, rows):
                out[start:start + len(r)] = r
        for s, crc in zip(sums, block_sums or ()):
            s[start // BLOCK_ROWS] = crc
        reasons.update(block_reasons)
        bar.update(min(BLOCK_ROWS, n - start))

    try:
        if workers <= 1 or n < 64:
            decoder = _BlockDecoder(pixel_fn, [o.shape[1:] for o in outs], outs, part_files is not None)
            for block in blocks:
                collect(decoder(block))
        else:
            _decode_in_workers(blocks, pixel_fn, outs, part_files, workers, collect)
    finally:
        bar.close()
    return {paths[i]: reasons[i] for i in sorted(reasons)}, sums


class _BlockDecoder:
    """Decodes a block ``(start, paths)`` of consecutive rows.  With ``outs`` (arrays or memory
    maps) it writes the rows there and returns ``(start, None, reasons, CRCs)`` -- no pixels go
    through a pipe; without, it returns ``(start, rows, reasons, None)``."""

    def __init__(self, fn: Callable, shapes, outs=None, checksum: bool = False):
        self.fn, self.shapes, self.outs, self.checksum = fn, [tuple(s) for s in shapes], outs, checksum

    def __call__(self, block):
        start, block_paths = block
        own = self.outs is None
        dsts = [np.zeros((len(block_paths), *s), np.uint8) for s in self.shapes] if own else self.outs
        base = 0 if own else start
        reasons = {}
        for j, path in enumerate(block_paths):
            arrs, reason = _decode_one(self.fn, path, self.shapes)
            if reason is None:
                for dst, arr in zip(dsts, arrs):
                    dst[base + j] = arr
            else:
                reasons[start + j] = reason
        sums = [_crc_rows(d, base, base + len(block_paths)) for d in dsts] if self.checksum else None
        return start, dsts if own else None, reasons, sums


def _decode_one(fn: Callable, path: str, shapes) -> tuple[tuple | None, str | None]:
    """``(arrays, None)`` or ``(None, reason)``; a full disk is raised: it ends the whole build."""
    try:
        out = fn(path)
        arrs = tuple(np.asarray(o) for o in out) if isinstance(out, (tuple, list)) else (np.asarray(out),)
    except ImageLoadError as err:
        return None, err.reason
    except OSError as err:
        if err.errno in SPACE_ERRNOS:
            raise
        return None, f"{type(err).__name__}: {err}"
    except Exception as err:  # any decoder bug becomes a reported file, not a dead worker
        return None, f"{type(err).__name__}: {err}"
    if len(arrs) != len(shapes):
        return None, f"pixel function returned {len(arrs)} arrays, expected {len(shapes)}"
    wrong = [f"{a.shape} (expected {s})" for a, s in zip(arrs, shapes) if a.shape != s]
    return (None, f"decoded to shape {', '.join(wrong)}") if wrong else (arrs, None)


_WORKER: _BlockDecoder | None = None


def _init_worker(fn, shapes, part_files=None):
    global _WORKER
    outs = None if part_files is None else [np.load(f, mmap_mode="r+") for f in part_files]
    _WORKER = _BlockDecoder(fn, shapes, outs, checksum=outs is not None)
    import torch
    torch.set_num_threads(1)  # one decode per process; avoid oversubscription


def _decode_block(block):
    return _WORKER(block)


def _decode_in_workers(blocks, pixel_fn, outs, part_files, workers: int, collect) -> None:
    """Decode ``blocks`` in worker processes.  A ProcessPoolExecutor, not a multiprocessing.Pool:
    when a worker dies (SIGBUS from a memory map on a full disk, the OOM killer) a Pool waits
    forever for its results, the executor raises BrokenProcessPool."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    shapes = [o.shape[1:] for o in outs]
    files = None if part_files is None else [str(p) for p in part_files]
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(pixel_fn, shapes, files))
    procs, broken = None, False
    try:
        futures = [pool.submit(_decode_block, b) for b in blocks]
        procs = getattr(pool, "_processes", None)  # the executor's live {pid: Process}
        for fut in as_completed(futures):
            collect(fut.result())
    except BrokenProcessPool:
        broken = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if broken:  # after shutdown: the workers are joined, their exit codes known
        codes = [p.exitcode for p in list((procs or {}).values()) if p.exitcode not in (None, 0)]
        raise _worker_died(codes, part_files)


def _worker_died(exitcodes, part_files) -> VistrainError:
    """The one-line error for a decode worker killed by a signal (its exit code is -signal)."""
    signals = [-c for c in exitcodes if c < 0]
    killers = [s for s in signals if s != signal.SIGTERM] or signals  # the others were terminated
    try:
        name = signal.Signals(killers[0]).name if killers else "an unknown cause"
    except ValueError:
        name = f"signal {killers[0]}"
    if name == "SIGBUS" and part_files:
        folder = Path(part_files[0]).parent
        return CacheSpaceError(f"decoding images into the pixel cache in {folder} failed: a worker "
                               f"was killed by SIGBUS, the disk is full ({_free_bytes(folder):,} bytes "
                               "free); free space, set VISTRAIN_CACHE to a folder on a bigger disk, "
                               "or turn the cache off with --set data.cache=off")
    return VistrainError(f"decoding images failed: a worker process was killed by {name} (SIGKILL "
                         "usually means out of memory, SIGBUS a full disk); use fewer workers with "
                         "--set data.num_workers=N, or turn the cache off with --set data.cache=off")


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
                atomic_write_text(memo, json.dumps({"largest_shorter_side": largest}))
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
