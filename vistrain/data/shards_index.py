"""The index of a WebDataset shard folder: what :func:`read_shard_index` returns.

A shard folder written by :func:`~vistrain.data.shards_write.write_shards` holds
``shard-000000.tar``, ``shard-000001.tar``, ... and ``index.json``.  The index says everything a
trainer needs before reading a single shard: class names, counts per class and per part
(train/val/test), the label and part of every sample (by key), and per shard its name, first key,
sample count, part counts, bytes and sha256.  Keys are 8-digit global sample numbers, contiguous
and in shard order: shard ``k`` holds keys ``first_key .. first_key + samples - 1``.

Shards without an index (a list of paths or a brace pattern such as
``shards/shard-{000000..000009}.tar``) are accepted too: when their folder has an ``index.json``
that lists them, it is used (restricted to those shards); otherwise each tar is read once (its
``.cls`` and ``.json`` members only, images are skipped) to learn the same facts.  Local paths
only: URLs (``s3://``, ``http://``, fsspec) are not supported.

Example:
    >>> expand_braces("s/shard-{000000..000002}.tar")
    ['s/shard-000000.tar', 's/shard-000001.tar', 's/shard-000002.tar']
    >>> part_code("val"), PART_CODES["e"]
    ('v', 'test')
"""
from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vistrain.errors import DataError

FORMAT = "vistrain-webdataset"
VERSION = 1
INDEX = "index.json"
PARTS = ("train", "val", "test")
PART_CODES = {"t": "train", "v": "val", "e": "test"}   # one letter per sample in index.json
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp")


def part_code(part: str) -> str:
    """The one-letter code of ``part`` in the index's ``parts`` string."""
    return {v: k for k, v in PART_CODES.items()}[part]


@dataclass
class ShardInfo:
    """One tar file: ``path``, its ``samples`` (keys ``first_key ..``), samples per part, bytes, sha256."""
    path: Path
    samples: int
    first_key: int = 0
    parts: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    sha256: str | None = None
    offsets: list[int] = field(default_factory=list)   # byte offset of every seek_every-th sample
    seek_every: int = 0

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ShardIndex:
    """What a shard folder holds, read from ``index.json`` (or from the shards themselves).

    ``labels[k]`` / ``parts[k]`` are the class index / part (``"train"|"val"|"test"``) of the
    sample with key ``k``, relative to ``first_key`` of the first shard of ``shards``;
    ``meta`` is the index document without its per-sample tables (``sha256``, ``labels``,
    ``parts``) and shard list (empty when built from the shards).
    """
    root: Path | None
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


def is_shard_folder(path) -> bool:
    """True when ``path`` is a folder with a vistrain shard ``index.json``."""
    try:
        doc = json.loads((Path(path) / INDEX).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


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
    """The :class:`ShardIndex` of a shard folder, of a list of shard paths, or of a brace pattern.

    Raises:
        DataError: no such folder or shard, or an index of another format or version.
    """
    if isinstance(source, ShardIndex):
        return source
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return _from_document(Path(source), _load_index(Path(source)))
    paths = [Path(p) for p in (expand_braces(str(source)) if isinstance(source, (str, Path)) else source)]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        raise DataError(f"{missing[0] if missing else source}: no such shard file; give a shard folder "
                        "(with index.json), a list of .tar files or a pattern like shard-{000000..000009}.tar")
    folder = paths[0].parent
    if all(p.parent == folder for p in paths) and is_shard_folder(folder):
        return _subset(_from_document(folder, _load_index(folder)), paths)
    return scan_shards(paths)


def _load_index(folder: Path) -> dict:
    try:
        doc = json.loads((folder / INDEX).read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: no {INDEX}; give a folder written by `vistrain pack`, "
                        "or the shard files themselves") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{folder / INDEX}: unreadable ({err}); pack the data again") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise DataError(f"{folder / INDEX}: not a {FORMAT} index of version {VERSION}; "
                        "pack the data again with this vistrain")
    return doc


def _from_document(folder: Path, doc: dict) -> ShardIndex:
    shards = [ShardInfo(folder / s["name"], s["samples"], s["first_key"], dict(s["parts"]),
                        s["bytes"], s["sha256"], s.get("offsets", []), s.get("seek_every", 0))
              for s in doc["shards"]]
    # the per-file sha256 table is O(samples) strings: left out of ``meta`` (read it from the
    # file when needed), so a loader and its forked workers do not carry it
    meta = {k: v for k, v in doc.items() if k not in ("sha256", "labels", "parts", "shards")}
    return ShardIndex(folder, list(doc["classes"]), shards, list(doc["labels"]), doc["parts"], meta)


def _subset(index: ShardIndex, paths: list[Path]) -> ShardIndex:
    """``index`` restricted to the shards ``paths`` (in the order given)."""
    by_name = {s.name: s for s in index.shards}
    unknown = [p for p in paths if p.name not in by_name]
    if unknown:
        raise DataError(f"{unknown[0]}: not listed in {index.root / INDEX}; pack the data again")
    shards, labels, parts = [], [], []
    for p in paths:
        s = by_name[p.name]
        a = s.first_key - index.shards[0].first_key
        labels += index.labels[a:a + s.samples]
        parts.append(index.parts[a:a + s.samples])
        shards.append(ShardInfo(s.path, s.samples, len(labels) - s.samples, s.parts, s.bytes,
                                s.sha256, s.offsets, s.seek_every))
    return ShardIndex(index.root, index.classes, shards, labels, "".join(parts), index.meta)


def scan_shards(paths: list[Path]) -> ShardIndex:
    """Learn labels, parts and class names by reading each shard's ``.cls``/``.json`` members."""
    shards, labels, parts, names = [], [], [], {}
    for p in paths:
        first = len(labels)
        for meta, label in _sample_labels(p):
            labels.append(label)
            parts.append(part_code(meta.get("part", "train")))
            if "class" in meta:
                names[label] = meta["class"]
        own = Counter(parts[first:])
        shards.append(ShardInfo(p, len(labels) - first, first, {PART_CODES[k]: n for k, n in own.items()},
                                p.stat().st_size))
    n_classes = max(labels, default=-1) + 1
    classes = [names.get(i, str(i)) for i in range(n_classes)]
    return ShardIndex(None, classes, shards, labels, "".join(parts))


def _sample_labels(path: Path):
    """``(json dict, class index)`` of each sample of one tar, images not decoded."""
    with tarfile.open(path, "r|") as tar:
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
