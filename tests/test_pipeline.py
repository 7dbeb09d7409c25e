"""Pixel caches (eval + larger train square), training integration, augment preview."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vistrain.config import AugmentConfig, TrainConfig
from vistrain.data.cache.build import build_pixel_cache, build_pixel_caches
from vistrain.data.cache.pixels import EvalAndTrainPixels, native_train_size
from vistrain.transforms.preprocess import Preprocess

CALLS = {"n": 0}


def counting_pixels(path):  # module level: picklable, counts decodes (workers=0 runs in-process)
    CALLS["n"] += 1
    return Preprocess(size=16).pixels(path)


def _photo(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


# -- cache keys -------------------------------------------------------------------------------------
def test_cache_reused_and_rebuilt_on_file_or_size_change(tmp_path):
    paths = [_photo(tmp_path / f"{i}.png", 30, 20, seed=i) for i in range(4)]
    cache = tmp_path / "cache"
    CALLS["n"] = 0
    a, _ = build_pixel_cache(paths, counting_pixels, (3, 16, 16), spec={"size": 16}, cache_dir=cache, workers=0)
    assert CALLS["n"] == 4 and len(list(cache.glob("pixels-*.npy"))) == 1
    b, _ = build_pixel_cache(paths, counting_pixels, (3, 16, 16), spec={"size": 16}, cache_dir=cache, workers=0)
    assert CALLS["n"] == 4 and np.array_equal(a, b)  # hit: nothing decoded
    _photo(paths[2], 30, 20, seed=99)  # new content (size/mtime change)
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c, _ = build_pixel_cache(paths, counting_pixels, (3, 16, 16), spec={"size": 16}, cache_dir=cache, workers=0)
    assert CALLS["n"] == 8 and len(list(cache.glob("pixels-*.npy"))) == 2
    assert np.array_equal(c[0], a[0]) and not np.array_equal(c[2], a[2])
    build_pixel_cache(paths, counting_pixels, (3, 16, 16), spec={"size": 20}, cache_dir=cache, workers=0)
    assert CALLS["n"] == 12 and len(list(cache.glob("pixels-*.npy"))) == 3


@pytest.mark.parametrize("wh", [(101, 67), (64, 64), (33, 80), (500, 371)])
def test_eval_and_train_pixels_one_decode(tmp_path, wh):
    path = _photo(tmp_path / "x.jpg", *wh)
    pre = Preprocess(size=32, crop_pct=0.875, interpolation="bicubic")
    fn = EvalAndTrainPixels(pre)
    ev, tr = fn(path)
    assert fn.train_size == 36 and tr.shape == (3, 36, 36)
    assert np.array_equal(ev, pre.pixels(path).numpy())  # eval view bit-identical to eval preprocessing
    # the eval crop lies inside the train square (within one pixel of its centre, rounding)
    hits = [(t, l) for t in range(3) for l in range(3) if np.array_equal(tr[:, 1 + t:33 + t, 1 + l:33 + l], ev)]
    assert hits


def test_worker_processes_write_the_same_cache(tmp_path):
    """>= 64 files and 2 workers: each worker writes its rows into the cache files itself."""
    paths = [_photo(tmp_path / f"{i}.png", 20 + i % 7, 18, seed=i) for i in range(70)]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(33, str(tmp_path / "bad.png"))
    fn = EvalAndTrainPixels(Preprocess(size=16))
    shapes, specs = [(3, 16, 16), (3, 18, 18)], [{"size": 16}, {"train_square": 18}]
    (ev2, tr2), bad2 = build_pixel_caches(paths, fn, shapes, specs=specs, cache_dir=tmp_path / "w2",
                                          workers=2, progress=False)
    (ev0, tr0), bad0 = build_pixel_caches(paths, fn, shapes, specs=specs, cache_dir=tmp_path / "w0",
                                          workers=0, progress=False)
    assert list(bad2) == list(bad0) == [paths[33]] and not ev2[33].any()
    assert np.array_equal(ev2, ev0) and np.array_equal(tr2, tr0) and ev2[70].any()


def test_small_images_train_at_their_own_size(tmp_path):
    """All images smaller than the 36 px eval resize: the train square stays at the largest
    shorter side (24), resized once from the decode -- never enlarged into the cache."""
    paths = [_photo(tmp_path / f"{i}.png", w, h, seed=i) for i, (w, h) in enumerate([(30, 20), (40, 24)])]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert native_train_size(paths + [str(tmp_path / "bad.png")], 36) == 24
    assert native_train_size(paths, 36, tmp_path / "memo") == 24
    assert len(list((tmp_path / "memo").glob("sides-*.json"))) == 1
    assert native_train_size(paths, 16) == 16 and native_train_size([], 36) == 36
    pre = Preprocess(size=32, crop_pct=0.875, interpolation="bicubic")
    ev, tr = EvalAndTrainPixels(pre, 24)(paths[1])
    assert np.array_equal(ev, pre.pixels(paths[1]).numpy())
    with Image.open(paths[1]) as img:  # 40 x 24: the centre 24 x 24, no resampling at all
        assert np.array_equal(tr, np.asarray(img.convert("RGB"))[:, 8:32].transpose(2, 0, 1))


def test_build_two_caches_then_hit(tmp_path):
    paths = [_photo(tmp_path / f"{i}.jpg", 50, 40, seed=i) for i in range(3)] + [str(tmp_path / "bad.jpg")]
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    fn = EvalAndTrainPixels(Preprocess(size=16))
    shapes, specs = [(3, 16, 16), (3, 18, 18)], [{"size": 16}, {"size": 16, "train_square": 18}]
    (ev, tr), bad = build_pixel_caches(paths, fn, shapes, specs=specs, cache_dir=tmp_path / "c", workers=0)
    assert ev.shape == (4, 3, 16, 16) and tr.shape == (4, 3, 18, 18) and list(bad) == [paths[3]]
    assert np.array_equal(ev[1], Preprocess(size=16).pixels(paths[1]).numpy())
    # the eval cache alone is the same file (same key) as a single-cache build
    single, _ = build_pixel_cache(paths, Preprocess(size=16).pixels, (3, 16, 16), spec={"size": 16},
                                  cache_dir=tmp_path / "c", workers=0)
    assert single.filename == ev.filename
    (ev2, tr2), bad2 = build_pixel_caches(paths, fn, shapes, specs=specs, cache_dir=tmp_path / "c", workers=0)
    assert np.array_equal(tr2, tr) and bad2 == bad


# -- training integration ---------------------------------------------------------------------------
def test_label_smoothing_applied_once_with_mixup():
    from vistrain.training.loop import BatchPipeline
    from vistrain.training.plan import build_batch_augmentation
    cfg = TrainConfig()
    cfg.augment = AugmentConfig(preset="light", mixup=0.2)
    cfg.optim.label_smoothing = 0.1
    record = {}
    augment, mix = build_batch_augmentation(cfg, Preprocess(size=16), 3, record)
    assert mix is not None and mix.label_smoothing == 0  # the loss smooths, not the mixer
    x, y = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(0)
    xm, soft = mix(augment(x).float(), y)  # global RNG, as the loop calls them
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(1), torch.ones(4))
    logits = torch.randn(4, 3)
    pipe = BatchPipeline(label_smoothing=0.1)
    expected = torch.sum(-(soft * 0.9 + 0.1 / 3) * F.log_softmax(logits, 1), 1).mean()
    assert torch.allclose(pipe.loss(logits, soft), expected)
    # and for hard targets: torch's own label smoothing, once
    assert torch.allclose(pipe.loss(logits, y), F.cross_entropy(logits, y, label_smoothing=0.1))
    assert any("MixUp" in line for line in record["augmentation"])


@pytest.mark.slow
@pytest.mark.parametrize("image_size, square", [((48, 40), 36), ((40, 32), 32)])
def test_training_augments_train_only_and_records_it(tmp_path, monkeypatch, image_size, square):
    """Train-time cache: floor(32 / 0.875) = 36 px squares, or the images' own 32 px when they
    are smaller than that; the random resized crop goes back to 32 either way."""
    from conftest import make_image_folder
    import vistrain.training.plan as plan
    from vistrain.training.run import run_training
    data = make_image_folder(tmp_path / "data", per_class=8, size=image_size)
    seen = []
    real = plan.build_batch_augmentation

    def spy_build(cfg, pre, num_classes, record):
        augment, mix = real(cfg, pre, num_classes, record)

        def spy(x):
            seen.append((x.shape[0], x.shape[-1], torch.is_grad_enabled()))
            return augment(x)  # global torch RNG: no generator argument
        return spy, mix

    monkeypatch.setattr(plan, "build_batch_augmentation", spy_build)
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig()
    cfg.data.root = str(data)
    cfg.data.batch_size = 64
    cfg.data.num_workers = 0
    cfg.model.name, cfg.model.pretrained = "resnet18", False
    cfg.strategy.name = "finetune"
    cfg.augment = AugmentConfig(preset="medium", mixup=0.2)
    cfg.preprocess.size, cfg.preprocess.crop_pct = 32, 0.875
    cfg.train.epochs, cfg.train.device = 2, "cpu"
    cfg.optim.label_smoothing = 0.1
    result = run_training(cfg, tmp_path / "run", progress=False)
    n_train = len(json.loads((tmp_path / "run" / "splits.json").read_text())["parts"]["train"]["indices"])
    # every call is a training step (grad on; evaluation runs under no_grad), on the larger square
    assert seen and all(grad for _, _, grad in seen)
    assert {s for _, s, _ in seen} == {square}
    assert len(seen) == 2  # one batch per epoch: no val/test batch went through augment
    assert sum(n for n, _, _ in seen) == 2 * n_train  # train images only, each epoch
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "preset: medium" in saved and "mixup: 0.2" in saved
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    rec = json.dumps(meta)
    assert "random resized crop to 32x32" in rec and "MixUp (alpha 0.2)" in rec
    assert f"train images cached at {square}px" in rec
    assert result.metrics["test"]["n_samples"] > 0


# -- augment preview ------------------------------------------------------------------------------------
def test_mixed_label():
    from vistrain.report.augment_preview import mixed_label
    classes = ["Bag", "Coat", "Dress"]
    assert mixed_label(torch.tensor([0.3, 0.7, 0.0]), classes) == "0.7 Coat + 0.3 Bag"
    assert mixed_label(torch.tensor([0.0, 0.0, 1.0]), classes) == "Dress"


def test_augment_grid_and_preview(tmp_path):
    from vistrain.report.augment_preview import augment_grid, augment_preview
    x = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8)
    classes = ["a", "b", "c"]
    grid, texts = augment_grid(x, [0, 1, 2], classes, AugmentConfig(preset="none"), 16, k=2)
    assert grid.shape == (3, 3, 3, 16, 16) and texts[1] == ["b", "b", "b"]
    assert torch.equal(grid[:, 1], grid[:, 0])  # preset none: the views are the eval view
    grid, texts = augment_grid(x, [0, 1, 2], classes, AugmentConfig(preset="heavy", mixup=1.0), 16, k=3)
    assert grid.shape == (3, 4, 3, 16, 16) and not torch.equal(grid[:, 1], grid[:, 0])
    assert all(" + " in t for row in texts for t in row[1:])
    g2, _ = augment_grid(x, [0, 1, 2], classes, AugmentConfig(preset="heavy", mixup=1.0), 16, k=3)
    assert torch.equal(g2, grid)  # seeded
    out = augment_preview(x, [0, 1, 2], classes, AugmentConfig(preset="light", cutmix=1.0), 16,
                          tmp_path / "p.png", n=2, k=3)
    img = Image.open(out)
    assert img.size[0] > img.size[1] > 100  # 2 rows x 4 columns


def test_augment_preview_cli(tmp_path):
    import argparse
    from conftest import make_image_folder
    from vistrain.cli import augment_preview as cmd
    from vistrain.cli.main import COMMANDS
    assert "augment-preview" in COMMANDS
    data = make_image_folder(tmp_path / "data", per_class=3)
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    args = parser.parse_args(["augment-preview", str(data), "--preset", "medium", "--mixup", "0.2",
                              "--n", "4", "--k", "2", "--size", "24", "--out", str(tmp_path / "g.png")])
    assert args.func(args) == 0 and (tmp_path / "g.png").stat().st_size > 1000
    from vistrain.workflows.preview import spread_over_classes
    assert sorted(spread_over_classes([0, 0, 1, 1, 2], 3, 0)) in ([0, 2, 4], [1, 2, 4], [0, 3, 4], [1, 3, 4])


def test_batch_pipeline_fuses_only_a_preprocess_normalization():
    """The one-call augment + normalize path is taken for an ``AugmentPipeline`` with
    ``Preprocess.normalize`` and for nothing else, whatever another callable happens to be named."""
    from vistrain.device import Runtime
    from vistrain.training.loop import BatchPipeline
    from vistrain.transforms.pipeline import AugmentPipeline

    class Recorder(AugmentPipeline):
        def __init__(self):
            super().__init__([])
            self.calls = []

        def __call__(self, x):
            self.calls.append("augment")
            return x

        def normalized(self, x, scale, mean, std):
            self.calls.append(("normalized", scale, tuple(mean)))
            return x.float()

    pre = Preprocess(size=8, normalize_mode="imagenet", scale=1 / 255,
                     mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    x, y, rt = torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), Runtime.create("cpu")
    aug = Recorder()
    BatchPipeline(normalize=pre.normalize, augment=aug)(x, y, rt, train=True)
    assert aug.calls == [("normalized", 1 / 255, (0.485, 0.456, 0.406))]

    class Other:  # a bound method named "normalize" on something that is not a Preprocess
        scale, mean, std = 1.0, [0.0] * 3, [1.0] * 3

        def normalize(self, x):
            return x.float()

    aug = Recorder()
    BatchPipeline(normalize=Other().normalize, augment=aug)(x, y, rt, train=True)
    assert aug.calls == ["augment"]

    class Lookalike:  # has a method named "normalized" but is not an AugmentPipeline
        def __init__(self):
            self.calls = []

        def __call__(self, x):
            self.calls.append("augment")
            return x

        def normalized(self, x, scale, mean, std):
            self.calls.append("normalized")
            return x.float()

    aug = Lookalike()
    BatchPipeline(normalize=pre.normalize, augment=aug)(x, y, rt, train=True)
    assert aug.calls == ["augment"]
