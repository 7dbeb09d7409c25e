"""The index of a WebDataset shard folder: what :func:`read_shard_index` returns.

A shard folder written by :func:`~vistrain.data.shards.write.write_shards` holds
``shard-000000.tar`` (or ``shard-000000.tar.gz``), ``shard-000001.tar``, ... and ``index.json``.
The index says everything a trainer needs before reading a single shard: class names, counts per
class and per part (train/val/test), the label, part and source file of every sample (by key), and
per shard its name, first key, sample count, part counts, bytes, sha256 and seek offsets.  Keys
are 8-digit global sample numbers, contiguous and in shard order: shard ``k`` holds keys
``first_key .. first_key + samples - 1``.  A sample is two tar members, ``KEY.cls`` and the image
(``KEY.png`` / ``KEY.jpg``): the standard WebDataset minimum (version 1 also had ``KEY.json``;
such folders are still read).

Compressed shards (``.tar.gz``) are one gzip stream with a zlib *full flush* at every seek point:
the recorded offset is a byte-aligned deflate block that needs no earlier data, so a reader starts
there with raw inflate, while :mod:`gzip`, ``tarfile`` ``r|gz`` and webdataset read the file as
an ordinary ``.tar.gz`` (they stop after the first member of concatenated gzip members, so the
shards are not written that way).

Sources are local paths or fsspec URLs (``s3://bucket/shards/``, ``https://host/shards/``,
``file:///abs/shards``, ``memory://shards``; the protocol's package, e.g. s3fs, must be
installed): a folder with ``index.json``, a list of shard paths/URLs, or a brace pattern such as
``shards/shard-{000000..000009}.tar``.  For a list or pattern whose folder has an ``index.json``
listing them, the index is used (restricted to those shards); otherwise each tar is read once
(its ``.cls`` and ``.json`` members only, images skipped): without ``.json`` members the classes
are numbered and every sample is ``train``.  Local files are opened with plain :func:`open`.

Example:
    >>> expand_braces("s/shard-{000000..000002}.tar")
    ['s/shard-000000.tar', 's/shard-000001.tar', 's/shard-000002.tar']
    >>> part_code("val"), PART_CODES["e"]
    ('v', 'test')
    >>> is_url("memory://shards"), is_url("/data/shards"), is_shard_source(["a.tar", "b.tar.gz"])
    (True, False, True)
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vistrain.errors import DataError

FORMAT = "vistrain-webdataset"
VERSION = 2                       # 2: no .json member, files listed in index.json, optional gzip
READ_VERSIONS = (1, 2)
INDEX = "index.json"
PARTS = ("train", "val", "test")
PART_CODES = {"t": "train", "v": "val", "e": "test"}   # one letter per sample in index.json
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+(://|::)")   # two letters at least: never C:\


def part_code(part: str) -> str:
    """The one-letter code of ``part`` in the index's ``parts`` string."""
    return {v: k for k, v in PART_CODES.items()}[part]


@dataclass
class ShardInfo:
    """One tar file: ``path`` (a URL string for fsspec sources), its ``samples`` (keys
    ``first_key ..``), samples per part, bytes, sha256, seek offsets."""
    path: Path | str
    samples: int
    first_key: int = 0
    parts: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    sha256: str | None = None
    offsets: list[int] = field(default_factory=list)   # byte offset of every seek_every-th sample
    seek_every: int = 0

    @property
    def name(self) -> str:
        return _name(self.path)


@dataclass
class ShardIndex:
    """What a shard folder holds, read from ``index.json`` (or from the shards themselves).

    ``labels[k]`` / ``parts[k]`` are the class index / part (``"train"|"val"|"test"``) of the
    sample with key ``k``, relative to ``first_key`` of the first shard of ``shards``;
    ``meta`` is the index document without its per-sample tables (``sha256``, ``files``,
    ``labels``, ``parts``) and shard list (empty when built from the shards).  ``root`` is the
    folder (a URL string for fsspec sources; None when built from the shards).
    """
    root: Path | str | None
    classes: list[str]
    shards: list[ShardInfo]
    labels: list[int]
    parts: str                      # one letter of PART_CODES per sample, in key order
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(s.samples for s in self.shards)

    def counts(self, part: str | None = None) -> dict[str, int]:
        """Samples per class name (of one part, or all)."""
        code = part_code(part) if part else None
        c = Counter(y for y, p in zip(self.labels, self.parts) if code is None or p == code)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def part_counts(self) -> dict[str, int]:
        """Samples per part, e.g. ``{"train": 1400, "val": 300, "test": 300}``."""
        c = Counter(self.parts)
        return {PART_CODES[k]: c.get(k, 0) for k in PART_CODES}

    def shard_parts(self, k: int) -> str:
        """The part letters of shard ``k``'s samples, in order."""
        a = self.shards[k].first_key - self.shards[0].first_key
        return self.parts[a:a + self.shards[k].samples]

    def shard_part_counts(self, part: str | None) -> list[int]:
        """Samples of ``part`` (None: all) in each shard, in shard order."""
        return [s.samples if part is None else s.parts.get(part, 0) for s in self.shards]


# ---- paths and URLs ---------------------------------------------------------------------------
def is_url(source) -> bool:
    """True for an fsspec URL string (``s3://...``, ``file:///...``, ``simplecache::s3://...``)."""
    return isinstance(source, str) and _URL.match(source) is not None


def is_shard_name(source) -> bool:
    """True when ``source`` ends like a shard file: ``.tar``, ``.tar.gz`` or ``.tgz``."""
    return str(source).lower().endswith(SHARD_SUFFIXES)


def is_gzip_name(source) -> bool:
    return str(source).lower().endswith((".gz", ".tgz"))


def _name(path) -> str:
    return path.name if isinstance(path, Path) else str(path).rstrip("/").rpartition("/")[2]


def _join(folder, name: str):
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else Path(folder) / name


def _parent(path):
    return path.rstrip("/").rpartition("/")[0] if is_url(path) else Path(path).parent


def url_fs(url: str):
    """``(fsspec filesystem, path)`` of ``url``.

    Raises:
        DataError: fsspec, or the package of the URL's protocol (s3fs, gcsfs, ...), is not
            installed, or the protocol is unknown.
    """
    try:
        import fsspec  # here, not at the top: local paths never pay for it
        from fsspec.registry import known_implementations
    except ImportError:
        raise DataError(f"{url}: URLs need fsspec; pip install fsspec, or give a local path") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        proto = url.split("::")[-1].split("://")[0]
        spec = known_implementations.get(proto, {})
        pkg = spec.get("class", proto).split(".")[0]
        raise DataError(f"{url}: the {proto!r} filesystem needs a package that is not installed "
                        f"({err}); pip install {pkg}") from None
    except ValueError as err:
        raise DataError(f"{url}: {err}; give a local path or an fsspec URL "
                        "(s3://, gs://, https://, file://, memory:// ...)") from None


@contextmanager
def open_shard(path, offset: int = 0, sha256: str | None = None):
    """A binary stream of ``path``'s tar bytes from ``offset`` (a seek point of index.json: a
    member header, or for ``.tar.gz`` a full-flush point of the compressed file), decompressed for
    ``.tar.gz``.  Local files: plain :func:`open`; URLs: fsspec, seeking where the filesystem can,
    else reading from 0 and skipping.

    ``sha256`` (read from offset 0 only): the file's bytes are hashed as they are read, and when
    the ``with`` block ends normally (also after a ``break``) the rest of the file is read and the
    digest compared: streaming pays one sha256 pass over bytes it reads anyway.

    Raises:
        DataError: no such file, a directory, the URL cannot be opened, or (with ``sha256``) the
            file's bytes differ from those packed (one line naming the shard, with the fix).
    """
    with _open_raw(path, offset) as fh:
        raw = _Hashing(fh) if sha256 and offset == 0 else fh
        yield _Inflate(raw, gzip_header=offset == 0) if is_gzip_name(path) else raw
        if raw is not fh:
            raw.verify(path, sha256)


class _Hashing(io.RawIOBase):
    """A read-only file that feeds every byte read from ``fh`` to a sha256."""

    def __init__(self, fh):
        self.fh, self.hash = fh, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.hash.update(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def verify(self, path, want: str) -> None:
        """Read the rest of the file, then compare its sha256 with ``want`` (DataError if not)."""
        while self.read(1 << 20):
            pass
        if self.hash.hexdigest() != want:
            raise DataError(f"{path}: damaged shard (its sha256 differs from the one in {INDEX}: "
                            "the file was changed after packing); pack the data again with `vistrain pack`")


@contextmanager
def _open_raw(path, offset: int):
    if not is_url(path):
        try:
            fh = open(path, "rb", buffering=1 << 20)
        except FileNotFoundError:
            raise DataError(f"{path}: no such shard; pack the data again or fix the path") from None
        except OSError as err:  # a directory, no permission, an I/O error
            raise DataError(f"{path}: cannot read the shard ({type(err).__name__}: {err.strerror or err}); "
                            "pack the data again with `vistrain pack`") from None
        with fh:
            fh.seek(offset)
            yield fh
        return
    fs, p = url_fs(path)
    try:
        fh = fs.open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such shard URL; check the URL (or pack the data again)") from None
    except OSError as err:
        raise DataError(f"{path}: cannot open ({type(err).__name__}: {err}); check the URL and "
                        "its credentials") from None
    with fh:
        # fsspec's memory filesystem hands every open() of a path the same BytesIO: sub-streams
        # of one shard would move each other's position, so read it through a view of our own
        view = _BufferView(fh.getbuffer()) if isinstance(fh, io.BytesIO) else None
        try:
            _seek_or_skip(view or fh, offset)
            yield view or fh
        finally:
            if view is not None:
                view.close()


def _seek_or_skip(fh, offset: int) -> None:
    """Move a just-opened file to ``offset``: seek, or read and drop (streaming HTTP)."""
    if not offset:
        return
    try:
        fh.seek(offset)
        return
    except (ValueError, OSError, io.UnsupportedOperation):
        pass
    while offset > 0:
        got = fh.read(min(offset, 1 << 20))
        if not got:
            break
        offset -= len(got)


class _BufferView(io.RawIOBase):
    """A read-only file over a buffer, with its own position."""

    def __init__(self, buf):
        self.buf, self.pos = memoryview(buf), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = max(0, pos + (0, self.pos, len(self.buf))[whence])
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n is None or n < 0 else min(len(self.buf), self.pos + n)
        out = bytes(self.buf[self.pos:end])
        self.pos = max(self.pos, end)
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.buf.release()  # the BytesIO can be written again
        super().close()


def read_bytes(path) -> bytes:
    """The bytes of a local file or a URL (``FileNotFoundError`` when missing)."""
    if not is_url(path):
        return Path(path).read_bytes()
    fs, p = url_fs(path)
    with fs.open(p, "rb") as fh:
        return fh.read()


def _size(path) -> int:
    if not is_url(path):
        return Path(path).stat().st_size
    fs, p = url_fs(path)
    return int(fs.size(p) or 0)


class _Inflate(io.RawIOBase):
    """The decompressed bytes of a gzip stream read from a file object.

    From the file's start (``gzip_header``): gzip members, one after another.  From a seek point
    in the middle: raw deflate up to the member's end, whose 8-byte trailer is skipped; any
    later members are read as gzip.
    """

    def __init__(self, fh, gzip_header: bool = True):
        self.fh, self.raw_mode = fh, not gzip_header
        self.z = zlib.decompressobj(31 if gzip_header else -15)
        self.buf, self.pos, self.done = bytearray(), 0, False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) - self.pos < n) and not self.done:
            self._fill()
        end = len(self.buf) if n < 0 else self.pos + n
        out = bytes(self.buf[self.pos:end])
        self.pos += len(out)
        if self.pos > 1 << 20:  # drop what was read, keep the buffer small
            del self.buf[:self.pos]
            self.pos = 0
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def _fill(self) -> None:
        data = self.fh.read(1 << 16)
        if not self.z.eof:
            if not data:
                self.done = True
                return
            self.buf += self.z.decompress(data)
            return
        rest = self.z.unused_data + data          # past a member's end: trailer, next member
        if self.raw_mode:
            while len(rest) < 8 and (more := self.fh.read(1 << 16)):
                rest += more
            rest, self.raw_mode = rest[8:], False
        while 0 < len(rest) < 2 and (more := self.fh.read(1 << 16)):
            rest += more
        if not rest.startswith(b"\x1f\x8b"):   # the end (or padding after the last member)
            self.done = True
            return
        self.z = zlib.decompressobj(31)
        self.buf += self.z.decompress(rest)


# ---- detecting and reading an index -------------------------------------------------------------
def is_shard_folder(path) -> bool:
    """True when ``path`` (a folder or a URL folder) has a vistrain shard ``index.json``."""
    if isinstance(path, (list, tuple, ShardIndex)):
        return False
    try:
        doc = json.loads(read_bytes(_join(str(path) if is_url(str(path)) else path, INDEX)))
    except (OSError, ValueError, DataError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def is_shard_source(source) -> bool:
    """True when ``source`` names shards rather than an image folder: a :class:`ShardIndex`, a
    folder or URL folder with a vistrain ``index.json``, a ``.tar``/``.tar.gz`` path or URL, a
    brace pattern of them, or a list of them.  A URL whose fsspec filesystem is not installed
    counts too (images are never read from URLs): :func:`read_shard_index` then names the package.
    """
    if isinstance(source, ShardIndex):
        return True
    if isinstance(source, (list, tuple)):
        return bool(source) and all(is_shard_name(s) for s in source)
    text = str(source)
    if is_shard_name(text) or ("{" in text and all(is_shard_name(p) for p in expand_braces(text))):
        return True
    if is_url(text):
        try:
            url_fs(text)
        except DataError:
            return True
    return is_shard_folder(text if is_url(text) else source)


def expand_braces(pattern: str) -> list[str]:
    """``a{000..002}b`` -> ``['a000b', 'a001b', 'a002b']`` (zero padding kept), ``{x,y}`` lists
    too, several groups multiply; uses ``braceexpand`` when installed."""
    try:
        from braceexpand import braceexpand  # optional: the full bash syntax
        return list(braceexpand(pattern))
    except ImportError:
        pass
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, tail, body = pattern[:m.start()], pattern[m.end():], m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.groups()
        width = len(a) if a.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        items = body.split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def read_shard_index(source) -> ShardIndex:
    """The :class:`ShardIndex` of a shard folder, a list of shard paths, or a brace pattern; each
    may be local or an fsspec URL (``s3://bucket/shards/``, ``https://host/shard-{0..9}.tar``).

    Raises:
        DataError: no such folder or shard, an index of another format or version, or a URL
            protocol whose package is not installed.
    """
    if isinstance(source, ShardIndex):
        return source
    if is_url(source) and "{" not in source and not is_shard_name(source):
        root = source.rstrip("/")
        url_fs(root)  # a missing protocol package: say so before anything else
        return _from_document(root, _load_index(root))
    if isinstance(source, (str, Path)) and not is_url(source) and Path(source).is_dir():
        return _from_document(Path(source), _load_index(Path(source)))
    items = expand_braces(str(source)) if isinstance(source, (str, Path)) else list(source)
    paths = [str(p) if is_url(str(p)) else Path(p) for p in items]
    missing = [p for p in paths if isinstance(p, Path) and not p.is_file()]
    if not paths or missing:
        raise DataError(f"{missing[0] if missing else source}: no such shard file; give a shard folder "
                        "(with index.json), a list of .tar files or a pattern like shard-{000000..000009}.tar")
    folder = _parent(paths[0])
    if all(_parent(p) == folder for p in paths) and is_shard_folder(folder):
        return _subset(_from_document(folder, _load_index(folder)), paths)
    return scan_shards(paths)


def _load_index(folder) -> dict:
    where = _join(folder, INDEX)
    try:
        doc = json.loads(read_bytes(where))
    except FileNotFoundError:
        raise DataError(f"{folder}: no {INDEX}; give a folder written by `vistrain pack`, "
                        "or the shard files themselves") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: unreadable ({err}); pack the data again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") not in READ_VERSIONS:
        raise DataError(f"{where}: not a {FORMAT} index of version "
                        f"{' or '.join(map(str, READ_VERSIONS))}; pack the data again with this vistrain")
    return doc


def _from_document(folder, doc: dict) -> ShardIndex:
    try:
        index = _index_of(folder, doc)
        _check_index(index)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        reason = " ".join(str(err).split())[:100]
        raise DataError(f"{_join(folder, INDEX)}: damaged or edited ({type(err).__name__}: {reason}); "
                        "pack the data again with `vistrain pack`") from None
    return index


def _check_index(index: ShardIndex) -> None:
    """ValueError unless the index's tables agree with each other: one label and one part
    letter per sample, labels naming classes, keys contiguous, part counts adding up."""
    n, k = len(index), len(index.classes)
    if len(index.labels) != n or len(index.parts) != n:
        raise ValueError(f"{len(index.labels)} labels and {len(index.parts)} parts for {n} samples")
    if any(not isinstance(y, int) or not 0 <= y < k for y in index.labels):
        raise ValueError(f"a label outside 0..{k - 1}")
    if set(index.parts) - set(PART_CODES):
        raise ValueError(f"part letters other than {''.join(PART_CODES)}")
    first = index.shards[0].first_key if index.shards else 0
    for k, s in enumerate(index.shards):
        own = Counter(index.shard_parts(k))
        if s.first_key != first or any(s.parts.get(p, 0) != own.get(c, 0) for c, p in PART_CODES.items()):
            raise ValueError(f"shard {s.name}: keys or part counts do not add up")
        if s.sha256 is not None and not isinstance(s.sha256, str):
            raise ValueError(f"shard {s.name}: sha256 is not a string")
        if s.offsets and (s.seek_every <= 0 or s.offsets[0] != 0 or sorted(set(s.offsets)) != s.offsets
                          or len(s.offsets) != -(-s.samples // s.seek_every)):
            raise ValueError(f"shard {s.name}: seek offsets do not fit its samples")
        first += s.samples


def _index_of(folder, doc: dict) -> ShardIndex:
    shards = [ShardInfo(_join(folder, s["name"]), s["samples"], s["first_key"], dict(s["parts"]),
                        s["bytes"], s["sha256"], s.get("offsets", []), s.get("seek_every", 0))
              for s in doc["shards"]]
    # the per-file tables are O(samples) strings: left out of ``meta`` (read them from the file
    # when needed), so a loader and its forked workers do not carry them
    meta = {k: v for k, v in doc.items() if k not in ("sha256", "files", "labels", "parts", "shards")}
    return ShardIndex(folder, list(doc["classes"]), shards, list(doc["labels"]), doc["parts"], meta)


def _subset(index: ShardIndex, paths: list) -> ShardIndex:
    """``index`` restricted to the shards ``paths`` (in the order given)."""
    by_name = {s.name: s for s in index.shards}
    unknown = [p for p in paths if _name(p) not in by_name]
    if unknown:
        raise DataError(f"{unknown[0]}: not listed in {_join(index.root, INDEX)}; pack the data again")
    shards, labels, parts = [], [], []
    for p in paths:
        s = by_name[_name(p)]
        a = s.first_key - index.shards[0].first_key
        labels += index.labels[a:a + s.samples]
        parts.append(index.parts[a:a + s.samples])
        shards.append(ShardInfo(s.path, s.samples, len(labels) - s.samples, s.parts, s.bytes,
                                s.sha256, s.offsets, s.seek_every))
    return ShardIndex(index.root, index.classes, shards, labels, "".join(parts), index.meta)


def scan_shards(paths: list) -> ShardIndex:
    """Learn labels, parts and class names by reading each shard's ``.cls``/``.json`` members
    (without ``.json``: numbered classes, every sample ``train``)."""
    shards, labels, parts, names = [], [], [], {}
    for p in paths:
        first = len(labels)
        for meta, label in _guarded(p, _sample_labels(p)):
            labels.append(label)
            parts.append(part_code(meta.get("part", "train")))
            if "class" in meta:
                names[label] = meta["class"]
        own = Counter(parts[first:])
        shards.append(ShardInfo(p, len(labels) - first, first, {PART_CODES[k]: n for k, n in own.items()},
                                _size(p)))
    n_classes = max(labels, default=-1) + 1
    classes = [names.get(i, str(i)) for i in range(n_classes)]
    return ShardIndex(None, classes, shards, labels, "".join(parts))


def _guarded(path, samples):
    """``samples`` (a generator reading the shard ``path``), damage of any kind one line."""
    try:
        yield from samples
    except DataError:
        raise
    except (tarfile.TarError, OSError, ValueError, EOFError, zlib.error, KeyError, AttributeError) as err:
        reason = " ".join(str(err).split())[:100]
        raise DataError(f"{path}: damaged shard ({type(err).__name__}: {reason}); pack the data again "
                        "with `vistrain pack`") from None


def _sample_labels(path):
    """``(json dict, class index)`` of each sample of one tar, images not decoded."""
    with open_shard(path) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        key, meta, label = None, {}, None
        for m in tar:
            if not m.isfile():
                continue
            k, _, ext = m.name.rpartition("/")[2].partition(".")
            if k != key and key is not None and label is not None:
                yield meta, label
                meta, label = {}, None
            key = k
            if ext in ("cls", "json"):
                data = tar.extractfile(m).read()
                if ext == "cls":
                    label = int(data.decode().strip())
                else:
                    meta = json.loads(data)
            tar.members.clear()  # streaming: keep no list of every member
        if key is not None and label is not None:
            yield meta, label
