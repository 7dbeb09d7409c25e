"""The engine of frozen forward passes: ONNX Runtime on the CPU, checked against eager, its thread
count measured, its exported backbone cached; the run records what it used."""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch

from vistrain.device import Runtime
from vistrain.models import create
from vistrain.training import feature_engine
from vistrain.training.features import extract_features, known_features, remember_features
from vistrain.transforms.preprocess import Preprocess

pytest.importorskip("onnxruntime")


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    model, _ = create("resnet18", 3, pretrained=False)
    return model.eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(feature_engine.ENGINE_ENV, raising=False)
    monkeypatch.setattr(feature_engine, "_THREADS", {})
    monkeypatch.setattr(feature_engine, "_PARITY", {})
    monkeypatch.setattr(feature_engine, "_SESSIONS", {})
    return tmp_path / "cache"


def _batches(n=6, size=32, seed=0):
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    return [(x[:4], None), (x[4:], None)]


def _extract(model, engine=None, monkeypatch=None):
    if engine is not None:
        monkeypatch.setenv(feature_engine.ENGINE_ENV, engine)
    record = {}
    feats = extract_features(model, _batches(), Preprocess(size=32).normalize, Runtime.create("cpu"),
                             progress=False, record=record)
    return feats, record


def test_onnxruntime_features_match_eager(small_model, cache, monkeypatch):
    ort, rec = _extract(small_model)
    eager, eager_rec = _extract(small_model, "eager", monkeypatch)
    assert rec["engine"] == "onnxruntime" and eager_rec["engine"] == "eager"
    assert ort.shape == eager.shape == (6, small_model.num_features)
    assert feature_engine.relative_difference(ort, eager) <= feature_engine.PARITY_TOLERANCE
    assert rec["parity_max_relative_difference"] <= feature_engine.PARITY_TOLERANCE
    assert rec["threads"] in feature_engine.thread_choices() and rec["images_per_second"] > 0


def test_failed_parity_check_falls_back_to_eager_with_a_warning(small_model, cache, monkeypatch, caplog):
    monkeypatch.setattr(feature_engine, "relative_difference", lambda ours, ref: 0.5)
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        feats, rec = _extract(small_model)
    assert rec["engine"] == "eager" and "parity failed" in rec["why"]
    assert "running PyTorch eager" in caplog.text
    eager, _ = _extract(small_model, "eager", monkeypatch)
    np.testing.assert_allclose(feats, eager, rtol=1e-5, atol=1e-6)


def test_export_failure_falls_back_to_eager(small_model, cache, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")
    monkeypatch.setattr(feature_engine, "export_backbone", broken)
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        _, rec = _extract(small_model)
    assert rec["engine"] == "eager" and "exporter broke" in caplog.text


def test_second_extraction_reuses_the_cached_graph(small_model, cache, monkeypatch):
    calls = []
    real = feature_engine.export_backbone
    monkeypatch.setattr(feature_engine, "export_backbone", lambda *a: calls.append(a) or real(*a))
    first, rec1 = _extract(small_model)
    second, rec2 = _extract(small_model)
    assert len(calls) == 1 and rec1["exported"] is True and rec2["exported"] is False
    graphs = list((cache / "features").glob("backbone-*.onnx"))
    assert [g.name for g in graphs] == [rec1["graph"]] == [rec2["graph"]]
    assert not list((cache / "features").glob("*.part"))
    np.testing.assert_array_equal(first, second)
    # other weights: another graph
    with torch.no_grad():
        small_model.conv1.weight.mul_(2)
    _, rec3 = _extract(small_model)
    assert rec3["graph"] != rec1["graph"] and len(calls) == 2


def test_thread_probe_picks_the_faster_count_and_is_measured_once(monkeypatch, tmp_path):
    monkeypatch.setattr(feature_engine, "_THREADS", {})
    monkeypatch.setattr(feature_engine, "thread_choices", lambda: [1, 2])
    slow, fast, runs = object(), object(), []

    def fake_run(sess, x):  # 2 threads loaded by other jobs: 10x slower than 1
        runs.append(sess)
        time.sleep(0.02 if sess is slow else 0.002)
        return np.zeros((len(x), 4), np.float32)
    monkeypatch.setattr(feature_engine, "run_session", fake_run)
    x = torch.zeros(2, 3, 8, 8)
    best, timings = feature_engine.probe_threads(tmp_path / "g.onnx", x, {1: fast, 2: slow})
    assert best == 1 and timings["2"] > timings["1"]
    assert runs.count(slow) == runs.count(fast) == 1 + feature_engine.PROBE_ROUNDS
    n = len(runs)
    assert feature_engine.probe_threads(tmp_path / "g.onnx", x, {1: fast, 2: slow}) == (1, {})
    assert len(runs) == n  # remembered for the process: not measured again


def test_sample_features_are_remembered_for_the_run(small_model):
    rt, pre = Runtime.create("cpu"), Preprocess(size=32)
    files = ["d/a.png", "d/b.png", "d/c.png"]
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    remember_features(small_model, pre, rt, files[:2], feats[:2])
    known = known_features(small_model, pre, rt, files)
    assert sorted(known) == [0, 1] and np.array_equal(known[1], feats[1])
    assert known_features(small_model, Preprocess(size=64), rt, files) == {}  # other pixels


@pytest.mark.slow
def test_feature_extraction_run_records_engine_and_reuses_nothing_twice(tmp_path, cache):
    """A run through the API: run.json names the engine and threads; a second run loads the
    features from the cache and does not export again."""
    from conftest import make_image_folder
    from vistrain.config import TrainConfig
    from vistrain.training.run import run_training
    cfg = TrainConfig()
    cfg.data.root = str(make_image_folder(tmp_path / "data", per_class=6))
    cfg.data.num_workers = 0
    cfg.model.name, cfg.model.pretrained = "resnet18", False
    cfg.strategy.name = "feature-extraction"
    cfg.preprocess.size, cfg.train.device, cfg.train.epochs = 32, "cpu", 2
    run_training(cfg, tmp_path / "run", progress=False)
    strategy = json.loads((tmp_path / "run" / "run.json").read_text())["strategy"]
    engine = strategy["feature_engine"]
    assert engine["engine"] == "onnxruntime" and engine["threads"] >= 1 and engine["exported"] is True
    assert strategy["feature_cache_hit"] is False
    run_training(cfg, tmp_path / "run2", progress=False)
    again = json.loads((tmp_path / "run2" / "run.json").read_text())["strategy"]
    assert again["feature_cache_hit"] is True and "feature_engine" not in again
