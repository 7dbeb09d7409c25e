"""WebDataset shards: writing, the index, and the streaming loader (order, ranks, resume, memory)."""
from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vistrain.config import DataConfig
from vistrain.imageio.read import load_image
from vistrain.data.scan import scan_folder
from vistrain.data.shards.index import expand_braces, is_shard_folder, is_shard_source, read_shard_index
from vistrain.data.shards.stream import ShardBatches, decode_square, tar_samples
from vistrain.data.shards.write import write_shards
from vistrain.data.splits import make_parts
from vistrain.errors import DataError, VistrainError

CLASSES = ("ant", "bee", "cat")


def _make_folder(root: Path, n: int, side: int = 8, seed: int = 0) -> Path:
    """``n`` PNGs of random pixels (unique, so a sample is known by its pixels) in 3 classes;
    every 5th grey, every 7th RGBA with transparent pixels."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        if i % 5 == 0:
            img = Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), "L")
        elif i % 7 == 0:
            img = Image.fromarray(rng.integers(0, 256, (side, side, 4), dtype=np.uint8), "RGBA")
        else:
            img = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB")
        img.save(folder / f"{i:05d}.png")
    return root


def _expected(root: Path) -> dict[bytes, str]:
    """Decoded pixels (as load_image gives them, (3, S, S)) -> file name."""
    out = {}
    for p in sorted(root.rglob("*.png")):
        arr = np.asarray(load_image(p)).transpose(2, 0, 1)
        out[arr.tobytes()] = p.relative_to(root).as_posix()
    return out


@pytest.fixture(scope="module", params=["none", "gzip"])
def packed(tmp_path_factory, request):
    """151 images packed into shards of a few KB (several shards; .tar or .tar.gz), parts from
    make_parts."""
    base = tmp_path_factory.mktemp("shards")
    data = _make_folder(base / "data", 151)
    index = scan_folder(data)
    parts = make_parts(index, DataConfig(val_fraction=0.2, test_fraction=0.2))
    doc = write_shards(index, base / "out", parts=parts, shard_bytes=20_000 if request.param == "none" else 4_000,
                       workers=0, progress=False, compress=request.param)
    return data, base / "out", doc, parts, index


@pytest.fixture(scope="module", params=["none", "gzip"])
def one_shard(tmp_path_factory, request):
    """300 images in one shard: several seek points (every 64 samples) inside it."""
    base = tmp_path_factory.mktemp("one")
    data = _make_folder(base / "data", 300, seed=7)
    index = scan_folder(data)
    parts = make_parts(index, DataConfig(val_fraction=0.2, test_fraction=0.2))
    write_shards(index, base / "out", parts=parts, workers=0, progress=False, compress=request.param)
    return data, base / "out", request.param


def _shard_files(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*.tar*"))


def _collect(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all((xa == xb).all() and (ya == yb).all() for (xa, ya), (xb, yb) in zip(a, b))


def test_round_trip_pixels_equal_for_png(packed):
    data, out, doc, _, _ = packed
    expected = _expected(data)
    seen = []
    for x, y in ShardBatches(out, size=8, batch_size=16):
        for xi, yi in zip(x.numpy(), y.tolist()):
            name = expected[xi.tobytes()]          # bit-identical to load_image's pixels
            assert CLASSES[yi] == name.split("/")[0]
            seen.append(name)
    assert sorted(seen) == sorted(expected.values())
    suffix = ".tar.gz" if doc["compress"] == "gzip" else ".tar"
    assert {s["name"].partition(".")[2] for s in doc["shards"]} == {suffix[1:]} and len(doc["shards"]) > 2


def test_index_content(packed):
    data, out, doc, parts, index = packed
    on_disk = json.loads((out / "index.json").read_text())
    assert on_disk["format"] == "vistrain-webdataset" and on_disk["version"] == 2
    assert on_disk["compress"] in ("none", "gzip")
    assert on_disk["classes"] == list(CLASSES) and on_disk["samples"] == 151
    assert on_disk["counts"] == {"ant": 51, "bee": 50, "cat": 50}
    assert sum(sum(c.values()) for c in on_disk["part_counts"].values()) == 151
    for f, digest in on_disk["sha256"].items():
        assert hashlib.sha256((data / f).read_bytes()).hexdigest() == digest
    for s in on_disk["shards"]:
        tar = out / s["name"]
        assert tar.stat().st_size == s["bytes"]
        assert hashlib.sha256(tar.read_bytes()).hexdigest() == s["sha256"]
    assert on_disk["total_bytes"] == sum(s["bytes"] for s in on_disk["shards"])
    assert on_disk["source_bytes"] == sum(p.stat().st_size for p in data.rglob("*.png"))
    si = read_shard_index(out)
    assert len(si) == 151 and si.counts() == on_disk["counts"] and is_shard_folder(out)
    assert si.part_counts() == {p: len(ids) for p, ids in parts.items()}
    assert sorted(on_disk["files"]) == sorted(on_disk["sha256"]) and len(on_disk["files"]) == 151
    # a sample's members: KEY.cls, KEY.png (the webdataset minimum), key = 8 digits
    with tarfile.open(out / on_disk["shards"][0]["name"]) as tar:
        names = tar.getnames()[:4]
    assert [n.split(".")[1] for n in names] == ["cls", "png"] * 2 and len(names[0].split(".")[0]) == 8


def test_parts_equal_make_parts(packed):
    data, out, _, parts, index = packed
    want = {Path(index.paths[i]).relative_to(data).as_posix(): p for p, ids in parts.items() for i in ids}
    doc = json.loads((out / "index.json").read_text())
    got = {f: {"t": "train", "v": "val", "e": "test"}[c] for f, c in zip(doc["files"], doc["parts"])}
    assert got == want
    labels = [s["cls"] for shard in _shard_files(out) for s in tar_samples(shard)]
    assert labels == doc["labels"]
    assert [CLASSES[y] for y in labels] == [f.split("/")[0] for f in doc["files"]]
    expected = _expected(data)
    for part in ("train", "val", "test"):
        names = [expected[x.tobytes()] for xb, _ in ShardBatches(out, size=8, batch_size=32, part=part)
                 for x in xb.numpy()]
        assert sorted(names) == sorted(f for f, p in want.items() if p == part)


def test_shuffle_is_seeded_and_independent_of_workers(packed):
    out = packed[1]
    kw = dict(size=8, batch_size=16, shuffle=True, seed=3, buffer_size=40, streams=4, chunk=8)
    a = _collect(ShardBatches(out, num_workers=0, **kw))
    b = _collect(ShardBatches(out, num_workers=2, **kw))
    assert _same(a, b)
    other = ShardBatches(out, num_workers=0, **kw)
    other.set_epoch(1)
    c = _collect(other)
    assert not _same(a, c)
    assert sorted(x.tobytes() for xb, _ in a for x in xb.numpy()) == \
        sorted(x.tobytes() for xb, _ in c for x in xb.numpy())


def test_ranks_and_workers_cover_every_sample_once(packed):
    data, out = packed[0], packed[1]
    expected = _expected(data)
    seen, lengths = Counter(), []
    for rank in range(2):
        loader = ShardBatches(out, size=8, batch_size=10, shuffle=True, seed=1, rank=rank,
                              world_size=2, num_workers=2, streams=4, chunk=8, buffer_size=30)
        batches = _collect(loader)
        lengths.append((len(batches), len(loader)))
        seen.update(expected[x.tobytes()] for xb, _ in batches for x in xb.numpy())
    assert lengths[0] == lengths[1] == (8, 8)                    # 76 samples each: equal steps
    assert set(seen) == set(expected.values())
    assert sum(seen.values()) == 152 and sorted(seen.values())[-1] == 2  # one padding repeat


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume(packed, workers):
    out = packed[1]
    kw = dict(size=8, batch_size=8, shuffle=True, seed=5, buffer_size=25, streams=4, chunk=4,
              num_workers=workers)
    full = ShardBatches(out, **kw)
    full.set_epoch(2)
    want = _collect(full)
    interrupted = ShardBatches(out, **kw)
    interrupted.set_epoch(2)
    it = iter(interrupted)
    for _ in range(7):
        next(it)
    state = interrupted.state_dict()
    del it
    assert state == {"epoch": 2, "batches_done": 7}
    resumed = ShardBatches(out, **kw)
    resumed.load_state_dict(state)
    assert _same(_collect(resumed), want[7:])


def test_memory_is_bounded_by_buffer_not_data(tmp_path):
    held = []
    for n in (120, 480):
        data = _make_folder(tmp_path / f"d{n}", n, seed=n)
        write_shards(scan_folder(data), tmp_path / f"s{n}", shard_bytes=15_000, workers=0, progress=False)
        loader = ShardBatches(tmp_path / f"s{n}", size=8, batch_size=8, shuffle=True, buffer_size=20,
                              streams=4, chunk=4, num_workers=2)
        assert sum(len(y) for _, y in loader) == n
        held.append(loader.max_held)
    assert all(h <= 20 + (4 + 1) * 4 for h in held), held


def test_unreadable_file_skipped_and_listed(tmp_path):
    data = _make_folder(tmp_path / "data", 12)
    (data / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (data / "cat" / "empty.png").write_bytes(b"")
    doc = write_shards(scan_folder(data), tmp_path / "out", workers=0, progress=False)
    assert doc["samples"] == 12
    assert sorted(s["file"] for s in doc["skipped"]) == ["bee/broken.png", "cat/empty.png"]
    assert all(s["reason"] for s in doc["skipped"])


def test_overwrite_rules(tmp_path):
    data = _make_folder(tmp_path / "data", 9)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(VistrainError, match="not a shard folder"):
        write_shards(scan_folder(data), other, workers=0, progress=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep"
    out = tmp_path / "out"
    write_shards(scan_folder(data), out, workers=0, progress=False)
    with pytest.raises(VistrainError, match="overwrite=True"):  # a Python caller's spelling
        write_shards(scan_folder(data), out, workers=0, progress=False)
    write_shards(scan_folder(data), out, workers=0, progress=False, overwrite=True, seed=1)
    assert read_shard_index(out).meta["seed"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    with pytest.raises(VistrainError, match="inside the data folder"):
        write_shards(scan_folder(data), data / "shards", workers=0, progress=False)


def test_resize_jpeg_and_grey_channels(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(
                tmp_path / "data" / c / f"{i}.jpg", quality=90)
    doc = write_shards(scan_folder(tmp_path / "data"), tmp_path / "out", source_size=30, workers=0,
                       progress=False)
    assert doc["largest_shorter_side"] == 30 and doc["encoding"] == "auto"
    s = next(tar_samples(_shard_files(tmp_path / "out")[0]))
    assert Image.open(__import__("io").BytesIO(s["image"])).size == (45, 30)  # shorter side 30, JPEG
    x, _ = next(iter(ShardBatches(tmp_path / "out", size=16, batch_size=6, channels=1)))
    assert tuple(x.shape) == (6, 1, 16, 16)
    native = write_shards(scan_folder(tmp_path / "data"), tmp_path / "native", source_size=None,
                          workers=0, progress=False)   # untouched JPEGs are stored byte for byte
    assert native["total_bytes"] < 1.2 * native["source_bytes"] + 6 * 3 * 1024


def test_shard_lists_and_brace_patterns(packed):
    out, suffix = packed[1], packed[2]["shards"][0]["name"].partition(".")[2]
    files = _shard_files(out)
    pattern = str(out / f"shard-{{000000..{len(files) - 1:06d}}}.{suffix}")
    assert expand_braces(pattern) == [str(p) for p in files] and is_shard_source(pattern)
    assert len(read_shard_index(pattern)) == 151
    two = read_shard_index([files[1], files[0]])
    assert len(two) == sum(s.samples for s in two.shards) and two.shards[0].name == files[1].name
    bare = out.parent / "bare"
    bare.mkdir(exist_ok=True)
    for p in files:
        (bare / p.name).write_bytes(p.read_bytes())
    # no index.json: labels read from the shards; without .json members the classes are
    # numbered and every sample is train
    scanned = read_shard_index(sorted(bare.glob("shard-*")))
    assert scanned.classes == ["0", "1", "2"] and len(scanned) == 151
    assert scanned.labels == read_shard_index(out).labels and scanned.part_counts()["train"] == 151
    assert sum(len(y) for _, y in ShardBatches(scanned, size=8, batch_size=7, part="train")) == 151


def test_decode_square_centre_crop():
    import io
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out = decode_square(buf.getvalue(), 10, resample=Image.Resampling.NEAREST)
    assert out.shape == (3, 10, 10) and (out == 255).all()


def test_readable_by_webdataset(one_shard):
    """webdataset, tarfile ``r|gz`` and gzip read every sample: the .tar.gz is one gzip stream
    (both stop silently after the first of concatenated gzip members)."""
    wds = pytest.importorskip("webdataset")
    out = one_shard[1]
    urls = [str(p) for p in _shard_files(out)]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("png", "cls"))
    doc = json.loads((out / "index.json").read_text())
    assert len(samples) == 300 and [int(c) for _, c in samples] == doc["labels"]
    with tarfile.open(urls[0], "r|*") as tar:
        assert sum(1 for m in tar if m.name.endswith(".png")) == 300


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_reader_handles_long_names(tmp_path, fmt):
    import io
    from vistrain.data.shards.stream import tar_members
    name = "d" * 120 + "/00000001.json" if fmt != tarfile.USTAR_FORMAT else "d" * 90 + "/00000001.json"
    with tarfile.open(tmp_path / "t.tar", "w", format=fmt) as tar:
        for n, data in ((name, b"{}"), ("x/00000002.cls", b"7" * 700)):
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(tmp_path / "t.tar", "rb") as fh:
        assert list(tar_members(fh)) == [(name, b"{}"), ("x/00000002.cls", b"7" * 700)]


def test_seek_points_start_mid_shard(one_shard):
    data, out, compress = one_shard
    shard = read_shard_index(out).shards[0]
    assert shard.seek_every == 64 and len(shard.offsets) == 5 and shard.offsets[0] == 0
    everything = list(tar_samples(shard.path))
    for k, offset in enumerate(shard.offsets):
        assert [s["key"] for s in tar_samples(shard.path, offset)] == \
            [s["key"] for s in everything[64 * k:]]
    # 16 sub-streams of one shard: most start at a seek point inside it
    expected = _expected(data)
    for part in ("train", "val"):
        names = [expected[x.tobytes()] for xb, _ in
                 ShardBatches(out, size=8, batch_size=32, part=part, streams=16, num_workers=0) for x in xb.numpy()]
        doc = json.loads((out / "index.json").read_text())
        want = [f for f, c in zip(doc["files"], doc["parts"]) if c == part[0]]
        assert sorted(names) == sorted(want)


def test_compress_auto_and_size(tmp_path):
    """Small images: auto is gzip, the shards close to the files' bytes; large ones: plain tar."""
    data = _make_folder(tmp_path / "small", 200, side=32)
    doc = write_shards(scan_folder(data), tmp_path / "s", workers=0, progress=False)
    assert doc["compress"] == "gzip" and doc["shards"][0]["name"].endswith(".tar.gz")
    assert doc["total_bytes"] <= 1.2 * doc["source_bytes"], (doc["total_bytes"], doc["source_bytes"])
    big = _make_folder(tmp_path / "big", 6, side=128)   # 48 KB PNGs of noise
    assert write_shards(scan_folder(big), tmp_path / "b", workers=0, progress=False)["compress"] == "none"
    with pytest.raises(VistrainError, match="compress"):
        write_shards(scan_folder(big), tmp_path / "c", workers=0, progress=False, compress="zstd")


def _memory_copy(out: Path, root: str) -> str:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for p in out.iterdir():
        with fs.open(f"{root}/{p.name}", "wb") as fh:
            fh.write(p.read_bytes())
    return f"memory://{root}"


@pytest.mark.parametrize("workers", [0, 2])
def test_fsspec_urls_give_the_same_batches(one_shard, workers):
    out, compress = one_shard[1], one_shard[2]
    kw = dict(size=8, batch_size=16, part="train", shuffle=True, seed=2, buffer_size=30, streams=4,
              chunk=8, num_workers=workers)
    want = _collect(ShardBatches(out, **kw))
    mem = _memory_copy(out, f"/vt-{compress}-{workers}")
    names = [p.name for p in _shard_files(out)]
    for source in (mem, mem + "/", out.absolute().as_uri(), [f"{mem}/{n}" for n in names],
                   f"{mem}/shard-{{000000..000000}}.{names[0].partition('.')[2]}"):
        assert is_shard_source(source), source
        assert _same(_collect(ShardBatches(source, **kw)), want), source
    assert is_shard_folder(mem) and read_shard_index(mem).root == mem
    scanned = read_shard_index([f"{mem}/{n}" for n in names])   # listed in the URL folder's index
    assert scanned.classes == list(CLASSES) and len(scanned) == 300


def test_fsspec_errors_are_one_line(tmp_path):
    pytest.importorskip("fsspec")
    for source, words in (("memory://nowhere", "no index.json"),
                          ("memory://nowhere/shard-000000.tar", "no such shard"),
                          ("s3://bucket/shards/", "pip install s3fs"),
                          ("nosuchproto://x/shards", "Protocol not known")):
        with pytest.raises(DataError) as err:
            read_shard_index(source)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not is_shard_folder("memory://nowhere") and not is_shard_source("memory://nowhere")
    assert is_shard_source("s3://bucket/shards/")   # read_shard_index then names the package


def test_version_1_folder_still_read(tmp_path):
    """A folder packed by format version 1 (KEY.cls + KEY.json + KEY.png) streams as before."""
    import io
    data = _make_folder(tmp_path / "data", 70)
    index = scan_folder(data)
    rels = [Path(p).relative_to(data).as_posix() for p in index.paths]
    parts = ["val" if i % 4 == 0 else "train" for i in range(70)]
    out = tmp_path / "v1"
    out.mkdir()
    offsets = []
    with tarfile.open(out / "shard-000000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for k, (path, y, part) in enumerate(zip(index.paths, index.labels, parts)):
            if k % 64 == 0:
                offsets.append(tar.offset)
            meta = json.dumps({"file": rels[k], "class": CLASSES[y], "part": part}).encode()
            for ext, blob in (("cls", str(y).encode()), ("json", meta), ("png", Path(path).read_bytes())):
                info = tarfile.TarInfo(f"{k:08d}.{ext}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    shard = {"name": "shard-000000.tar", "first_key": 0, "samples": 70, "bytes": 0, "sha256": None,
             "parts": dict(Counter(parts)), "seek_every": 64, "offsets": offsets}
    (out / "index.json").write_text(json.dumps({
        "format": "vistrain-webdataset", "version": 1, "classes": list(CLASSES), "shards": [shard],
        "labels": list(index.labels), "parts": "".join("v" if p == "val" else "t" for p in parts)}))
    expected = _expected(data)
    names = [expected[x.tobytes()] for xb, _ in ShardBatches(out, size=8, batch_size=8, part="val", streams=3)
             for x in xb.numpy()]
    assert sorted(names) == sorted(r for r, p in zip(rels, parts) if p == "val")
    (out / "index.json").write_text(json.dumps({"format": "vistrain-webdataset", "version": 9}))
    with pytest.raises(DataError, match="pack the data again"):
        read_shard_index(out)


def test_reader_takes_concatenated_gzip_and_unseekable_streams(one_shard, tmp_path):
    """Other writers' multi-member .tar.gz is read to its end; a stream without seek is skipped
    forward by reading."""
    import gzip
    import io
    from vistrain.data.shards.index import _seek_or_skip
    out = one_shard[1]
    shard = read_shard_index(out).shards[0]
    with open_shard_bytes(shard.path) as raw:
        cut = len(raw) // 2
    multi = tmp_path / "multi.tar.gz"
    multi.write_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]))
    assert [s["key"] for s in tar_samples(multi)] == [s["key"] for s in tar_samples(shard.path)]

    class Stream(io.RawIOBase):
        def __init__(self, data):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def read(self, n=-1):
            return self.inner.read(n)

        def seek(self, *a):
            raise io.UnsupportedOperation("no seek")
    s = Stream(b"0123456789")
    _seek_or_skip(s, 4)
    assert s.read(3) == b"456"


class open_shard_bytes:
    """The uncompressed tar bytes of a shard, as a context manager (for the test above)."""

    def __init__(self, path):
        self.path = path

    def __enter__(self) -> bytes:
        from vistrain.data.shards.index import open_shard
        with open_shard(self.path) as fh:
            return fh.read()

    def __exit__(self, *exc):
        return False
