"""Decoding a file list into ``(N, ...)`` uint8 arrays, in blocks, in watched worker processes.

:func:`decode_all` cuts the list into blocks of ``BLOCK_ROWS`` consecutive rows (one unit of work
and one checksum block of a pixel cache).  Each block is decoded by ``pixel_fn`` in the main
process (few files, or ``workers`` <= 1) or in worker processes, which write their rows straight
into the memory-mapped ``.part`` files of the cache (no pixels go through a pipe) and return the
block's CRC-32s.  An unreadable file is a reason (its row stays zero), never a crash in a worker;
a full disk ends the whole build.  The workers are watched: a ``ProcessPoolExecutor`` notices a
worker that dies (SIGBUS from a memory map on a full disk, the OOM killer), where a
``multiprocessing.Pool`` would wait forever, and the build ends with one line saying why.

Example:
    >>> import numpy as np
    >>> outs = [np.zeros((3, 2), np.uint8)]
    >>> bad, _ = decode_all(["a", "b", "c"], lambda p: np.full(2, ord(p), np.uint8), outs, None,
    ...                     workers=0, progress=False, desc="")
    >>> outs[0][:, 0].tolist(), bad
    ([97, 98, 99], {})
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import numpy as np

from vistrain.data.cache.budget import SPACE_ERRNOS, CacheSpaceError, free_bytes
from vistrain.data.cache.entry import crc_rows
from vistrain.config.spelling import set_option
from vistrain.errors import ImageLoadError, VistrainError
from vistrain.progress import progress_bar

BLOCK_ROWS = 16   # rows per unit of decode work = per checksum block of a pixel cache


def num_workers(requested: int = -1) -> int:
    """``requested`` worker processes; a negative or None request means one per CPU core."""
    return max(1, os.cpu_count() or 1) if requested is None or requested < 0 else max(0, requested)


def decode_all(paths, pixel_fn: Callable, outs, part_files, workers: int = -1, progress: bool = True,
               desc: str = "decoding images"):
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
        sums = [crc_rows(d, base, base + len(block_paths)) for d in dsts] if self.checksum else None
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
    import torch  # heavy, and only the workers need it: importing the cache must not load torch
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
                               f"was killed by SIGBUS, the disk is full ({free_bytes(folder):,} bytes "
                               "free); free space, set VISTRAIN_CACHE to a folder on a bigger disk, "
                               f"or turn the cache off with {set_option('data.cache', 'off')}")
    return VistrainError(f"decoding images failed: a worker process was killed by {name} (SIGKILL "
                         "usually means out of memory, SIGBUS a full disk); use fewer workers with "
                         f"{set_option('data.num_workers', 'N')}, or turn the cache off with "
                         f"{set_option('data.cache', 'off')}")
