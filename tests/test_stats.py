"""vistrain.data.stats: exact per-channel statistics against a NumPy reference."""
from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from vistrain.cli.main import main
from vistrain.data.stats import compute_stats
from vistrain.transforms.preprocess import Preprocess


def _write(folder, n_rgb=6, n_grey=4, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for cls, n, mode in (("rgb", n_rgb, "RGB"), ("grey", n_grey, "L")):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = rng.integers(20, 60, size=2)
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            p = folder / cls / f"{i}.png"
            Image.fromarray(arr, mode).save(p)
            paths.append(p)
    return paths


def _reference(paths, pre):
    x = np.stack([pre.pixels(p).numpy() for p in paths]).astype(np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def test_mixed_rgb_and_grey_equals_numpy_reference(tmp_path):
    paths = _write(tmp_path / "d")
    pre = Preprocess(size=24)
    st = compute_stats(paths, pre, workers=0, cache_dir=None)
    mean, std = _reference(paths, pre)   # RGB pipeline: grey copied into 3 equal channels
    assert st.channels == 3 and st.mixed and (st.n_grey, st.n_colour) == (4, 6)
    np.testing.assert_allclose(st.mean, mean, atol=1e-6, rtol=0)
    np.testing.assert_allclose(st.std, std, atol=1e-6, rtol=0)
    assert st.n_pixels == len(paths) * 24 * 24


def test_parallel_workers_give_the_same_numbers(tmp_path):
    paths = _write(tmp_path / "d", n_rgb=10, n_grey=6)
    a = compute_stats(paths, Preprocess(size=16), workers=0, cache_dir=None)
    b = compute_stats(paths, Preprocess(size=16), workers=2, cache_dir=None, chunks_per_worker=3)
    assert a.mean == b.mean and a.std == b.std   # integer histograms: bit-identical


def test_native_size_and_all_grey(tmp_path):
    paths = _write(tmp_path / "d", n_rgb=0, n_grey=5)
    st = compute_stats(paths, Preprocess(), size=0, workers=0, cache_dir=None)
    x = np.concatenate([np.asarray(Image.open(p), np.float64).ravel() for p in paths]) / 255
    assert st.channels == 1 and not st.mixed and st.size == 0
    assert st.mean[0] == pytest.approx(x.mean(), abs=1e-9)
    assert st.std[0] == pytest.approx(x.std(), abs=1e-9)


def test_unreadable_file_is_reported_not_counted(tmp_path):
    paths = _write(tmp_path / "d", n_rgb=3, n_grey=0)
    bad = tmp_path / "d" / "rgb" / "bad.png"
    bad.write_bytes(b"not an image")
    st = compute_stats(paths + [bad], Preprocess(size=16), workers=0, cache_dir=None)
    ref = compute_stats(paths, Preprocess(size=16), workers=0, cache_dir=None)
    assert list(st.bad) == [str(bad)] and st.mean == ref.mean and st.n_images == 3


def _peak(paths):
    tracemalloc.start()
    compute_stats(paths, Preprocess(size=32), workers=0, cache_dir=None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "m").mkdir()
    paths = []
    for i in range(160):
        p = tmp_path / "m" / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    small, large = _peak(paths[:40]), _peak(paths)
    assert large < 1.5 * small, (small, large)


def test_cache_hit_and_invalidation(tmp_path):
    paths = _write(tmp_path / "d", n_rgb=3, n_grey=1)
    cache = tmp_path / "cache"
    first = compute_stats(paths, Preprocess(size=16), workers=0, cache_dir=cache)
    second = compute_stats(paths, Preprocess(size=16), workers=0, cache_dir=cache)
    assert not first.cached and second.cached and second.mean == first.mean
    assert not compute_stats(paths, Preprocess(size=20), workers=0, cache_dir=cache).cached
    Image.new("RGB", (30, 30), (255, 0, 0)).save(paths[0])   # content change -> new key
    os.utime(paths[0], ns=(1, 1))
    third = compute_stats(paths, Preprocess(size=16), workers=0, cache_dir=cache)
    assert not third.cached and third.mean != first.mean


def test_cli_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    _write(tmp_path / "d")
    assert main(["stats", str(tmp_path / "d"), "--size", "24", "--json", "--workers", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    paths = sorted((tmp_path / "d").rglob("*.png"))
    mean, std = _reference(paths, Preprocess(size=24))
    assert out["channels"] == 3 and out["mixed"] and out["n_images"] == 10 and not out["cached"]
    np.testing.assert_allclose(out["mean"], mean, atol=1e-6)
    np.testing.assert_allclose(out["std"], std, atol=1e-6)
    assert out["resize"]["interpolation"] == "bicubic" and out["resize"]["crop_pct"] == 0.875
    assert main(["stats", str(tmp_path / "d"), "--size", "24", "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"]
    assert main(["stats", str(tmp_path / "nope")]) == 2


def test_agrees_with_training_dataset_stats_on_the_pixel_cache(tmp_path):
    from vistrain.data.cache.build import build_pixel_cache
    from vistrain.training.prepare import dataset_stats
    paths = _write(tmp_path / "d", n_rgb=5, n_grey=3)
    pre = Preprocess(size=20)
    pixels, bad = build_pixel_cache(paths, pre.pixels, (3, 20, 20), cache_dir=None, workers=0,
                                    progress=False)
    rows = np.arange(len(paths))
    mean, std = dataset_stats(pixels, rows)
    st = compute_stats(paths, pre, workers=0, cache_dir=None)
    assert not bad
    np.testing.assert_allclose(st.mean, mean, atol=1e-9)
    np.testing.assert_allclose(st.std, std, atol=1e-9)


def test_a_cache_folder_that_cannot_be_written_costs_the_entry_not_the_result(tmp_path, caplog):
    paths = _write(tmp_path / "d", n_rgb=3, n_grey=1)
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")  # the cache "folder" is a file: mkdir and writes fail with OSError
    with caplog.at_level("WARNING", logger="vistrain"):
        res = compute_stats(paths, Preprocess(size=16), workers=0, cache_dir=blocked / "stats")
    reference = compute_stats(paths, Preprocess(size=16), workers=0, cache_dir=None)
    assert res.mean == reference.mean and not res.cached
    assert "could not cache the statistics" in caplog.text
