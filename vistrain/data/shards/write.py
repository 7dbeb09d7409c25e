"""Writing a data set as WebDataset tar shards: :func:`write_shards`.

Each sample is two tar members with the same key (an 8-digit global sample number), the
standard WebDataset minimum::

    00000000.cls    class index as ASCII text, e.g. b"3"
    00000000.png    the image (.jpg for JPEG), shorter side at most ``source_size``

Its source file, class name and part (train/val/test) are in ``index.json`` only (``files``,
``classes``, ``parts``, by key).  Compression (``compress``): ``none`` writes ``.tar`` files;
``gzip`` writes ``.tar.gz`` files, one gzip stream with a zlib full flush before every seek point
(every 64 samples), so a reader can start decompressing at a recorded offset; ``auto`` is gzip
when the mean encoded image is under 16 KB.  Small images need it: a tar member costs a 512-byte
header and pads to 512 bytes, 1-1.5 KiB per sample, mostly zeros that gzip removes; a 2.3 KB
CIFAR PNG would grow 1.8x in a plain tar.

Images are decoded by :func:`vistrain.imageio.read.load_image` (EXIF orientation applied, alpha
composited on the background, any mode to RGB), shrunk so that their shorter side is at most
``source_size`` (never enlarged), and stored as PNG (lossless) or JPEG.  An image that needs none
of that (RGB or grey, upright, small enough, same format) is stored byte for byte as it was: no
JPEG generation loss, no growth.  Grey images are stored with one channel.

Samples go into the shards in a seeded random order, so that every shard mixes the classes and
a loader that shuffles only within a buffer still sees a random stream.  Decoding runs in worker
processes, a bounded number of blocks ahead; the source files' sha256 is computed there too.
The folder is written under a temporary name next to ``out_dir`` and renamed at the end.

Example:
    >>> from vistrain.data.scan import scan_folder
    >>> info = write_shards(scan_folder("examples/fashion-mnist-small"), "/tmp/s")  # doctest: +SKIP
    >>> info["samples"], info["shards"][0]["name"]                                   # doctest: +SKIP
    (2000, 'shard-000000.tar.gz')
"""
from __future__ import annotations

import contextlib

import hashlib
import io
import multiprocessing as mp
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from itertools import chain, islice
from pathlib import Path

import numpy as np
from PIL import Image

from vistrain.data.cache.decode import num_workers
from vistrain import fsutil
from vistrain.imageio.read import DEFAULT_BACKGROUND, load_image
from vistrain.data.leftovers import pid_tag, remove_dead
from vistrain.data.scan import ImageIndex
from vistrain.data.shards.index import FORMAT, INDEX, VERSION, part_code
from vistrain.config.spelling import option
from vistrain.errors import DataError, ImageLoadError, VistrainError
from vistrain.fsutil import atomic_write_json
from vistrain.progress import progress_bar
from vistrain.transforms.resize import pil_interpolation, resize_shorter_side

ENCODINGS = ("auto", "png", "jpeg")
COMPRESSIONS = ("auto", "none", "gzip")
AUTO_GZIP_BELOW = 16 * 1024   # compress=auto: gzip when the mean image is smaller (tar headers dominate)
AUTO_PEEK = 64                # images whose mean size decides compress=auto
GZIP_LEVEL = 6
BLOCK = 32            # files per unit of worker work
SEEK_EVERY = 64       # a byte offset per 64 samples in index.json: readers start mid-shard cheaply
AHEAD = 4             # blocks in flight per worker: bounds the writer's memory


def write_shards(index: ImageIndex, out_dir, *, parts: dict[str, list[int]] | None = None,
                 source_size: int | None = None, encoding: str = "auto", quality: int = 95,
                 shard_bytes: int = 256 * 2**20, workers: int = -1, progress: bool = True,
                 seed: int = 0, interpolation: str = "bicubic", background=DEFAULT_BACKGROUND,
                 overwrite: bool = False, compress: str = "auto") -> dict:
    """Write ``index``'s images as ``out_dir/shard-NNNNNN.tar[.gz]`` + ``out_dir/index.json``.

    Args:
        parts: ``{"train"|"val"|"test": [indices into index]}``; None: the folder's own
            train/val/test split, else every image is ``train``.
        source_size: shorter side at most this (None: native size).
        encoding: ``auto`` (JPEG sources stay JPEG at ``quality``, the rest PNG), ``png``, ``jpeg``.
        shard_bytes: a new shard starts once one reaches this size (compressed bytes).
        compress: ``none`` (``.tar``), ``gzip`` (``.tar.gz``) or ``auto`` (gzip when the mean
            encoded image of the first 64 is under 16 KB); the choice is ``compress`` in the index.
        overwrite: replace ``out_dir`` if it is a shard folder (a non-shard folder is refused).

    Returns the index document (see :mod:`vistrain.data.shards.index`) plus ``out``.

    Raises:
        VistrainError: ``out_dir`` is not empty and not a shard folder, or exists without
            ``overwrite``; DataError: no image could be read.
    """
    if encoding not in ENCODINGS:
        raise VistrainError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    if compress not in COMPRESSIONS:
        raise VistrainError(f"unknown compress {compress!r}; choose one of {', '.join(COMPRESSIONS)}")
    out_dir = Path(out_dir).expanduser().absolute()
    _check_out(out_dir, overwrite, Path(index.root))
    job = _Job(source_size, encoding, quality, interpolation, tuple(background))
    part_of = _part_of_index(index, parts)
    order = np.random.default_rng(seed).permutation(len(index)).tolist()
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    fsutil.lock_folder(out_dir)  # a second pack into the same folder fails here, in one line
    # the staging folder of a pack killed earlier (kill -9) goes now; the writer's pid is in its name
    remove_dead(out_dir.parent, re.compile(rf"\.{re.escape(out_dir.name)}\.(?P<pid>\d+)-\w+\.part"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{pid_tag()}-", suffix=".part",
                                dir=out_dir.parent))
    fsutil.lock_folder(tmp)      # the lock follows it when it becomes out_dir
    fsutil.write_marker(tmp, "shards")
    installed = False
    try:
        compress, rows = _choose_compress(compress, _encoded(index, order, job, workers, progress))
        writer = _ShardWriter(tmp, shard_bytes, gzip=compress == "gzip")
        doc = _write_samples(writer, rows, index, part_of)
        doc.update(encoding=encoding, quality=quality, source_size=source_size,
                   interpolation=interpolation, seed=seed, compress=compress)
        atomic_write_json(tmp / INDEX, doc, indent=None)
        _install(tmp, out_dir)
        installed = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not installed:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only the empty folder this call created
    return dict(doc, out=str(out_dir))


def _check_out(out: Path, overwrite: bool, data_root: Path) -> None:
    """Refuse to write into anything but a new/empty folder or (with ``overwrite``) a shard folder
    vistrain wrote (its marker, kind ``shards``); never the data, a folder around or inside it,
    the home folder or the root (:func:`vistrain.fsutil.check_output_location`)."""
    fsutil.check_output_location(out, data_folder=data_root)
    if data_root.resolve() in out.resolve().parents:  # even a hidden subfolder: shards are no class
        raise VistrainError(f"{out}: inside the data folder {data_root}; choose --out outside it")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if fsutil.vistrain_output_kind(out) != "shards":
        raise VistrainError(f"{out}: exists and is not a shard folder vistrain wrote (no "
                            f"{fsutil.MARKER}); choose another --out or remove it yourself")
    if not overwrite:
        raise VistrainError(f"{out}: already holds shards; add {option('overwrite')} to replace them")


def _install(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old shard folder (or the empty folder locked at
    the start) is removed only afterwards."""
    out = out.resolve()  # a symbolic link --out: its target is replaced, the link kept
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _choose_compress(compress: str, rows):
    """``(none|gzip, rows)``: ``auto`` decided by the mean encoded size of the first
    ``AUTO_PEEK`` images (held back, then yielded again in front of the rest)."""
    if compress != "auto":
        return compress, rows
    rows = iter(rows)
    head = list(islice(rows, AUTO_PEEK))
    sizes = [len(row[1]) for _, row in head if not isinstance(row, str)]
    small = bool(sizes) and sum(sizes) / len(sizes) < AUTO_GZIP_BELOW
    return ("gzip" if small else "none"), chain(head, rows)


def _part_of_index(index: ImageIndex, parts) -> list[str]:
    """The part name of each image of ``index``."""
    if parts is None:
        return list(index.given_split) if index.given_split else ["train"] * len(index)
    out = [""] * len(index)
    for name, ids in parts.items():
        for i in ids:
            out[i] = name
    return [p or "train" for p in out]


def _write_samples(writer: "_ShardWriter", rows, index: ImageIndex, part_of: list[str]) -> dict:
    """Append every decoded row to the shards; returns the index document (without settings)."""
    root = Path(index.root)
    labels, parts, files, sha, skipped = [], [], [], {}, []
    src_bytes = src_disk = largest = 0
    per_part: dict[str, Counter] = {}
    for i, row in rows:
        rel = Path(index.paths[i]).relative_to(root).as_posix()
        if isinstance(row, str):
            skipped.append({"file": rel, "reason": row})
            continue
        ext, data, digest, size, disk, side = row
        y, part = index.labels[i], part_of[i]
        writer.add(len(labels), ext, data, y, part)
        labels.append(y)
        parts.append(part_code(part))
        files.append(rel)
        sha[rel] = digest
        per_part.setdefault(part, Counter())[y] += 1
        src_bytes, src_disk, largest = src_bytes + size, src_disk + disk, max(largest, side)
    shards = writer.close()
    if not labels:
        raise DataError(f"{root}: none of the {len(index)} images could be read "
                        f"(e.g. {skipped[0]['file']}: {skipped[0]['reason']})")
    names = index.classes
    return {"format": FORMAT, "version": VERSION, "classes": names,
            "counts": {c: n for c, n in zip(names, np.bincount(labels, minlength=len(names)).tolist())},
            "part_counts": {p: {c: cnt.get(k, 0) for k, c in enumerate(names)} for p, cnt in per_part.items()},
            "samples": len(labels), "shards": shards, "total_bytes": sum(s["bytes"] for s in shards),
            "source_bytes": src_bytes, "source_disk_bytes": src_disk, "largest_shorter_side": largest,
            "labels": labels, "parts": "".join(parts), "files": files, "sha256": sha,
            "skipped": skipped}


class _Sha256Writer(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``fh``."""

    def __init__(self, fh):
        self.fh, self.hash, self.n = fh, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.hash.update(b)
        self.n += len(b)
        return self.fh.write(b)


class _Deflate:
    """One gzip stream into ``sink``; :meth:`seek_point` full-flushes, so that a raw inflate can
    start at the bytes written after it (no back-references reach across)."""

    def __init__(self, sink, level: int = GZIP_LEVEL):
        self.sink, self.z = sink, zlib.compressobj(level, zlib.DEFLATED, 31)

    def write(self, b: bytes) -> None:
        self.sink.write(self.z.compress(b))

    def seek_point(self) -> None:
        self.sink.write(self.z.flush(zlib.Z_FULL_FLUSH))

    def close(self) -> None:
        self.sink.write(self.z.flush())


class _Plain:
    """The uncompressed counterpart of :class:`_Deflate`."""

    def __init__(self, sink):
        self.write, self.seek_point, self.close = sink.write, lambda: None, lambda: None


class _ShardWriter:
    """Writes samples into ``shard-NNNNNN.tar`` (or ``.tar.gz``) files of about ``shard_bytes``
    each.  The tar is written directly (ustar headers from :class:`tarfile.TarInfo`, then the data
    padded to 512 bytes; two zero blocks and padding to tarfile's 10 KiB record at the end): the
    same bytes as ``tarfile`` mode ``w|``, with the byte offset of each sample known."""

    def __init__(self, folder: Path, shard_bytes: int, gzip: bool = False):
        self.folder, self.limit, self.gzip = folder, max(1, int(shard_bytes)), gzip
        self.done: list[dict] = []
        self.body = self.sink = self.fh = None
        self.first = self.count = self.tar_bytes = 0
        self.parts: Counter = Counter()

    def add(self, key: int, ext: str, image: bytes, label: int, part: str) -> None:
        if self.body is not None and self.sink.n >= self.limit:
            self._finish()
        if self.body is None:
            self._start(key)
        if self.count % SEEK_EVERY == 0:
            if self.count:
                self.body.seek_point()
            self.offsets.append(self.sink.n)
        name = f"{key:08d}"
        for suffix, data in (("cls", str(label).encode()), (ext, image)):
            info = tarfile.TarInfo(f"{name}.{suffix}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # reproducible bytes
            self._write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
            self._write(data + tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE))
        self.count += 1
        self.parts[part] += 1

    def _write(self, b: bytes) -> None:
        self.body.write(b)
        self.tar_bytes += len(b)

    def _name(self) -> str:
        return f"shard-{len(self.done):06d}.tar" + (".gz" if self.gzip else "")

    def _start(self, key: int) -> None:
        self.fh = open(self.folder / self._name(), "wb")
        self.sink = _Sha256Writer(self.fh)
        self.body = _Deflate(self.sink) if self.gzip else _Plain(self.sink)
        self.first, self.count, self.parts, self.offsets, self.tar_bytes = key, 0, Counter(), [], 0

    def _finish(self) -> None:
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._write(tarfile.NUL * (-self.tar_bytes % tarfile.RECORDSIZE))
        self.body.close()
        self.fh.close()
        self.done.append({"name": self._name(), "first_key": self.first,
                          "samples": self.count, "parts": dict(self.parts), "bytes": self.sink.n,
                          "sha256": self.sink.hash.hexdigest(), "seek_every": SEEK_EVERY,
                          "offsets": self.offsets})
        self.body = None

    def close(self) -> list[dict]:
        if self.body is not None:
            self._finish()
        return self.done


# ---- decoding and encoding, in worker processes ---------------------------------------------
class _Job:
    """Picklable settings of the per-file work: ``job(path) -> row`` or a reason string."""

    def __init__(self, source_size, encoding, quality, interpolation, background):
        self.source_size, self.encoding, self.quality = source_size, encoding, int(quality)
        self.interpolation, self.background = interpolation, background

    def __call__(self, path) -> tuple | str:
        """``(ext, bytes, sha256, source bytes, source disk bytes, stored shorter side)``."""
        try:
            data = Path(path).read_bytes()
            img = load_image(path, background=self.background, min_side=self.source_size)
            ext, out, side = self._encode(data, img)
        except ImageLoadError as err:
            return err.reason
        except Exception as err:  # a decoder bug becomes a skipped file, never a dead worker
            return f"{type(err).__name__}: {err}"
        st = os.stat(path)
        return ext, out, hashlib.sha256(data).hexdigest(), st.st_size, st.st_blocks * 512, side

    def _encode(self, data: bytes, img: Image.Image) -> tuple[str, bytes, int]:
        is_jpeg = data[:2] == b"\xff\xd8"
        fmt = {"auto": "jpeg" if is_jpeg else "png"}.get(self.encoding, self.encoding)
        kept = _stored_as_is(data, fmt, self.source_size)
        if kept is not None:
            return ("jpg" if fmt == "jpeg" else "png"), data, kept
        short = min(img.size) if self.source_size is None else min(min(img.size), self.source_size)
        img = resize_shorter_side(img, short, pil_interpolation(self.interpolation))
        arr = np.asarray(img)
        if img.mode == "RGB" and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
            img = img.convert("L")  # grey: one channel, a third of the bytes, decoded back exactly
        buf = io.BytesIO()
        if fmt == "jpeg":
            img.save(buf, "JPEG", quality=self.quality)
        else:
            img.save(buf, "PNG")
        return ("jpg" if fmt == "jpeg" else "png"), buf.getvalue(), min(img.size)


def _stored_as_is(data: bytes, fmt: str, source_size: int | None) -> int | None:
    """The shorter side when the file's own bytes can be stored (right format, RGB or grey,
    upright, small enough), else None."""
    with Image.open(io.BytesIO(data)) as raw:
        if raw.format != fmt.upper() or raw.mode not in ("RGB", "L") or "transparency" in raw.info:
            return None
        if raw.getexif().get(0x0112, 1) not in (0, 1):
            return None
        side = min(raw.size)
        return side if source_size is None or side <= source_size else None


_JOB: _Job | None = None


def _init(job: _Job) -> None:
    global _JOB
    _JOB = job
    import torch  # only to limit threads: the writer itself never needs torch
    torch.set_num_threads(1)


def _run_block(paths: list[str]) -> list:
    return [_JOB(p) for p in paths]


def _encoded(index: ImageIndex, order: list[int], job: _Job, workers: int, progress: bool):
    """Yield ``(i, row or reason)`` for ``i`` in ``order``, in that order."""
    bar = progress_bar(total=len(order), desc="packing images", unit="img",
                       enabled=progress and len(order) >= 50, leave=False)
    blocks = [order[a:a + BLOCK] for a in range(0, len(order), BLOCK)]
    workers = num_workers(workers)
    try:
        if workers <= 1 or len(order) < 2 * BLOCK:
            for block in blocks:
                yield from zip(block, [job(str(index.paths[i])) for i in block])
                bar.update(len(block))
            return
        yield from _in_workers(index, blocks, job, workers, bar)
    finally:
        bar.close()


def _in_workers(index: ImageIndex, blocks, job: _Job, workers: int, bar):
    """Blocks decoded by a process pool, at most ``AHEAD`` per worker in flight, results in order."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(job,)) as pool:
        pending: deque = deque()
        todo = iter(blocks)
        for block in todo:
            pending.append((block, pool.submit(_run_block, [str(index.paths[i]) for i in block])))
            if len(pending) >= AHEAD * workers:
                break
        while pending:
            block, fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_run_block, [str(index.paths[i]) for i in nxt])))
            yield from zip(block, fut.result())
            bar.update(len(block))
