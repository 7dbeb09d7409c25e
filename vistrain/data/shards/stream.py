"""Streaming uint8 batches out of WebDataset shards: :class:`ShardBatches`.

The iteration contract is :class:`vistrain.data.loader.ArrayBatches`'s: ``(x, y)`` with ``x`` a
uint8 tensor ``(B, C, S, S)`` (decoded, shorter side resized to ``S``, centre ``S x S`` crop, as
the pixel cache's train square) and ``y`` an int64 tensor ``(B,)``; ``set_epoch``, ``len()``,
``rank``/``world_size`` and ``drop_last`` mean the same.  So the batch augmentation of the cached
path (random resized crop etc. on uint8 batches on the device) applies unchanged afterwards.

How one epoch is read, deterministically:

1. The shards holding samples of ``part`` are put in a random order drawn from ``(seed, epoch)``
   (the same on every rank); their samples form one sequence of ``N`` positions.
2. Rank ``r`` takes positions ``[r*L, (r+1)*L)`` with ``L = ceil(N / world_size)``, wrapping
   round to the start (as ``DistributedSampler`` pads): every rank has exactly ``L`` samples and
   the same number of batches, so DDP never waits on a rank that ran out; every sample is read
   once per epoch (plus the few padding repeats).
3. The rank's range is cut into ``streams`` contiguous sub-streams (a fixed number, default 16,
   not the number of workers), each a run of whole or partial shards read sequentially
   (:func:`tar_members`, a streaming tar reader: one sample in memory at a time).  Worker ``w`` of ``num_workers``
   reads sub-streams ``w, w + num_workers, ...``; it decodes and resizes, and hands over chunks
   of ``chunk`` samples.  The stream order is the sub-streams' chunks round-robin.
4. A shuffle buffer of ``buffer_size`` samples in the main process draws the emitted order from
   ``(seed, epoch, rank)``.  The order therefore depends on (seed, epoch, rank, world_size,
   streams, chunk, buffer_size) and **not** on ``num_workers`` or timing.

Exact resume: :meth:`ShardBatches.state_dict` is ``{"epoch", "batches_done"}``; after
:meth:`~ShardBatches.load_state_dict` the next iteration yields exactly the batches an
uninterrupted epoch would have yielded from there on.  The order is replayed on positions only
(no image is read): the workers then decode only the samples still to come plus those that sat in
the buffer at that point.

Memory is independent of the number of samples: the main process holds at most
``buffer_size + (streams + 1) * chunk`` decoded samples (:attr:`ShardBatches.max_held` counts
them), plus ``num_workers * prefetch`` chunks in flight; the plan is a few integers per shard.

Example:
    >>> from vistrain.data.shards.stream import BufferOrder
    >>> import numpy as np
    >>> order = BufferOrder(10, 4, np.random.default_rng(0))
    >>> sorted(order.next() for _ in range(10)) == list(range(10))
    True
"""
from __future__ import annotations

import io
import json
import math
import zlib
from bisect import bisect_right
from itertools import count

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vistrain.imageio.read import to_rgb
from vistrain.data.shards.index import IMAGE_EXTS, ShardIndex, open_shard, part_code, read_shard_index
from vistrain.errors import DataError
from vistrain.transforms.resize import center_crop, pil_interpolation, resize_shorter_side


class ShardBatches:
    """Iterate ``(x uint8 (B, C, size, size), y int64 (B,))`` over the shards of ``source``.

    Args:
        source: a shard folder (with ``index.json``), a list of ``.tar`` paths, a brace pattern
            (``shards/shard-{000000..000009}.tar``) or a :class:`ShardIndex`.
        size: side ``S`` of the square (shorter side resized to ``S``, then the centre crop).
        part: ``"train"``, ``"val"``, ``"test"`` or None (every sample).
        shuffle: shard order and shuffle buffer on (training); off: a fixed order.
        buffer_size: samples in the shuffle buffer (memory: ``buffer_size * C * S * S`` bytes).
        channels: 3 (RGB; grey images are repeated) or 1 (grey, like ``data.grayscale``).
        num_workers: decode processes (0: in this process); at most ``streams`` are used.
        streams, chunk: the fixed reading plan (see the module docstring); they shape the order.
        decode: image bytes -> ``(C, size, size)`` uint8 array, run in the workers (picklable);
            default :func:`decode_square` (the train square).  Evaluation passes the run's exact
            :class:`~vistrain.transforms.preprocess.Preprocess` (:class:`PreprocessDecoder`).
    """

    def __init__(self, source, *, size: int, batch_size: int, part: str | None = None,
                 shuffle: bool = False, seed: int = 0, buffer_size: int = 2000,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 channels: int = 3, interpolation: str = "bicubic", streams: int = 16,
                 chunk: int = 32, prefetch: int = 2, pin_memory: bool = False, decode=None):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels}")
        self.index: ShardIndex = read_shard_index(source)
        self.size, self.batch_size, self.part, self.shuffle = int(size), int(batch_size), part, shuffle
        self.seed, self.buffer_size, self.drop_last = seed, max(1, int(buffer_size)), drop_last
        self.rank, self.world_size, self.channels = rank, world_size, channels
        self.num_workers, self.interpolation = min(int(num_workers), streams), interpolation
        self.streams, self.chunk, self.prefetch, self.pin_memory = streams, chunk, prefetch, pin_memory
        self.decode = decode or SquareDecoder(self.size, channels, interpolation)
        self.counts = self.index.shard_part_counts(part)
        if sum(self.counts) == 0:
            raise DataError(f"{self.index.root or 'the shards'}: no samples of part {part!r}; "
                            f"the shards hold {self.index.part_counts()}")
        self.epoch, self.batches_done, self._resume = 0, 0, None
        self.max_held = 0   # most decoded samples held at once in this process (tests check it)

    # ---- the ArrayBatches contract ---------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._resume, self.batches_done = None, 0  # a saved position belongs to its epoch
        self.epoch = epoch

    def samples_per_rank(self) -> int:
        """``L = ceil(N / world_size)``: samples every rank reads per epoch."""
        return math.ceil(sum(self.counts) / self.world_size)

    def __len__(self) -> int:
        n = self.samples_per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict:
        """``{"epoch", "batches_done"}``: the position to resume from."""
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict) -> None:
        """The next iteration continues epoch ``state["epoch"]`` after ``batches_done`` batches."""
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches_done"])
        self._resume = self.batches_done

    def __iter__(self):
        skip = self._resume or 0
        self._resume = None
        n_emit = len(self) * self.batch_size if self.drop_last else self.samples_per_rank()
        order = BufferOrder(self.samples_per_rank(), self.buffer_size if self.shuffle else 0,
                            np.random.default_rng([self.seed, self.epoch, self.rank]))
        for _ in range(min(skip * self.batch_size, n_emit)):
            order.next()
        stream = _ShardStream(self, order.read, set(order.buffer))
        self.batches_done = skip
        yield from self._batches(order, stream, skip * self.batch_size, n_emit)

    def emitted(self) -> np.ndarray:
        """``(n,)`` int64: which sample of ``part`` each sample this rank yields this epoch is, in
        the order yielded, as its number among the part's samples in shard order.

        The stream interleaves its sub-streams' chunks, so even unshuffled the order is not the
        shards' order: what needs results per sample (features, predictions) puts them back in
        order with this.  Without ``shuffle`` only (the shard order is then the shards' own).
        """
        if self.shuffle:
            raise ValueError("emitted() is defined for unshuffled reading only")
        lengths = [sum(b - a for _, a, b in segs) for segs in self.plan()]
        total, first = sum(self.counts), self.rank * self.samples_per_rank()
        seq = np.empty(sum(lengths), np.int64)
        for g, n in enumerate(lengths):
            i = np.arange(n)
            starts = np.asarray([chunk_start(lengths, self.chunk, g, q) for q in range(-(-n // self.chunk))],
                                np.int64)
            seq[starts[i // self.chunk] + i % self.chunk] = (first + i) % total
            first += n
        n_emit = len(self) * self.batch_size if self.drop_last else self.samples_per_rank()
        return seq[:n_emit]

    # ---- internals -------------------------------------------------------------------------------
    def plan(self) -> list[list[tuple[int, int, int]]]:
        """This rank's sub-streams for the current epoch: ``[(shard, first, stop), ...]`` each,
        ``first``/``stop`` counting the shard's samples of ``part``."""
        ids = [k for k, n in enumerate(self.counts) if n > 0]
        if self.shuffle:
            ids = [ids[i] for i in np.random.default_rng([self.seed, self.epoch]).permutation(len(ids))]
        cum = np.concatenate([[0], np.cumsum([self.counts[k] for k in ids])]).tolist()
        per_rank = self.samples_per_rank()
        sizes = [per_rank // self.streams + (g < per_rank % self.streams) for g in range(self.streams)]
        start, plan = self.rank * per_rank, []
        for n in sizes:
            plan.append(_segments(ids, cum, start, start + n))
            start += n
        return plan

    def _batches(self, order: "BufferOrder", stream: "_ShardStream", first: int, stop: int):
        chunks, held = self._chunks(stream), {}
        B, S, C = self.batch_size, self.size, self.channels
        try:
            for start in range(first, stop, B):
                n = min(B, stop - start)
                x, y = np.empty((n, C, S, S), np.uint8), np.empty(n, np.int64)
                for j in range(n):
                    p = order.next()
                    while p not in held:
                        self._receive(_next_chunk(chunks), held)
                    x[j], y[j] = held.pop(p)
                self.batches_done += 1  # counted when handed out: a checkpoint after it resumes past it
                yield self._tensors(x, y)
        finally:
            del chunks  # ends the worker processes of a DataLoader

    def _receive(self, chunk, held: dict) -> None:
        pos, xs, ys = (t.numpy() if torch.is_tensor(t) else t for t in chunk)
        for p, x, y in zip(pos.tolist(), xs, ys.tolist()):
            held[p] = (x.copy(), y)  # a copy: a view would keep the whole chunk alive
        self.max_held = max(self.max_held, len(held))

    def _tensors(self, x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        return (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)

    def _chunks(self, stream: "_ShardStream"):
        if self.num_workers <= 0:
            return iter(stream)
        # a generator of its own: a DataLoader draws its workers' base seed from the global RNG
        # otherwise, and a run resumed mid-epoch (which restores that RNG) would then draw other
        # augmentations than the uninterrupted run
        loader = DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                            prefetch_factor=self.prefetch, worker_init_fn=_one_thread,
                            generator=torch.Generator())
        return iter(loader)


def _next_chunk(chunks):
    """The next chunk; a DataError raised in a DataLoader worker (which torch re-raises with the
    worker's traceback in its message) becomes the worker's own one-line message again."""
    try:
        return next(chunks)
    except DataError as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        if len(lines) <= 1:
            raise
        last = lines[-1]
        raise DataError(last.split("Error: ", 1)[1] if last.startswith("vistrain.") else last) from None


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # one decode per process: no oversubscription


def chunk_start(lengths: list[int], chunk: int, g: int, q: int) -> int:
    """Stream position of the first sample of chunk ``q`` of sub-stream ``g`` (sub-streams of
    ``lengths`` samples, their chunks taken round-robin).

    Example:
        >>> chunk_start([3, 2], 2, 0, 1), chunk_start([3, 2], 2, 1, 0)
        (4, 2)
    """
    before = sum(min(n, q * chunk) for n in lengths)
    return before + sum(min(chunk, max(0, n - q * chunk)) for n in lengths[:g])


def _segments(ids: list[int], cum: list[int], a: int, b: int) -> list[tuple[int, int, int]]:
    """Positions ``[a, b)`` of the sequence of shards ``ids`` (``cum``: their cumulative sample
    counts), wrapping round at the end, as ``(shard, first, stop)`` pieces.

    Example:
        >>> _segments([5, 7], [0, 3, 5], 2, 7)
        [(5, 2, 3), (7, 0, 2), (5, 0, 2)]
    """
    total, out = cum[-1], []
    while a < b:
        off = a % total
        k = bisect_right(cum, off) - 1
        take = min(b - a, cum[k + 1] - off)
        out.append((ids[k], off - cum[k], off - cum[k] + take))
        a += take
    return out


class BufferOrder:
    """The order in which positions ``0 .. n-1`` leave a shuffle buffer of ``k`` slots.

    The buffer fills with the first ``k`` positions; then each step emits a random slot and puts
    the next position there; at the end the rest leaves in random order.  ``k = 0``: no shuffle.
    ``read`` counts the positions that entered, ``buffer`` holds those not yet emitted.
    """

    def __init__(self, n: int, k: int, rng: np.random.Generator):
        self.n, self.k, self.rng = n, k, rng
        self.read, self.buffer, self._draws = 0, [], iter(())
        self._tail: list[int] | None = None

    def next(self) -> int:
        if self.k == 0:
            self.read += 1
            return self.read - 1
        while len(self.buffer) < self.k and self.read < self.n:
            self.buffer.append(self.read)
            self.read += 1
        if self.read < self.n:
            i = self._draw()
            out, self.buffer[i] = self.buffer[i], self.read
            self.read += 1
            return out
        if self._tail is None:
            self._tail = [self.buffer[i] for i in self.rng.permutation(len(self.buffer))][::-1]
        out = self._tail.pop()
        self.buffer.remove(out)
        return out

    def _draw(self) -> int:
        i = next(self._draws, None)
        if i is None:  # random slots drawn 1,024 at a time: one Generator call each is slow
            self._draws = iter(self.rng.integers(0, self.k, 1024).tolist())
            i = next(self._draws)
        return i


class _ShardStream(IterableDataset):
    """Chunks ``(positions int64 (k,), x uint8 (k, C, S, S), y int64 (k,))`` of this worker's
    sub-streams; positions below ``read`` and not in ``keep`` are skipped without decoding
    (already emitted before a resume)."""

    def __init__(self, owner: ShardBatches, read: int, keep: set[int]):
        index = owner.index
        self.paths = [str(s.path) for s in index.shards]
        self.sha256 = [s.sha256 for s in index.shards]
        # the labels come from index.json (what counts, class weights and splits use); a
        # shard's .cls members are checked against them, so the two can never silently differ
        self.shard_labels = [np.asarray(index.labels[a:a + s.samples], np.int64)
                             for a, s in zip(_starts(index), index.shards)]
        self.seeks = [(s.seek_every, s.offsets) for s in index.shards]
        self.shard_parts = [index.shard_parts(k) for k in range(len(index.shards))]
        self.plan, self.chunk, self.part = owner.plan(), owner.chunk, owner.part
        self.lengths = [sum(b - a for _, a, b in segs) for segs in self.plan]
        self.size, self.channels, self.decode = owner.size, owner.channels, owner.decode
        self.read, self.keep = read, keep

    def __iter__(self):
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info else (0, 1)
        mine = [g for g in range(len(self.plan)) if g % nw == w]
        sources = {g: self._stream_chunks(g) for g in mine}
        for q in count():
            live = [g for g in mine if self.lengths[g] > q * self.chunk]
            if not live:
                return
            for g in live:
                out = next(sources[g])
                if len(out[0]):
                    yield out

    def _chunk_start(self, g: int, q: int) -> int:
        return chunk_start(self.lengths, self.chunk, g, q)

    def _stream_chunks(self, g: int):
        """One chunk (possibly empty after a resume) per ``chunk`` samples of sub-stream ``g``."""
        pos, xs, ys, start = [], [], [], 0
        for i, sample in enumerate(self._samples(g)):
            q, j = divmod(i, self.chunk)
            if j == 0:
                start = self._chunk_start(g, q)
            p = start + j
            if p >= self.read or p in self.keep:
                pos.append(p)
                xs.append(_decoded(self.decode, sample))
                ys.append(sample[1])
            if j == self.chunk - 1 or i == self.lengths[g] - 1:
                yield _pack(pos, xs, ys, self.channels, self.size)
                pos, xs, ys = [], [], []

    def _samples(self, g: int):
        """``(image bytes, label, shard path)`` of sub-stream ``g``'s samples, in order.  A sample's
        part is the index's letter at its position in the shard (the tars need no ``.json``
        member).  A shard read from its start is hashed on the way and checked against its
        sha256 when its segment ends; damage of any kind is a one-line :class:`DataError`."""
        for shard, first, stop in self.plan[g]:
            try:
                yield from self._segment(shard, first, stop)
            except DataError:
                raise
            except (OSError, ValueError, EOFError, zlib.error, KeyError, IndexError) as err:
                raise DataError(damaged(self.paths[shard], err)) from None

    def _segment(self, shard: int, first: int, stop: int):
        """The samples ``first .. stop - 1`` of ``part`` in ``shard`` (see :meth:`_samples`)."""
        code = part_code(self.part) if self.part else None
        path, letters, labels = self.paths[shard], self.shard_parts[shard], self.shard_labels[shard]
        offset, i, j = self._seek(shard, first)
        with open_shard(path, offset, sha256=self.sha256[shard]) as fh:
            for sample in stream_samples(fh):
                if j >= stop:
                    break
                if i >= len(letters):
                    raise DataError(f"{path}: more samples than index.json lists; "
                                    "the shards changed since it was written: pack the data again")
                i += 1
                if sample["cls"] != labels[i - 1]:
                    raise DataError(f"{path}: sample {sample['key']} has class {sample['cls']} in the shard "
                                    f"but {labels[i - 1]} in index.json; the index and the shard disagree: "
                                    "pack the data again with `vistrain pack`")
                if code is not None and letters[i - 1] != code:
                    continue
                if j >= first:
                    if "image" not in sample:
                        raise DataError(f"{path}: sample {sample['key']} has no image member; "
                                        "pack the data again with `vistrain pack`")
                    yield sample["image"], sample["cls"], path
                j += 1
        if j < stop:
            raise DataError(f"{path}: {j} samples where index.json lists {stop}; the shard is truncated "
                            "or changed: pack the data again with `vistrain pack`")

    def _seek(self, shard: int, first: int) -> tuple[int, int, int]:
        """``(byte offset, sample number there, samples of part before it)``: the last seek point
        at or before the ``first``-th sample of ``part`` in ``shard`` (0, 0, 0 without seek
        points)."""
        every, offsets = self.seeks[shard]
        if not every or not offsets or first == 0:
            return 0, 0, 0
        letters = self.shard_parts[shard]
        code = part_code(self.part) if self.part else None
        raw = first if code is None else _nth(letters, code, first)
        k = min(raw // every, len(offsets) - 1)
        before = k * every if code is None else letters.count(code, 0, k * every)
        return offsets[k], k * every, before


def _nth(letters: str, code: str, n: int) -> int:
    """Index in ``letters`` of the ``n``-th (from 0) occurrence of ``code``."""
    i = -1
    for _ in range(n + 1):
        i = letters.index(code, i + 1)
    return i


def _pack(pos, xs, ys, channels: int, size: int):
    x = np.stack(xs) if xs else np.empty((0, channels, size, size), np.uint8)
    return (torch.as_tensor(np.asarray(pos, np.int64)), torch.from_numpy(x),
            torch.as_tensor(np.asarray(ys, np.int64)))


def _starts(index: ShardIndex) -> list[int]:
    """Position of each shard's first sample in ``index.labels``."""
    return [s.first_key - index.shards[0].first_key for s in index.shards]


def damaged(path, err: BaseException) -> str:
    """The one-line message of a shard whose bytes cannot be parsed or decoded."""
    reason = " ".join(str(err).split())[:100]
    return (f"{path}: damaged shard ({type(err).__name__}: {reason}); "
            "pack the data again with `vistrain pack`")


def _decoded(decode, sample) -> np.ndarray:
    """``decode(image bytes)``, a one-line :class:`DataError` naming the shard if it fails."""
    try:
        return decode(sample[0])
    except Exception as err:  # any failure of Pillow's decoders on damaged bytes: name the shard
        raise DataError(damaged(sample[2], err)) from None


def tar_samples(path, offset: int = 0):
    """Yield ``{"key", "cls": int, "json": dict, "image": bytes}`` per sample of one shard from
    byte ``offset`` (a seek point of index.json) on, reading the tar as a stream (one sample in
    memory).  ``path``: a local ``.tar``/``.tar.gz`` or an fsspec URL (opened here, so in the
    worker that reads it); ``json`` is ``{}`` without a ``.json`` member (vistrain's shards since
    format version 2); samples without ``.cls`` are skipped, as :func:`scan_shards` counts them."""
    with open_shard(path, offset) as fh:
        yield from stream_samples(fh)


def stream_samples(fh):
    """The samples of :func:`tar_samples` out of an open tar stream ``fh``."""
    sample: dict = {}
    for name, data in tar_members(fh):
        key, _, ext = name.rpartition("/")[2].partition(".")
        if sample and key != sample["key"]:
            if "cls" in sample:
                yield sample
            sample = {}
        sample.setdefault("key", key)
        sample.setdefault("json", {})
        if ext == "cls":
            sample["cls"] = int(data.decode().strip())
        elif ext == "json":
            sample["json"] = json.loads(data)
        elif ext.lower() in IMAGE_EXTS:
            sample["image"] = data
    if "cls" in sample:
        yield sample


def tar_members(fh):
    """Yield ``(name, bytes)`` of the regular files of a tar stream (ustar, pax and GNU long
    names), one at a time.  A small header parser instead of :mod:`tarfile`, whose per-member
    Python work costs as much as decoding a 32 px PNG.  Reads only (no seek): ``fh`` may be a
    decompressor or a network stream."""
    long_name = None
    while len(header := fh.read(512)) == 512 and header.strip(b"\0"):
        size = _octal(header[124:136])
        data = _read_at_most(fh, size)
        if len(data) < size:
            raise EOFError(f"the tar ends inside a member ({len(data)} of {size} bytes)")
        if size % 512:
            fh.read(-size % 512)
        kind = header[156:157]
        if kind in (b"x", b"L"):  # pax extended header / GNU long name: names the next member
            long_name = _long_name(kind, data)
            continue
        name = long_name or _ustar_name(header)
        long_name = None
        if kind in (b"0", b"\0", b"7"):
            yield name, data


def _read_at_most(fh, size: int) -> bytes:
    """``size`` bytes of ``fh`` (fewer at its end), read 1 MiB at a time: a damaged header may
    claim gigabytes, which one ``read(size)`` would allocate before finding the end."""
    if size <= 1 << 20:
        return fh.read(size)
    parts, left = [], size
    while left > 0 and (got := fh.read(min(left, 1 << 20))):
        parts.append(got)
        left -= len(got)
    return b"".join(parts)


def _octal(field: bytes) -> int:
    if field[:1] == b"\x80":  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if header[257:262] == b"ustar" else ""
    return f"{prefix}/{name}" if prefix else name


def _long_name(kind: bytes, data: bytes) -> str | None:
    if kind == b"L":
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")
    for record in data.decode("utf-8", "replace").splitlines():
        _, _, kv = record.partition(" ")
        if kv.startswith("path="):
            return kv[5:]
    return None


class SquareDecoder:
    """Picklable ``bytes -> (C, size, size)`` uint8: :func:`decode_square` with fixed settings."""

    def __init__(self, size: int, channels: int = 3, interpolation: str = "bicubic"):
        self.size, self.channels, self.interpolation = size, channels, interpolation

    def __call__(self, data: bytes) -> np.ndarray:
        return decode_square(data, self.size, self.channels, pil_interpolation(self.interpolation))


class PreprocessDecoder:
    """Picklable ``bytes -> (C, S, S)`` uint8: a run's :meth:`Preprocess.pixels` on the image
    bytes, the evaluation pixels the pixel cache would hold."""

    def __init__(self, pre):
        self.pre = pre

    def __call__(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as img:
            return self.pre.pixels(img).numpy()


def decode_square(data: bytes, size: int, channels: int = 3, resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """Image bytes -> ``(channels, size, size)`` uint8: shorter side to ``size``, centre crop.

    Example:
        >>> buf = io.BytesIO(); Image.new("L", (40, 20), 7).save(buf, "PNG")
        >>> a = decode_square(buf.getvalue(), 10); a.shape, int(a.max())
        ((3, 10, 10), 7)
    """
    img = to_rgb(Image.open(io.BytesIO(data)), grayscale=channels == 1)
    img = center_crop(resize_shorter_side(img, size, resample), size)
    arr = np.asarray(img, np.uint8)
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy()
