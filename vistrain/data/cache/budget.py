"""Where the caches live, how large they may grow, and whether a new entry fits on the disk.

A pixel cache of a 224 px data set is ~150 kB an image, and every new file list, size or model
makes a new one: without a budget ``~/.cache/vistrain`` grows until the disk is full.  So every
build ends with :func:`prune_cache`, which deletes the least recently used entries (a hit touches
its files, :func:`mark_used`) until the folder fits ``$VISTRAIN_CACHE_MAX_GB``, and the ``.part``
files of builds killed long ago.  Before a build, :func:`ensure_free_space` checks that the new
entry fits on its disk, so a full disk is one line naming the folder and the fix
(:class:`CacheSpaceError`), not a decode worker killed half-way.

Only vistrain's own files are ever deleted: every cache file is recorded (:func:`record_entry`,
before it is written) in the index ``.vistrain-cache-index.json`` of its cache root, and the
budget, ``vistrain cache --clear/--prune/--verify`` only look at, and delete, files the index
lists (and their ``.part`` temporaries).  A user's file in ``$VISTRAIN_CACHE`` is never counted
nor deleted.  A cache root vistrain creates also carries the marker ``.vistrain-run`` (kind
``cache``); ``vistrain cache --clear/--prune/--verify`` refuse a root without it.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> record_entry(root / "pixels-a.npy")
    >>> _ = (root / "pixels-a.npy").write_bytes(bytes(100))
    >>> _ = (root / "notes.txt").write_text("the user's")          # not in the index: ignored
    >>> [(e.name, e.size, e.partial) for e in cache_entries(root)]
    [('pixels-a', 100, False)]
    >>> npy_bytes((10, 3, 8, 8))        # what a (10, 3, 8, 8) uint8 entry needs on disk
    6016
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import NamedTuple

import filelock
import numpy as np

from vistrain.data.leftovers import left_by_dead_writer
from vistrain import fsutil
from vistrain.config.spelling import set_option
from vistrain.errors import VistrainError

log = logging.getLogger(__name__)

DEFAULT_CACHE_MAX_GB = 20.0
PART = ".part"             # the temporary-name suffix of every cache file being written
PART_MAX_AGE_S = 6 * 3600  # a ".part" file untouched this long belongs to a build that was killed
# a ".part" file names its writer (see part_suffix): when that process is gone, the build is too
PART_OF_WRITER = re.compile(r".+\.(?P<pid>\d+)\.part")


def part_suffix() -> str:
    """The temporary-name suffix of a cache file this process writes, ``.<pid>.part``: the next
    run removes it at once when this process was killed (:func:`prune_cache`)."""
    return f".{os.getpid()}{PART}"
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
INDEX = ".vistrain-cache-index.json"   # the cache root's list of the files vistrain wrote there
INDEX_LOCK = ".vistrain-cache-index.lock"


class CacheSpaceError(VistrainError):
    """The disk holding a cache has no room for it (checked before building, or hit while building)."""


class CacheBudgetError(CacheSpaceError):
    """A new cache entry alone would be larger than the cache budget (``$VISTRAIN_CACHE_MAX_GB``):
    refused before decoding, instead of building it and evicting everything else."""


def human_bytes(n: int) -> str:
    """``n`` bytes as people read them: ``'4.7 MB'``, ``'35.2 GB'``."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_budget(needed: int, what: str) -> None:
    """Raise :class:`CacheBudgetError` when ``needed`` bytes exceed the cache budget."""
    limit = cache_limit_bytes()
    if limit is not None and needed > limit:
        raise CacheBudgetError(f"the {what} would take {human_bytes(needed)}, over the cache budget of "
                               f"{human_bytes(limit)} (VISTRAIN_CACHE_MAX_GB); raise the budget, lower "
                               f"preprocess.size, or train with {set_option('data.cache', 'off')} (in memory)")


def default_cache_dir() -> Path:
    """``$VISTRAIN_CACHE``, else ``~/.cache/vistrain``: pixel, feature and statistics caches."""
    return Path(os.environ.get("VISTRAIN_CACHE", Path.home() / ".cache" / "vistrain"))


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


# -- the index of vistrain's own files -------------------------------------------------------------
def _read_index(root: Path) -> dict[str, float]:
    try:
        doc = json.loads((root / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    files = doc.get("files") if isinstance(doc, dict) else None
    return files if isinstance(files, dict) else {}


def _index_lock(root: Path) -> filelock.FileLock:
    return filelock.FileLock(str(root / INDEX_LOCK), timeout=60)


def _write_index(root: Path, files: dict[str, float]) -> None:
    fsutil.atomic_write_json(root / INDEX, {"created_by": "vistrain", "files": files}, indent=None,
                             suffix=PART)


def record_entry(*paths) -> None:
    """Record cache files in the index of their cache root (:func:`budget_root`) before they are
    written: only files listed there are ever evicted, cleared or verified.  A root vistrain
    creates (or finds empty) is also marked as a cache (:func:`vistrain.fsutil.write_marker`)."""
    for path in map(Path, paths):
        root = budget_root(path.parent)
        # a root is vistrain's when vistrain creates it, or finds it holding no file at all
        fresh = not (root / INDEX).exists() and not any(p.is_file() for p in root.rglob("*"))
        root.mkdir(parents=True, exist_ok=True)
        with _index_lock(root):
            if fresh and fsutil.vistrain_output_kind(root) is None:
                fsutil.write_marker(root, "cache")
            files = _read_index(root)
            rel = os.path.relpath(path.absolute(), root.absolute())
            if rel not in files:
                files[rel] = time.time()
                _write_index(root, files)


def _forget(root: Path, gone: list[Path]) -> None:
    """Drop deleted files from the index of ``root``."""
    with _index_lock(root):
        files = _read_index(root)
        for f in gone:
            files.pop(os.path.relpath(f.absolute(), root.absolute()), None)
        _write_index(root, files)


def indexed_files(root: Path) -> list[Path]:
    """The files under ``root`` that vistrain recorded, that still exist, and the ``.part``
    temporaries of their unfinished writes (``NAME.<random>[.<pid>].part``)."""
    root = Path(root)
    listed = [root / rel for rel in _read_index(root)]
    by_dir: dict[Path, set[str]] = {}
    for f in listed:
        by_dir.setdefault(f.parent, set()).add(f.name)
    found = [f for f in listed if f.is_file()]
    for folder, names in by_dir.items():
        try:
            children = list(folder.iterdir())
        except OSError:
            continue
        for p in children:  # NAME.part, NAME.<random>.part or NAME.<random>.<pid>.part of a listed NAME
            stem = p.name[:p.name.find(PART)] if PART in p.name else None
            if stem and any(stem == n or stem.startswith(n + ".") for n in names):
                found.append(p)
    return found


def cache_entries(root: Path) -> list[CacheEntry]:
    """Every entry vistrain recorded under ``root`` (:func:`indexed_files`), least recently used first."""
    groups: dict[tuple[Path, str, bool], list[tuple[Path, os.stat_result]]] = {}
    for path in indexed_files(root):
        try:
            st = path.stat()
        except OSError:  # removed meanwhile by another process
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        partial = PART in path.name
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
        >>> record_entry(root / "pixels-a.npy")
        >>> _ = (root / "pixels-a.npy").write_bytes(bytes(8192))
        >>> _ = (root / "mine.npy").write_bytes(bytes(8192))   # not recorded: never deleted
        >>> [e.name for e in prune_cache(root, limit_bytes=0)], (root / "mine.npy").exists()
        (['pixels-a'], True)
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
        stale_part = e.partial and (now - e.last_used > PART_MAX_AGE_S or _writer_gone(e))
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
        _forget(Path(root), [f for e in removed for f in e.files if not f.exists()])
        log.info("cache %s: removed %d least recently used entries (%.1f GB) to stay within %s",
                 root, len(removed), sum(e.size for e in removed) / 1e9,
                 "no limit" if limit is None else f"{limit / 1e9:g} GB (VISTRAIN_CACHE_MAX_GB)")
    return removed


def _writer_gone(entry: CacheEntry) -> bool:
    """Every ``.part`` file of ``entry`` was left by a process that no longer runs."""
    try:
        return all(left_by_dead_writer(f, PART_OF_WRITER) for f in entry.files if PART in f.name)
    except OSError:  # a file went meanwhile: its build finished or was cleaned by another run
        return False


def budget_root(cache_dir: Path) -> Path:
    """The folder whose total the budget applies to: the whole default cache when ``cache_dir``
    lies inside it (pixels, features and statistics share one budget), else ``cache_dir``."""
    root = default_cache_dir()
    try:
        Path(cache_dir).resolve().relative_to(root.resolve())
        return root
    except ValueError:
        return Path(cache_dir)


# -- free space ----------------------------------------------------------------------------------
def space_message(folder, needed: int, free: int, what: str) -> str:
    """The one line for ``needed`` bytes that do not fit in the ``free`` bytes of ``folder``."""
    return (f"not enough disk space for the {what} in {folder}: it needs {needed:,} bytes "
            f"({needed / 1e9:.2f} GB), {free:,} bytes are free; set VISTRAIN_CACHE to a folder on "
            f"a bigger disk, or turn the cache off with {set_option('data.cache', 'off')}")


def free_bytes(folder) -> int:
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
    free = free_bytes(folder)
    if needed > free:
        raise CacheSpaceError(space_message(folder, needed, free, what))


def npy_bytes(shape, dtype=np.uint8) -> int:
    """Size of a ``.npy`` file of this shape: data plus NumPy's (at most 64 KiB) header."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize + 4096


def write_error(err: OSError, folder: Path, needed: int, what: str) -> Exception:
    """The one-line error for a cache write that failed on a full disk or an unwritable folder;
    ``err`` itself for anything else."""
    if err.errno in SPACE_ERRNOS:
        return CacheSpaceError(space_message(folder, needed, free_bytes(folder), what)
                               + f" ({err.strerror})")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return VistrainError(f"cannot write the {what} in {folder} ({err.strerror}); set "
                             "VISTRAIN_CACHE to a writable folder, or turn the cache off with "
                             f"{set_option('data.cache', 'off')}")
    return err
