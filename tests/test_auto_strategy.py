"""strategy=auto: similarity measures, the ranking rule, the budget, the choice end to end."""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch

import vistrain
import vistrain.training.auto as auto
from conftest import make_image_folder
from vistrain.config import TrainConfig
from vistrain.config.settings import minutes_or_none
from vistrain.data.scan import scan_folder
from vistrain.device import Runtime
from vistrain.errors import VistrainError
from vistrain.training.auto import apply_choice, choose_recipe, finetune_size, ranking
from vistrain.training.similarity import FirstBNStats, knn_loo_accuracy, stratified_sample


# ---- similarity measures ----------------------------------------------------------------------
def test_knn_loo_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = (x[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)  # 2 classes, k=5: no ties
    knn = KNeighborsClassifier(n_neighbors=6, metric="cosine", algorithm="brute").fit(x, y)
    _, idx = knn.kneighbors(x)
    ref = []
    for i, row in enumerate(idx):
        nb = [j for j in row if j != i][:5]
        ref.append(np.bincount(y[nb], minlength=2).argmax())
    assert knn_loo_accuracy(x, y, k=5) == pytest.approx(float((np.array(ref) == y).mean()))
    assert knn_loo_accuracy(np.eye(10)[np.arange(40) % 10] + 0.01 * rng.normal(size=(40, 10)),
                            np.arange(40) % 10) == 1.0


def test_stratified_sample_proportions():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    pick = stratified_sample(labels, 300, seed=1)
    assert len(pick) <= 300 and len(set(pick)) == len(pick)
    assert np.bincount(labels[pick]).tolist() == [180, 90, 30]
    assert len(stratified_sample(labels[:50], 300)) == 50


def test_first_bn_distance_zero_for_matching_statistics_positive_for_shift():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        h = net[0](x)
    net[1].running_mean.copy_(h.mean((0, 2, 3)))
    net[1].running_var.copy_(h.var((0, 2, 3), unbiased=False))
    net.eval()
    with FirstBNStats(net) as s, torch.no_grad():
        net(x[:32]), net(x[32:])
    d = s.distance()
    assert d["mean_shift_in_running_sd"] < 1e-6 and d["abs_log_variance_ratio"] < 1e-6
    with FirstBNStats(net) as s, torch.no_grad():
        net(x * 3 + 1)
    d = s.distance()
    assert d["mean_shift_in_running_sd"] > 0.1 and d["abs_log_variance_ratio"] > 1.0
    assert not net[1]._forward_pre_hooks  # the hook is removed



# ---- the rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("native, per_class, skill, gain, first", [
    (28, 700, 0.75, 0.10, "scratch"),               # small, far, enough data
    (28, 140, 0.75, 0.10, "feature-extraction"),    # small, far, little data, features separate
    (28, 140, 0.30, 0.10, "gradual"),               # little data, features separate poorly
    (32, 700, 0.80, 0.60, "finetune"),              # small images of a near domain
    (300, 700, 0.20, 0.05, "finetune"),             # large images: never from scratch
    (300, 50, 0.80, 0.60, "feature-extraction"),
])
def test_ranking_table(native, per_class, skill, gain, first):
    order, why = ranking(native, per_class, skill, gain)
    assert order[0] == first and order[-1] in ("feature-extraction", "gradual") and why


def test_finetune_size_for_small_images():
    assert [finetune_size(n, 224) for n in (20, 28, 32, 40, 56, 64, 500)] == [96, 112, 128, 160, 224, 224, 224]
    assert finetune_size(28, 160) == 112 and finetune_size(48, 160) == 160


def test_budget_setting_parses_minutes_and_none(capsys):
    assert minutes_or_none("7.5") == 7.5 and repr(minutes_or_none("none")) == "'none'"
    assert vistrain.make_config("d", budget="none").train.budget is None
    assert vistrain.make_config("d", budget=5).train.budget == 5.0
    assert vistrain.make_config("d").train.budget == 15.0 and vistrain.make_config("d").strategy.name == "auto"
    with pytest.raises(VistrainError, match="budget"):
        vistrain.make_config("d", budget="soon")
    with pytest.raises(VistrainError, match="train.budget=0.0: must be minutes > 0"):
        vistrain.make_config("d", budget=0)


def test_budget_flag_on_the_command_line(tmp_path, capsys):
    from vistrain.cli.main import main
    data = make_image_folder(tmp_path / "d", per_class=2)
    assert main(["train", str(data), "--budget", "none", "--print-config"]) == 0
    assert "budget: null" in capsys.readouterr().out
    assert main(["train", str(data), "--budget", "2", "--print-config"]) == 0
    assert "budget: 2.0" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error: one line, no traceback
        main(["train", str(data), "--budget", "soon", "--print-config"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [
        "error: argument --budget: budget='soon': give minutes (a number > 0) or none; "
        "see `vistrain train --help`"]


def test_apply_choice_copies_and_validates():
    cfg = TrainConfig.from_dict({"data": {"root": "d"}}).check()
    new = apply_choice(cfg, {"strategy.name": "finetune", "model.name": "vistrain/resnet20",
                             "model.pretrained": False, "preprocess.size": 28, "train.epochs": 7})
    assert (new.strategy.name, new.model.name, new.preprocess.size, new.train.epochs) == \
        ("finetune", "vistrain/resnet20", 28, 7)
    assert cfg.strategy.name == "auto" and cfg.model.name == "tf_efficientnet_lite0"
    with pytest.raises(VistrainError):
        apply_choice(cfg, {"train.epochs": 0})


# ---- the choice, measured ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_grey(tmp_path_factory):
    """3 classes x 24 grey 24 px images."""
    return make_image_folder(tmp_path_factory.mktemp("auto") / "grey", per_class=24, size=(24, 24), mode="L")


def _cfg(root, **train):
    return TrainConfig.from_dict({"data": {"root": str(root), "cache": "off"},
                                  "train": {"epochs": 3, **train}}).check()


@pytest.mark.slow
def test_choice_is_measured_and_explained(small_grey, caplog):
    cfg = _cfg(small_grey)
    with caplog.at_level(logging.INFO, logger="vistrain"):
        new, why = choose_recipe(cfg, scan_folder(small_grey), Runtime.create("cpu"))
    assert why["native_size"] == 24 and why["grey"] is True
    m = why["measurements"]
    assert 0 < m["sample_images"] <= auto.SAMPLE and m["feature_images_per_second"] > 0
    assert m["feature_gain"] == pytest.approx(m["skill"] - m["pixel_skill"], abs=1e-3)
    assert why["chosen"] in ("feature-extraction", "gradual") and new.strategy.name == why["chosen"]
    assert why["candidates"][0]["recipe"] == why["ranking"][0]
    assert any(line.startswith("chosen: ") for line in why["plain"]) and "auto: chosen" in caplog.text
    assert cfg.strategy.name == "auto"  # the given config is not changed


@pytest.mark.slow
def test_scratch_for_small_far_images_and_budget_fallback(small_grey, monkeypatch):
    monkeypatch.setattr(auto, "SCRATCH_MIN_PER_CLASS", 1)
    monkeypatch.setattr(auto, "FAR_GAIN", 10.0)          # everything counts as far
    index, rt = scan_folder(small_grey), Runtime.create("cpu")
    new, why = choose_recipe(_cfg(small_grey), index, rt)
    assert why["chosen"] == "scratch" and new.model.name == auto.SCRATCH_MODEL
    assert (new.strategy.name, new.model.pretrained, new.preprocess.size, new.preprocess.grayscale) == \
        ("finetune", False, 24, True)
    assert new.train.epochs == 3
    # a budget no end-to-end candidate fits: every one is measured, feature extraction is the fallback
    new, why = choose_recipe(_cfg(small_grey, budget=0.001), index, rt)
    assert why["chosen"] == "feature-extraction"
    assert set(why["ranking"]) <= {c["recipe"] for c in why["candidates"]}  # every candidate measured
    assert not any(c["fits"] for c in why["candidates"] if c["recipe"] != "feature-extraction")
    assert len(why["entrants"]) <= 1  # nothing to race


def test_no_pretrained_weights_means_finetune_without_measuring(small_grey):
    cfg = TrainConfig.from_dict({"data": {"root": str(small_grey)}, "model": {"name": "resnet18",
                                 "pretrained": False}, "strategy": {"name": "auto"}}).check()
    new, why = choose_recipe(cfg, scan_folder(small_grey), Runtime.create("cpu"))
    assert new.strategy.name == "finetune" and "no pretrained weights" in why["decision"]
    assert "measurements" not in why


@pytest.mark.slow
def test_auto_run_records_its_reasoning_and_stops_at_the_budget(small_grey, tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "SCRATCH_MIN_PER_CLASS", 1)
    monkeypatch.setattr(auto, "FAR_GAIN", 10.0)
    monkeypatch.setattr("vistrain.training.run.budget_deadline", lambda cfg, started: time.monotonic())
    monkeypatch.setattr("vistrain.training.race.MAX_ENTRANTS", 1)  # the rule's first, no race (test_race.py)
    r = vistrain.train(small_grey, out=tmp_path / "run", epochs=4, progress=False, data={"cache": "off"})
    run = json.loads((r.run_dir / "run.json").read_text())
    assert run["strategy"]["requested"] == "auto" and run["strategy"]["reasoning"]["chosen"] == "scratch"
    stop = run["strategy"]["stopped_by_budget"]  # the budget ends the first epoch after its first batch
    assert (stop["after_epoch"], stop["of"], stop["batches"][0]) == (1, 4, 1) and len(r.history) == 1
    saved = TrainConfig.load(r.run_dir / "config.yaml")
    assert saved.strategy.name == "finetune" and saved.model.name == auto.SCRATCH_MODEL  # resumable as chosen
    html = (r.run_dir / "report.html").read_text()
    assert "Why this recipe (strategy auto)" in html and "pretraining adds" in html


@pytest.mark.slow
def test_similarity_is_measured_once_per_data_and_model(small_grey, tmp_path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig.from_dict({"data": {"root": str(small_grey)}, "train": {"epochs": 3}}).check()
    index, rt = scan_folder(small_grey), Runtime.create("cpu")
    _, first = choose_recipe(cfg, index, rt)
    assert "cached" not in first["measurements"]
    loads = []
    monkeypatch.setattr(auto.PretrainedModel, "load", lambda self: loads.append(1) or 1 / 0)
    _, second = choose_recipe(cfg, index, rt)
    assert second["measurements"]["cached"] is True and not loads  # the model was not even loaded
    assert second["chosen"] == first["chosen"] and any("cached" in line for line in second["plain"])
    assert list((tmp_path / "cache" / "similarity").glob("similarity-*.json"))
