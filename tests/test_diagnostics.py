"""Diagnostics: pass on a learnable toy set, fail with the right diagnosis on broken ones."""
from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from vistrain.training import checks as d
from vistrain.transforms.preprocess import Preprocess


@pytest.fixture(autouse=True)
def one_thread():
    # 2 shared cores: one intra-op thread avoids spin-wait contention (20x faster here).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_cfg(root, lr=3e-3):
    from vistrain.config import TrainConfig
    cfg = TrainConfig()
    cfg.data.root, cfg.data.cache, cfg.data.num_workers = str(root), "off", 1
    cfg.model.name, cfg.model.pretrained = "vistrain/resnet-tiny", False
    cfg.strategy.name, cfg.optim.lr, cfg.preprocess.size = "finetune", lr, 32
    return cfg


def prepared(root, lr=3e-3):
    """The run context of ``vistrain check`` (model, preprocessing, data, runtime)."""
    from vistrain.workflows.check import prepare
    return prepare(make_cfg(root, lr), progress=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("good") / "data", per_class=30, size=(32, 32))


def test_checks_pass_on_learnable_data_and_leave_model_untouched(good, tmp_path):
    ctx = prepared(good)
    model = ctx.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    results = d.run_checks(ctx, out_dir=tmp_path, lr_steps=15)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG stream not consumed
    by = {r.name: r for r in results}
    assert list(by) == ["normalization", "overfit-small-sample", "label-shuffle", "lr-finder"]
    for name in ("normalization", "overfit-small-sample", "label-shuffle"):
        assert by[name].passed is True, by[name].line()
    assert by["overfit-small-sample"].measurements["train_accuracy"] == 1.0
    assert by["overfit-small-sample"].measurements["final_loss"] < 0.1
    lr = by["lr-finder"]
    assert lr.passed is not None or lr.message.startswith(("skipped", "no clear")), lr.line()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    saved = (tmp_path / "checks.json").read_text()
    assert '"overfit-small-sample"' in saved and '"PASS"' in saved


def test_absurd_learning_rate_is_diagnosed(good):
    ctx = prepared(good, lr=1e3)
    setup = d.make_setup(ctx)
    r = d.overfit_small_sample(setup, np.asarray(ctx.data.parts["train"]), ctx.data.labels(), steps=30,
                               optim_cfg=ctx.cfg.optim)
    assert r.passed is False
    assert "learning rate too high" in r.message and "lr=1000" in r.message


def test_random_labels_fail_the_label_shuffle_check(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=30, size=(32, 32))
    files = sorted(root.glob("*/*.png"))
    rng = random.Random(0)
    for f in files:  # every image to a random class folder: the labels carry no information
        dest = root / rng.choice("abc") / ("r_" + f.name)
        shutil.move(str(f), str(dest))
    ctx = prepared(root)
    setup, data = d.make_setup(ctx), ctx.data
    r = d.label_shuffle_test(setup, np.asarray(data.parts["train"]), np.asarray(data.parts["val"]),
                             data.labels(), epochs=3, batch_size=16)
    assert r.passed is False, r.line()
    assert "nothing learnable" in r.message
    assert r.measurements["real_accuracy"] <= r.measurements["threshold"]


def _toy_setup(array, make_model, lr=1e-2):
    return d.CheckSetup("end-to-end (all layers)", make_model, array, lambda ids: np.asarray(ids),
                    lambda x: x.float() / 255, lr)


def test_frozen_model_is_diagnosed():
    torch.manual_seed(0)
    x = torch.randint(0, 255, (32, 3, 8, 8), dtype=torch.uint8).numpy()
    labels = np.arange(32) % 2

    def frozen():
        m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
        for p in m.parameters():
            p.requires_grad_(False)
        return m
    r = d.overfit_small_sample(_toy_setup(x, frozen), np.arange(32), labels, steps=10)
    assert r.passed is False and "model frozen" in r.message


def test_identical_images_with_different_labels_are_diagnosed():
    torch.manual_seed(0)
    x = np.repeat(np.random.default_rng(0).integers(0, 255, (4, 3, 8, 8), dtype=np.uint8), 8, axis=0)
    labels = np.arange(32) % 2  # each of the 4 distinct images appears under both labels
    make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))  # noqa: E731
    r = d.overfit_small_sample(_toy_setup(x, make), np.arange(32), labels, steps=60)
    assert r.passed is False and "labels inconsistent" in r.message, r.message


def test_normalization_check_catches_common_mistakes():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 3, 16, 16), dtype=np.uint8))
    good = Preprocess(normalize_mode="dataset", mean=(0.5,) * 3, std=(0.289,) * 3)
    assert d.check_normalization(x, good).passed
    no_scale = Preprocess(normalize_mode="imagenet", scale=1.0)
    r = d.check_normalization(x, no_scale)
    assert not r.passed and "/255" in r.message
    double = Preprocess(normalize_mode="imagenet", std=(0.229 ** 2,) * 3)  # std applied twice
    r = d.check_normalization(x, double)
    assert not r.passed and "double normalization" in r.message
    assert d.check_normalization(x, Preprocess(normalize_mode="symmetric", mean=(0.5,) * 3,
                                               std=(0.5,) * 3)).passed
    r = d.check_normalization(x, Preprocess(normalize_mode="minmax", mean=(0.5,) * 3, std=(0.5,) * 3))
    assert not r.passed and "[0, 1]" in r.message
    flat = x.clone()
    flat[:, 1] = 7
    r = d.check_normalization(flat, good)
    assert not r.passed and "constant" in r.message


def test_check_cli_exit_code_and_output(good, capsys):
    from vistrain.cli.main import main
    rc = main(["check", str(good), "--model", "vistrain/resnet-tiny", "--no-pretrained", "--strategy",
               "finetune", "--lr", "1000", "--set", "preprocess.size=32", "--set", "data.cache=off",
               "--steps", "10", "--lr-steps", "5"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "[FAIL] overfit-small-sample" in out and "learning rate too high" in out
