"""Streamed pixels: image files decoded per batch and WebDataset shards, against the pixel cache."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vistrain.config import TrainConfig
from vistrain.data.cache.budget import CacheSpaceError
from vistrain.data.cache.pixels import EvalAndTrainPixels
from vistrain.data.loader import ArrayBatches
from vistrain.data.scan import scan_folder
from vistrain.data.stream import FolderStream, ShardStream, in_order, open_index
from vistrain.device import Runtime
from vistrain.errors import DataError
from vistrain.training import prepare
from vistrain.training.balance import apply_balance
from vistrain.training.prepare import dataset_stats, prepare_data, stream_stats
from vistrain.training.loop import BatchPipeline
from vistrain.transforms.preprocess import Preprocess
from vistrain.workflows.pack import pack

from conftest import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 classes x 40 images of 40 x 32 px: non-square, so the train square is a real crop."""
    return make_image_folder(tmp_path_factory.mktemp("stream") / "data", classes=("a", "b", "c", "d"),
                             per_class=40, size=(40, 32))


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "shards"
    pack(folder, out=out, workers=0, progress=False, shard_mb=0.02)  # several shards
    return out


def _cached(pre, paths, train_size=None):
    """What the pixel cache holds: (eval pixels, train squares or None)."""
    if train_size is None:
        return np.stack([pre.pixels(p).numpy() for p in paths]), None
    fn = EvalAndTrainPixels(pre, train_size)
    pairs = [fn(p) for p in paths]
    return np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])


def _folder_order(folder: Path, shards: Path) -> np.ndarray:
    """Index in ``scan_folder(folder)`` of each shard sample (pack shuffles the files)."""
    index = scan_folder(folder)
    where = {Path(p).relative_to(folder).as_posix(): i for i, p in enumerate(index.paths)}
    return np.asarray([where[f] for f in json.loads((shards / "index.json").read_text())["files"]])


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_stream_yields_the_cached_batches(folder, workers):
    index, pre = scan_folder(folder), Preprocess(size=24)
    evals, squares = _cached(pre, index.paths, train_size=30)
    stream = FolderStream(index.paths, index.labels, pre, 30, workers)
    ids = np.arange(0, len(index), 3)
    kw = dict(batch_size=16, indices=ids, shuffle=True, seed=5, drop_last=True)
    want = list(ArrayBatches(squares, np.asarray(index.labels), **kw))
    got = list(stream.batches(ids, train=True, batch_size=16, shuffle=True, seed=5, drop_last=True))
    assert len(got) == len(want) == len(ids) // 16
    for (x, y), (wx, wy) in zip(got, want):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    assert np.array_equal(stream.take(ids[::-1]), evals[ids[::-1]])


@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("part", [None, "train", "test"])
def test_shard_stream_in_order_equals_the_folder(folder, shards, workers, part):
    index, pre = open_index(shards), Preprocess(size=24)
    assert len(index.shards.shards) > 2  # sub-streams start mid-shard and span shards
    stream = ShardStream(index.shards, pre, None, workers)
    ids = stream.part_ids(part)
    batches, order = stream.eval_batches(ids, part=part, batch_size=16)
    xs, ys = zip(*batches)
    x, y = in_order(torch.cat(xs).numpy(), order, ids), in_order(torch.cat(ys).numpy(), order, ids)
    scanned = scan_folder(folder)
    evals, _ = _cached(pre, scanned.paths)
    rows = _folder_order(folder, shards)[ids]
    assert np.array_equal(y, np.asarray(scanned.labels)[rows]) and np.array_equal(y, np.asarray(index.labels)[ids])
    assert np.array_equal(x, evals[rows])
    assert np.array_equal(stream.take(ids[:7]), evals[rows[:7]])


def test_shard_stream_reads_whole_parts_only(shards):
    stream = ShardStream(open_index(shards).shards, Preprocess(size=24), None, 0)
    with pytest.raises(DataError, match="whole part"):
        stream.batches(stream.part_ids("train")[:10], part="train")


def test_shard_index_gives_the_packed_split(folder, shards):
    index = open_index(shards)
    assert index.classes == ["a", "b", "c", "d"] and len(index) == 160
    assert sorted(index.labels) == sorted(scan_folder(folder).labels)
    assert {p: index.given_split.count(p) for p in ("train", "val", "test")} == index.shards.part_counts()


def test_stream_stats_are_dataset_stats(folder):
    index, pre = scan_folder(folder), Preprocess(size=24)
    evals, _ = _cached(pre, index.paths)
    ids = np.arange(5, 120)
    stream = FolderStream(index.paths, index.labels, pre, None, 0)
    want, got = dataset_stats(evals, ids), stream_stats(stream, ids)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)


def _cfg(root, **data) -> TrainConfig:
    cfg = TrainConfig()
    cfg.data.root = str(root)
    cfg.data.num_workers = 0
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def _no_decode(monkeypatch):
    """The cache builder runs (it checks the budget), but decoding an image fails the test."""
    real = prepare.build_pixel_caches

    def build(paths, fn, *args, **kwargs):
        return real(paths, lambda p: pytest.fail(f"decoded {p}"), *args, **kwargs)
    monkeypatch.setattr(prepare, "build_pixel_caches", build)


def test_cache_stream_decodes_nothing_up_front(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    data = prepare_data(_cfg(folder, cache="stream"), Preprocess(size=24), Runtime.create("cpu"), progress=False)
    assert data.stream is not None and data.pixels is None and data.cache["where"] == "stream"
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_over_budget_and_memory_streams_before_any_decode(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "0.000001")   # 1 KB: every cache is over it
    monkeypatch.setattr(prepare, "available_memory_bytes", lambda: 4096)
    _no_decode(monkeypatch)
    data = prepare_data(_cfg(folder), Preprocess(size=24), Runtime.create("cpu"), progress=False)
    assert data.stream is not None and data.cache["where"] == "stream"
    assert data.cache["estimate_bytes"] > 160 * 3 * 24 * 24 and "free memory" in data.cache["reason"]


def test_cache_require_over_budget_stops_in_one_line(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "0.000001")
    _no_decode(monkeypatch)
    with pytest.raises(CacheSpaceError) as err:
        prepare_data(_cfg(folder, cache="require"), Preprocess(size=24), Runtime.create("cpu"), progress=False)
    assert "\n" not in str(err.value)


def test_shards_refuse_other_splits(shards):
    with pytest.raises(DataError, match="cross-validation needs the image folder"):
        prepare_data(_cfg(shards), Preprocess(size=24), Runtime.create("cpu"), progress=False,
                     parts={"train": [0], "val": [1]})


def test_balanced_sampling_of_streamed_data_becomes_class_weights(folder):
    index = scan_folder(folder)
    stream = FolderStream(index.paths, index.labels, Preprocess(size=24), None, 0)
    train = np.r_[0:40, 40:45, 80:85, 120:125]  # 40 / 5 / 5 / 5
    batches = stream.batches(train, batch_size=8, shuffle=True)
    pipe, out = apply_balance("sampler", BatchPipeline(), batches, 4,
                              train_labels=np.asarray(index.labels)[train])
    assert out is batches and pipe.class_weights is not None
    w = pipe.class_weights.numpy()
    assert w[0] < w[1] and np.isclose(w[1], w[2]) and np.isclose(w.mean(), 1.0)


def test_a_shard_folder_given_to_a_folder_command_says_so(shards):
    with pytest.raises(DataError, match="holds WebDataset shards"):
        scan_folder(shards)
