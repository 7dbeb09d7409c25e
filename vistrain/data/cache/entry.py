"""One cache entry on disk: a ``.npy`` array and its checksummed JSON sidecar, written atomically.

Every cached array (pixels, features) has a sidecar ``<name>.json`` with its shape, dtype, file
size and one CRC-32 per block of rows.  :func:`open_array_entry` checks the sidecar, the size and
the shape, and the checksums of all blocks of an entry up to ``FULL_VERIFY_BYTES``, else of the
first, the last and ``SAMPLE_BLOCKS`` random ones (a few ms): a truncated, overwritten or
mis-shaped entry raises :class:`CacheDamaged` (the caller deletes and rebuilds it), never gives
wrong pixels.  ``vistrain cache --verify`` (:func:`verify_cache`) checks every block of every
entry.  Files are written under a temporary ``.part`` name (:func:`vistrain.fsutil.atomic_path`)
and moved into place with ``os.replace``, the sidecar first: an array without its sidecar is
never taken for a finished entry.

Example:
    >>> import tempfile, pathlib
    >>> npy = pathlib.Path(tempfile.mkdtemp()) / "features-k.npy"
    >>> save_array_entry(npy, np.arange(12, dtype=np.float32).reshape(4, 3), {"rows": 4})
    >>> arr, meta = open_array_entry(npy, expect_shape=(None, 3))
    >>> arr.shape, meta["rows"], sorted(p.name for p in npy.parent.glob("features-*"))
    ((4, 3), 4, ['features-k.json', 'features-k.npy'])
"""
from __future__ import annotations

import json
import logging
import os
import random
import zlib
from pathlib import Path

import numpy as np

from vistrain.data.cache.budget import PART, indexed_files, part_suffix, record_entry
from vistrain.fsutil import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

ENTRY_FORMAT = 1
FULL_VERIFY_BYTES = 64 << 20    # entries up to this size have every block checked when opened
SAMPLE_BLOCKS = 8               # ... larger ones the first, the last and this many random blocks


class CacheDamaged(Exception):
    """A cache entry failed its integrity check; ``str(err)`` says how.  Never reaches the user:
    the entry is deleted and rebuilt."""


def unlink_quietly(path) -> None:
    """Delete ``path`` if it can be deleted (gone already, or in use on Windows: left alone)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def sidecar(npy: Path) -> Path:
    """``pixels-<key>.json`` for ``pixels-<key>.npy``."""
    return Path(npy).with_suffix(".json")


def crc_rows(arr: np.ndarray, start: int, stop: int) -> int:
    """CRC-32 of rows ``start:stop`` of ``arr`` (its bytes in C order)."""
    return zlib.crc32(np.ascontiguousarray(arr[start:stop]))


def block_checksums(arr: np.ndarray, block_rows: int) -> list[int]:
    """CRC-32 of each block of ``block_rows`` rows of ``arr`` (its bytes in C order)."""
    return [crc_rows(arr, a, a + block_rows) for a in range(0, len(arr), block_rows)]


def write_sidecar(npy: Path, arr_file: Path, shape, dtype, block_rows: int, checksums,
                  extra: dict) -> None:
    """Write the sidecar of ``npy`` for the array now in ``arr_file`` (``npy`` or its ``.part``)."""
    meta = {"format": ENTRY_FORMAT, "shape": list(shape), "dtype": np.dtype(dtype).str,
            "file_bytes": os.path.getsize(arr_file), "block_rows": int(block_rows),
            "checksums": [int(c) for c in checksums], **extra}
    record_entry(sidecar(npy))
    atomic_write_text(sidecar(npy), json.dumps(meta), suffix=part_suffix())


def save_array_entry(npy, arr: np.ndarray, extra: dict | None = None) -> None:
    """Store ``arr`` as ``npy`` + checksummed sidecar, both atomically (sidecar first: an array
    without its sidecar is never taken for a finished entry)."""
    npy = Path(npy)
    arr = np.ascontiguousarray(arr)
    rows = max(1, (1 << 20) // max(1, arr[:1].nbytes))  # blocks of ~1 MiB
    record_entry(npy)
    with atomic_path(npy, suffix=part_suffix()) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
        write_sidecar(npy, tmp, arr.shape, arr.dtype, rows, block_checksums(arr, rows), extra or {})


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
        if crc_rows(arr, b * rows, (b + 1) * rows) != sums[b]:
            last = min(len(arr), (b + 1) * rows) - 1
            raise CacheDamaged(f"rows {b * rows}-{last} fail their checksum")
    return arr, meta


def remove_entry(npy) -> None:
    """Delete an entry's array and sidecar."""
    for f in (Path(npy), sidecar(npy)):
        unlink_quietly(f)


def verify_cache(root) -> tuple[int, list[tuple[Path, str]]]:
    """Check every block of every array entry and parse every JSON-only entry under ``root``;
    delete what is damaged.  Returns ``(number of entries checked, [(file, reason), ...])``."""
    checked, damaged = 0, []
    for path in sorted(indexed_files(root)):  # only what vistrain recorded: never a user's file
        if PART in path.name or not path.is_file():
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
            remove_entry(path) if path.suffix == ".npy" else unlink_quietly(path)
    for path, reason in damaged:  # info: `vistrain cache --verify` prints them itself
        log.info("cache entry %s is damaged (%s); deleted, it is rebuilt when next needed", path, reason)
    return checked, damaged
