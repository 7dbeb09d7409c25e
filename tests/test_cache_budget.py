"""The cache size budget: least-recently-used eviction, killed builds' leftovers, ``vistrain cache``."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from vistrain.cli.main import main as cli
from vistrain.data.cache.budget import cache_entries, cache_limit_bytes, prune_cache, record_entry
from vistrain.data.cache.build import build_pixel_cache
from vistrain.transforms.preprocess import Preprocess


def _entry(root, name, nbytes, age_s, suffix=".npy"):
    """A cache file as vistrain writes one: recorded in the cache's index first."""
    path = root / f"{name}{suffix}"
    record_entry(path.with_name(path.name.replace(".part", "")))
    path.write_bytes(bytes(nbytes))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_limit_from_environment(monkeypatch):
    monkeypatch.delenv("VISTRAIN_CACHE_MAX_GB", raising=False)
    assert cache_limit_bytes() == 20 * 10**9
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "1.5")
    assert cache_limit_bytes() == 1_500_000_000
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "0")
    assert cache_limit_bytes() is None
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "lots")
    assert cache_limit_bytes() == 20 * 10**9


def test_prune_evicts_least_recently_used_first_and_spares_keep(tmp_path):
    old = _entry(tmp_path, "pixels-old", 40_000, age_s=300)
    record_entry(tmp_path / "pixels-old.json")
    (tmp_path / "pixels-old.json").write_text("{}")
    os.utime(tmp_path / "pixels-old.json", (time.time() - 300,) * 2)
    mid = _entry(tmp_path, "features-mid", 40_000, age_s=200)
    kept = _entry(tmp_path, "pixels-kept", 40_000, age_s=900)  # oldest, but in use
    new = _entry(tmp_path, "pixels-new", 40_000, age_s=0)
    sizes = {e.name: e.size for e in cache_entries(tmp_path)}
    assert set(sizes) == {"pixels-old", "features-mid", "pixels-kept", "pixels-new"}
    limit = sizes["pixels-kept"] + sizes["pixels-new"] + 1000
    removed = prune_cache(tmp_path, limit_bytes=limit, keep=[kept])
    assert [e.name for e in removed] == ["pixels-old", "features-mid"]  # both files of "old" go
    assert not old.exists() and not (tmp_path / "pixels-old.json").exists() and not mid.exists()
    assert kept.exists() and new.exists()
    assert prune_cache(tmp_path, limit_bytes=limit) == []  # already within the limit


def test_prune_removes_only_stale_partial_builds(tmp_path):
    stale = _entry(tmp_path, "pixels-abc", 100, age_s=7 * 3600, suffix=".npy.part")
    fresh = _entry(tmp_path, "features-k.123", 100, age_s=60, suffix=".part.npy")  # a build running now
    removed = prune_cache(tmp_path, limit_bytes=None)
    assert [e.partial for e in removed] == [True] and not stale.exists() and fresh.exists()


def _photos(root, n):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / f"{i}.png")
        paths.append(str(root / f"{i}.png"))
    return paths


def test_building_a_cache_keeps_the_folder_within_budget(tmp_path, monkeypatch):
    paths = _photos(tmp_path, 4)
    cache = tmp_path / "cache"
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", str(2.5 * 4 * 3 * 24 * 24 / 1e9))  # ~two caches of 24 px
    build = [lambda s=s: build_pixel_cache(paths, Preprocess(size=s).pixels, (3, s, s), spec={"size": s},
                                           cache_dir=cache, workers=0) for s in (24, 23, 22)]
    build[0]()
    time.sleep(0.05)
    build[1]()
    time.sleep(0.05)
    build[0]()  # a hit: 24 becomes the most recently used
    time.sleep(0.05)
    build[2]()  # over budget: the least recently used (23) goes, not the older-built 24
    shapes = sorted(np.load(f, mmap_mode="r").shape[-1] for f in cache.glob("pixels-*.npy"))
    assert shapes == [22, 24]
    assert len(list(cache.glob("pixels-*.json"))) == 2


def test_cache_command_reports_and_clears(tmp_path, monkeypatch, capsys):
    root = tmp_path / "vc"
    monkeypatch.setenv("VISTRAIN_CACHE", str(root))
    (root / "pixels").mkdir(parents=True)
    (root / "features").mkdir()
    _entry(root / "pixels", "pixels-a", 5000, age_s=10)
    record_entry(root / "pixels" / "pixels-a.json")
    (root / "pixels" / "pixels-a.json").write_text("{}")
    _entry(root / "features", "features-b", 3000, age_s=5)
    assert cli(["cache", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["root"] == str(root)
    assert {k: v["count"] for k, v in info["entries"].items()} == {"pixels": 1, "features": 1}
    assert info["total_bytes"] >= 8000
    assert cli(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 entries" in out and "0.00 GB in 0 entries" in out
    assert not list(root.rglob("*.npy"))


def _train_tiny(data, out, *extra):
    from vistrain.cli.main import main
    return main(["train", str(data), "--out", str(out), "--model", "vistrain/resnet-tiny", "--epochs", "1",
                 "--batch-size", "8", "--set", "preprocess.size=16", "--set", "data.num_workers=0",
                 "--set", "data.doctor=false", *extra])


@pytest.mark.slow
def test_a_cache_over_the_budget_is_decoded_into_memory_never_written(tmp_path, monkeypatch):
    """The estimate comes before any decode: over the budget, nothing is written to the cache
    folder and run.json says where the pixels went and why."""
    from conftest import make_image_folder
    data = make_image_folder(tmp_path / "data", per_class=10)
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "0.00001")   # 10 kB: far less than 30 images
    assert _train_tiny(data, tmp_path / "run") == 0
    cache = json.loads((tmp_path / "run" / "run.json").read_text())["cache"]
    assert cache["where"] == "memory" and "over the cache budget" in cache["reason"]
    assert cache["estimate_bytes"] > 10_000
    assert not list((tmp_path / "cache").rglob("pixels-*"))
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "20")
    assert _train_tiny(data, tmp_path / "run2") == 0
    assert json.loads((tmp_path / "run2" / "run.json").read_text())["cache"]["where"] == "disk"
    assert list((tmp_path / "cache").rglob("pixels-*.npy"))


def test_cache_require_stops_before_decoding(tmp_path, monkeypatch, capsys):
    from conftest import cli_error, make_image_folder
    data = make_image_folder(tmp_path / "data", per_class=10)
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "0.00001")
    line = cli_error(capsys, ["train", str(data), "--out", str(tmp_path / "run"), "--model",
                              "vistrain/resnet-tiny", "--set", "preprocess.size=16", "--set", "data.cache=require",
                              "--set", "data.doctor=false"])
    assert "over the cache budget" in line and "VISTRAIN_CACHE_MAX_GB" in line
    assert not (tmp_path / "run").exists() and not list((tmp_path / "cache").rglob("pixels-*"))
