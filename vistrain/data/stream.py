"""Pixels decoded on the fly, for data the pixel cache cannot or should not hold.

The pixel cache (:mod:`vistrain.data.cache`) decodes every image once into a memory-mapped array.
A :class:`PixelStream` instead decodes each batch when it is needed, in DataLoader worker
processes, from one of two sources:

* :class:`FolderStream`: the image files of a folder (the streaming path a run takes when the
  cache would pass its budget or the free disk, or with ``data.cache=stream``);
* :class:`ShardStream`: WebDataset shards written by ``vistrain pack``
  (:class:`~vistrain.data.shards.stream.ShardBatches` reads them sequentially, shuffle buffer).

Both give what training needs, with the contract of :class:`~vistrain.data.loader.ArrayBatches`
(uint8 ``(B, C, S, S)`` + int64 ``(B,)`` batches, ``set_epoch``, ``len``, rank / world_size):

* ``batches(ids, part=..., train=...)``: the images ``ids`` (indices into the data set, in that
  order unless shuffled); ``train=True`` decodes the *train square* (shorter side ``T`` + centre
  square, the view the cache's train pixels hold, for the random resized crop), ``train=False``
  the exact evaluation pixels of :meth:`Preprocess.pixels`;
* ``eval_batches(ids, part=...)``: unshuffled evaluation batches and the ids in the order they
  hold them (shards interleave sub-streams): :func:`in_order` puts per-sample results back;
* ``take(ids)``: those images' evaluation pixels as one in-memory array (the checks' few hundred
  images);
* ``images(ids)``: what :func:`PIL.Image.open` accepts for each (a path, or the bytes in a shard).

Memory is bounded whatever the data-set size: a few batches in flight per worker (folders) or the
shuffle buffer (shards).

Example:
    >>> import numpy as np
    >>> from vistrain.data.scan import scan_folder
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> index = scan_folder("examples/fashion-mnist-small")                          # doctest: +SKIP
    >>> stream = FolderStream(index.paths, index.labels, Preprocess(size=28), None, 2)  # doctest: +SKIP
    >>> x, y = next(iter(stream.batches(np.arange(64), batch_size=32)))             # doctest: +SKIP
    >>> x.shape, x.dtype                                                              # doctest: +SKIP
    (torch.Size([32, 3, 28, 28]), torch.uint8)
"""
from __future__ import annotations

import hashlib
import io
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vistrain.data.cache.pixels import EvalAndTrainPixels
from vistrain.data.loader import ArrayBatches
from vistrain.data.scan import ImageIndex, scan_folder
from vistrain.data.shards.index import (PART_CODES, ShardIndex, is_shard_source, is_url, part_code,
                                        read_shard_index)
from vistrain.data.shards.stream import PreprocessDecoder, ShardBatches, SquareDecoder, damaged, tar_samples
from vistrain.errors import DataError


class PixelStream:
    """What a stream of pixels offers (see the module docstring); ``kind``: ``folder`` | ``shards``.

    ``pre`` is the evaluation preprocessing (spatial part); ``train_size`` the side ``T`` of the
    train square (None: train on the evaluation pixels).
    """
    kind = ""

    def __init__(self, pre, train_size: int | None, num_workers: int):
        self.pre, self.train_size, self.num_workers = pre, train_size, max(0, int(num_workers))

    def describe(self) -> str:
        raise NotImplementedError

    def batches(self, ids, *, part: str | None = None, train: bool = False, batch_size: int = 64,
                shuffle: bool = False, seed: int = 0, drop_last: bool = False, rank: int = 0,
                world_size: int = 1, pin_memory: bool = False):
        raise NotImplementedError

    def eval_batches(self, ids, *, part: str | None = None, batch_size: int = 64,
                     pin_memory: bool = False):
        """``(batches, order)``: unshuffled evaluation batches of ``ids`` and the ids in the order
        the batches hold them (shards interleave their sub-streams; see :func:`in_order`)."""
        batches = self.batches(ids, part=part, batch_size=batch_size, pin_memory=pin_memory)
        return batches, self._yielded(np.asarray(ids, np.int64), batches)

    def _yielded(self, ids: np.ndarray, batches) -> np.ndarray:
        return ids

    def take(self, ids) -> np.ndarray:
        """``(len(ids), C, S, S)`` uint8 evaluation pixels of ``ids``, in memory."""
        raise NotImplementedError

    def images(self, ids) -> list:
        raise NotImplementedError


# ---- image files ---------------------------------------------------------------------------------
class _Decoded(Dataset):
    """``i -> (uint8 (C, S, S), "")`` decoded by ``fn(paths[i])``, or ``(zeros, reason)`` when the
    file cannot be read: the main process turns the reason into one DataError line."""

    def __init__(self, paths, fn, shape):
        self.paths, self.fn, self.shape = [str(p) for p in paths], fn, shape

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return self.fn(self.paths[i]), ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return np.zeros(self.shape, np.uint8), f"{self.paths[i]}: {err}"


def _stack(items):
    xs, reasons = zip(*items)
    return torch.from_numpy(np.stack(xs)), [r for r in reasons if r]


class _TrainSquare:
    """Picklable ``path -> (C, T, T)`` uint8: the train square of :class:`EvalAndTrainPixels`."""

    def __init__(self, pre, train_size: int):
        self.pixels = EvalAndTrainPixels(pre, train_size)

    def __call__(self, path) -> np.ndarray:
        return self.pixels(path)[1]


class _EvalPixels:
    def __init__(self, pre):
        self.pre = pre

    def __call__(self, path) -> np.ndarray:
        return self.pre.pixels(path).numpy()


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # one decode per process: no oversubscription


class FolderBatches(ArrayBatches):
    """:class:`ArrayBatches`' order (seeded shuffle, rank interleave, drop_last), each batch
    decoded from the files by ``num_workers`` DataLoader processes instead of read from an array."""

    def __init__(self, paths, labels, fn, shape, *, num_workers: int, **kwargs):
        super().__init__(None, labels, prefetch=0, **kwargs)
        self.dataset, self.num_workers = _Decoded(paths, fn, shape), num_workers

    def _batches(self):
        idx = self.epoch_indices()
        stop = len(idx) - (len(idx) % self.batch_size if self.drop_last else 0)
        first = self._first_batch() * self.batch_size
        cuts = [idx[s:s + self.batch_size].tolist() for s in range(first, stop, self.batch_size)]
        if not cuts:
            return
        loader = DataLoader(self.dataset, batch_sampler=cuts, num_workers=self.num_workers,
                            collate_fn=_stack, pin_memory=self.pin_memory,
                            worker_init_fn=_one_thread if self.num_workers else None,
                            prefetch_factor=4 if self.num_workers else None,
                            generator=torch.Generator())  # not the global RNG: see ShardBatches
        for b, (x, bad) in zip(cuts, loader):
            if bad:
                raise DataError(f"unreadable image while streaming: {bad[0]}; remove or fix it "
                                "(`vistrain doctor DATA` lists every such file) and resume with --resume")
            yield x, torch.from_numpy(self.labels[b])


class FolderStream(PixelStream):
    """Pixels of ``paths`` decoded per batch (``labels[i]``: class of ``paths[i]``)."""
    kind = "folder"

    def __init__(self, paths, labels, pre, train_size: int | None, num_workers: int):
        super().__init__(pre, train_size, num_workers)
        self.paths, self.labels = list(paths), np.asarray(labels, np.int64)

    def describe(self) -> str:
        return f"streamed from the image files ({self.num_workers} decode workers, no pixel cache)"

    def batches(self, ids, *, part=None, train=False, batch_size=64, shuffle=False, seed=0,
                drop_last=False, rank=0, world_size=1, pin_memory=False) -> FolderBatches:
        c, s = self.pre.channels, self.pre.size
        if train and self.train_size:
            fn, shape = _TrainSquare(self.pre, self.train_size), (c, self.train_size, self.train_size)
        else:
            fn, shape = _EvalPixels(self.pre), (c, s, s)
        return FolderBatches(self.paths, self.labels, fn, shape, num_workers=self.num_workers,
                             batch_size=batch_size, indices=ids, shuffle=shuffle, seed=seed,
                             drop_last=drop_last, rank=rank, world_size=world_size, pin_memory=pin_memory)

    def take(self, ids) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        xs = [x for x, _ in self.batches(ids, batch_size=64)]
        return torch.cat(xs).numpy() if xs else np.zeros((0, self.pre.channels, self.pre.size,
                                                          self.pre.size), np.uint8)

    def images(self, ids) -> list:
        return [self.paths[i] for i in ids]


# ---- shards --------------------------------------------------------------------------------------
class ShardStream(PixelStream):
    """Pixels of the samples of a :class:`ShardIndex` (sample ``i``: the ``i``-th key), read by
    :class:`ShardBatches`.  The parts are the shards' own (fixed when packed): ``batches`` reads
    a whole part, ``ids`` must be that part's samples (or every sample with ``part=None``)."""
    kind = "shards"

    def __init__(self, index: ShardIndex, pre, train_size: int | None, num_workers: int,
                 buffer_size: int = 2000):
        super().__init__(pre, train_size, num_workers)
        self.index, self.buffer_size = index, buffer_size
        self.starts = np.cumsum([0] + [s.samples for s in index.shards]).tolist()

    def describe(self) -> str:
        return (f"streamed from {len(self.index.shards)} shard(s) in {self.index.root} "
                f"({self.num_workers} decode workers, shuffle buffer {self.buffer_size})")

    def part_ids(self, part: str | None) -> np.ndarray:
        if part is None:
            return np.arange(len(self.index.labels), dtype=np.int64)
        code = part_code(part)
        return np.asarray([i for i, p in enumerate(self.index.parts) if p == code], np.int64)

    def batches(self, ids, *, part=None, train=False, batch_size=64, shuffle=False, seed=0,
                drop_last=False, rank=0, world_size=1, pin_memory=False) -> ShardBatches:
        if not np.array_equal(np.asarray(ids, np.int64), self.part_ids(part)):
            raise DataError("shards are read a whole part at a time (the split was fixed by "
                            "`vistrain pack`); pack again to change the parts")
        c = self.pre.channels
        if train and self.train_size:
            size, decode = self.train_size, SquareDecoder(self.train_size, c, self.pre.interpolation)
        else:
            size, decode = self.pre.size, PreprocessDecoder(self.pre)
        return ShardBatches(self.index, size=size, batch_size=batch_size, part=part, shuffle=shuffle,
                            seed=seed, buffer_size=self.buffer_size if shuffle else 0,
                            drop_last=drop_last, rank=rank, world_size=world_size,
                            num_workers=self.num_workers, channels=c, interpolation=self.pre.interpolation,
                            pin_memory=pin_memory, decode=decode)

    def _yielded(self, ids: np.ndarray, batches: ShardBatches) -> np.ndarray:
        return ids[batches.emitted()]

    def take(self, ids) -> np.ndarray:
        decode = PreprocessDecoder(self.pre)
        data = read_samples(self.index, ids)
        return np.stack([decode(b) for b in data]) if data else \
            np.zeros((0, self.pre.channels, self.pre.size, self.pre.size), np.uint8)

    def images(self, ids) -> list:
        return [Image.open(io.BytesIO(b)) for b in read_samples(self.index, ids)]

    def largest_side(self, ids) -> int:
        """The largest shorter side among the images ``ids`` (headers only; 0 when none)."""
        sides = [min(im.size) for im in self.images(ids)]
        return max(sides, default=0)


def in_order(values: np.ndarray, order: np.ndarray, ids) -> np.ndarray:
    """``values`` (one row per entry of ``order``) re-ordered to follow ``ids``.

    Example:
        >>> in_order(np.array([10, 30, 20]), np.array([1, 3, 2]), [1, 2, 3]).tolist()
        [10, 20, 30]
    """
    where = {int(i): j for j, i in enumerate(order)}
    return values[np.asarray([where[int(i)] for i in ids], np.int64)]


def read_samples(shards: ShardIndex, ids) -> list[bytes]:
    """The encoded image of each sample ``ids`` (indices into ``shards``' samples, in that order),
    read through the shards' seek points: at most one seek block (64 samples) read per wanted
    sample, none decoded."""
    ids = [int(i) for i in ids]
    starts = np.cumsum([0] + [s.samples for s in shards.shards]).tolist()
    found: dict[int, bytes] = {}
    for k, shard in enumerate(shards.shards):
        a, b = starts[k], starts[k + 1]
        wanted = sorted({i - a for i in ids if a <= i < b})
        seekable = bool(shard.seek_every and shard.offsets)
        while wanted:
            block = min(wanted[0] // shard.seek_every, len(shard.offsets) - 1) if seekable else 0
            j = block * shard.seek_every if seekable else 0
            last = min(wanted[-1], (block + 1) * shard.seek_every - 1) if seekable else wanted[-1]
            try:
                for sample in tar_samples(shard.path, shard.offsets[block] if seekable else 0):
                    if j in wanted:
                        found[a + j] = _checked_image(sample, shards.labels[a + j], shard.path)
                    if j >= last:
                        break
                    j += 1
            except (OSError, ValueError, EOFError, zlib.error, UnicodeDecodeError, IndexError) as err:
                raise DataError(damaged(shard.path, err)) from None
            wanted = [w for w in wanted if w > last]
    missing = [i for i in ids if i not in found]
    if missing:
        raise DataError(f"{shards.root}: sample {missing[0]} not found in its shard; the shards "
                        "changed since index.json was written: pack again")
    return [found[i] for i in ids]


def _checked_image(sample: dict, label: int, path) -> bytes:
    """The sample's image bytes, after checking its ``.cls`` against index.json's ``label``."""
    if sample["cls"] != label or "image" not in sample:
        raise DataError(f"{path}: sample {sample['key']} disagrees with index.json (class "
                        f"{sample['cls']} vs {label}, or no image); pack the data again with `vistrain pack`")
    return sample["image"]


def shards_digest(shards: ShardIndex) -> str:
    """sha256 of each shard's name, size and sha256 (as ``index.json`` records them), sorted:
    what identifies a set of shards for a resumed run and for cache keys."""
    lines = sorted(f"{s.name}\t{s.bytes}\t{s.sha256}\n" for s in shards.shards)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def open_images(index: ImageIndex, ids) -> list:
    """What :func:`PIL.Image.open` and :meth:`Preprocess.pixels` take for the images ``ids`` of
    ``index``: their paths, or for shards the opened images (lazy: header read, pixels not)."""
    if index.shards is None:
        return [index.paths[i] for i in ids]
    return [Image.open(io.BytesIO(b)) for b in read_samples(index.shards, ids)]


def unreadable_headers(paths, workers: int = 8) -> dict[str, str]:
    """``{path: reason}`` of the files whose image header cannot be read (empty, not an image,
    a decompression bomb), checked by threads: what streaming can know before the first epoch.
    A file whose header reads but whose pixels are truncated is reported when decoded."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = list(pool.map(_header_problem, [str(p) for p in paths], chunksize=64))
    return {str(p): r for p, r in zip(paths, reasons) if r}


def _header_problem(path: str) -> str:
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes); delete it or re-export the image"
        with Image.open(path) as im:
            im.size  # noqa: B018 - the header is parsed by open; size proves it
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"not a readable image ({err})"
    return ""


def shard_sample_names(index: ShardIndex, root=None) -> list[Path]:
    """One path-like name per sample (``ROOT/<key>``), for the records that name images."""
    root = Path(root or index.root or Path(index.shards[0].path).parent)
    first = index.shards[0].first_key
    return [root / f"{first + i:08d}" for i in range(len(index.labels))]


def location(source) -> str:
    """What records name a data source by: a local folder absolute, a URL or a shard pattern
    as given (``Path.resolve`` would turn ``s3://b/x`` into ``CWD/s3:/b/x``).

    Example:
        >>> location("s3://bucket/shards"), location("/d/shard-{0..3}.tar")
        ('s3://bucket/shards', '/d/shard-{0..3}.tar')
    """
    text = str(source)
    if is_url(text) or "{" in text:
        return text
    return str(Path(text).expanduser().resolve())


def open_index(source) -> ImageIndex:
    """The :class:`ImageIndex` of an image folder (:func:`scan_folder`) or of shards: the
    shards' classes and labels, one name per sample (:func:`shard_sample_names`), their parts
    as the given split and the :class:`ShardIndex` in ``shards``."""
    if not is_shard_source(source):
        return scan_folder(source)
    shards = read_shard_index(source)
    if not shards.labels:
        raise DataError(f"{source}: the shards hold no samples; pack a folder with images")
    given = [PART_CODES[c] for c in shards.parts]
    root = location(source) if isinstance(source, (str, Path)) else \
        shards.root or Path(shards.shards[0].path).parent  # a list: their folder
    return ImageIndex(root, list(shards.classes), shard_sample_names(shards, root), list(shards.labels),
                      given, shards=shards)
