"""``vistrain pack``: the shipped 2,000 images as WebDataset shards, streamed back."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from vistrain.config import DataConfig
from vistrain.imageio.read import load_image
from vistrain.data.scan import scan_folder
from vistrain.data.shards.index import read_shard_index
from vistrain.data.shards.stream import ShardBatches
from vistrain.data.splits import make_parts

from .acceptlib import CLASSES, assert_ok, assert_user_error, vistrain


def test_pack_shipped_set_and_stream_it_back(shipped, tmp_path):
    out = tmp_path / "shards"
    res = assert_ok(vistrain("pack", shipped, "--out", out, "--workers", 2, "--shard-mb", 0.25))
    assert str((out / "index.json").resolve()) in res.stdout
    for fact in ("samples:", "size:", "encoding:", "compress:", "bytes:", "skipped:", "index:"):
        assert any(line.startswith(fact) for line in res.stdout.splitlines()), (fact, res.stdout)
    doc = assert_ok(vistrain("pack", shipped, "--out", out, "--workers", 2, "--shard-mb", 0.25,
                             "--overwrite", "--json")).json()
    assert doc["samples"] == 2000 and doc["skipped"] == [] and doc["shards"] >= 3
    assert doc["size"] == 256 and doc["encoding"] == "auto"
    # PNG sources stay PNG, and 28 px images are small: compress auto gzips the shards, so tar's
    # 512-byte headers and padding (~1.5 KiB per sample, against ~0.4 KB per PNG) cost little
    assert doc["compress"] == "gzip" and doc["bytes"] <= 1.2 * doc["source_bytes"], doc
    assert sorted(p.name for p in out.glob("shard-*"))[0] == "shard-000000.tar.gz"

    index = read_shard_index(out)
    assert index.classes == CLASSES and index.counts() == {c: 200 for c in CLASSES}
    scanned = scan_folder(shipped)
    parts = make_parts(scanned, DataConfig())
    assert index.part_counts() == {p: len(ids) for p, ids in parts.items()}

    # every file exactly once, with its class and its part, pixels as load_image decodes them
    part_of = {Path(scanned.paths[i]).relative_to(shipped).as_posix(): p
               for p, ids in parts.items() for i in ids}
    by_pixels = {}
    for f in part_of:
        by_pixels.setdefault(np.asarray(load_image(shipped / f)).transpose(2, 0, 1).tobytes(), []).append(f)
    seen = Counter()
    for part in ("train", "val", "test"):
        for x, y in ShardBatches(out, size=28, batch_size=64, part=part, shuffle=True, num_workers=2):
            for xi, yi in zip(x.numpy(), y.tolist()):
                files = [f for f in by_pixels[xi.tobytes()] if part_of[f] == part and f.split("/")[0] == CLASSES[yi]]
                assert files, (part, CLASSES[yi])
                seen[(part, CLASSES[yi], xi.tobytes())] += 1
    assert sum(seen.values()) == 2000
    want = Counter((p, f.split("/")[0], px) for px, fs in by_pixels.items() for f in fs for p in [part_of[f]])
    assert seen == want
    meta = json.loads((out / "index.json").read_text())
    assert len(meta["sha256"]) == 2000


def test_pack_refuses_a_folder_that_is_not_shards(shipped, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    line = assert_user_error(vistrain("pack", shipped, "--out", mine, "--overwrite"))
    assert "not a shard folder" in line and (mine / "keep.txt").exists()
