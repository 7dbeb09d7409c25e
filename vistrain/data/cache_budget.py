"""Where the caches live, how large they may grow, and whether a new entry fits on the disk.

A pixel cache of a 224 px data set is ~150 kB an image, and every new file list, size or model
makes a new one: without a budget ``~/.cache/vistrain`` grows until the disk is full.  So every
build ends with :func:`prune_cache`, which deletes the least recently used entries (a hit touches
its files, :func:`mark_used`) until the folder fits ``$VISTRAIN_CACHE_MAX_GB``, and the ``.part``
files of builds killed long ago.  Before a build, :func:`ensure_free_space` checks that the new
entry fits on its disk, so a full disk is one line naming the folder and the fix
(:class:`CacheSpaceError`), not a decode worker killed half-way.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "pixels-a.npy").write_bytes(bytes(100))
    >>> [(e.name, e.size, e.partial) for e in cache_entries(root)]
    [('pixels-a', 100, False)]
    >>> npy_bytes((10, 3, 8, 8))        # what a (10, 3, 8, 8) uint8 entry needs on disk
    6016
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vistrain.config.spelling import set_option
from vistrain.errors import VistrainError

log = logging.getLogger(__name__)

DEFAULT_CACHE_MAX_GB = 20.0
PART = ".part"             # the temporary-name suffix of every cache file being written
PART_MAX_AGE_S = 6 * 3600  # a ".part" file untouched this long belongs to a build that was killed
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


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
