"""The strategy advisor: decision table, k-NN similarity measurement, BN distance, end to end."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import timm
import torch

import vistrain.training.advisor as advisor
from vistrain.config import TrainConfig
from vistrain.device import Runtime
from vistrain.training.advisor import (FirstBNStats, advise, decide, knn_loo_accuracy,
                                    stratified_sample)


def test_decision_table():
    assert decide(999, 0.5) == ("feature-extraction", None)
    assert decide(999, 0.49) == ("gradual", None)
    assert decide(1000, 0.5) == ("finetune", "low")
    assert decide(1000, 0.1) == ("finetune", "high")


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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import make_image_folder
    from vistrain.data.scan import scan_folder
    from vistrain.models import create
    from vistrain.training.run import finalize_preprocess, prepare_data, spatial_preprocess
    root = make_image_folder(tmp_path_factory.mktemp("adv") / "data", per_class=12)
    cfg = TrainConfig.from_dict({"data": {"root": str(root), "cache": "off"}, "preprocess": {"size": 32},
                                 "model": {"name": "resnet18", "pretrained": False}})
    rt = Runtime.create("cpu")
    torch.manual_seed(0)
    model, pcfg = create("resnet18", 3, pretrained=False)
    spatial = spatial_preprocess(cfg, pcfg)
    data = prepare_data(cfg, spatial, rt, progress=False, index=scan_folder(root))
    return cfg, model, finalize_preprocess(cfg, spatial, pcfg, data), data, rt


def test_no_pretrained_weights_means_finetune_without_measuring(tiny):
    cfg, model, pre, data, rt = tiny
    name, why = advise(cfg, model, pre, data, rt)
    assert name == "finetune" and "no pretrained weights" in why["decision"]
    assert "skill" not in why


def test_measured_advice_small_and_large(tiny, monkeypatch, caplog):
    cfg, model, pre, data, rt = tiny
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "model": {"name": "resnet18", "pretrained": True}})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="vistrain"):
        name, why = advise(cfg, model, pre, data, rt)
    assert why["sample_images"] == len(data.parts["train"])   # fewer than 300: all of them
    assert 0 <= why["knn_loo_accuracy"] <= 1 and why["chance_accuracy"] == pytest.approx(1 / 3, abs=0.05)
    assert why["skill"] == pytest.approx((why["knn_loo_accuracy"] - why["chance_accuracy"])
                                         / (1 - why["chance_accuracy"]), abs=1e-3)
    assert set(why["first_bn_distance"]) == {"mean_shift_in_running_sd", "abs_log_variance_ratio"}
    assert name == decide(len(data.parts["train"]), why["skill"])[0]
    assert name in ("feature-extraction", "gradual") and cfg.optim.lr is None
    assert "advisor:" in caplog.text and "skill" in caplog.text
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # BN stats too

    monkeypatch.setattr(advisor, "SMALL_TRAIN", 5)
    monkeypatch.setattr(advisor, "SIMILAR_SKILL", -1.0)   # everything "similar": low rate
    a = advisor.advice(cfg, model, pre, data, rt)
    assert a.strategy == "finetune" and a.lr == 1e-4 and "low rate" in a.reasoning["lr"]
    assert cfg.optim.lr is None                           # the rate goes to the plan, not the config
    monkeypatch.setattr(advisor, "SIMILAR_SKILL", 2.0)    # nothing "similar": high rate
    a = advisor.advice(cfg, model, pre, data, rt)
    assert a.strategy == "finetune" and a.lr == 1e-3 and a.reasoning["similarity"] == "different"
    cfg.optim.lr = 5e-4                                   # a given rate is kept
    a = advisor.advice(cfg, model, pre, data, rt)
    assert a.lr is None and a.reasoning["lr"] == "0.0005 (given)"
