"""Optimizers (no decay on norms/biases), LR schedules, and the LR range test."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vistrain.config import OptimConfig, ScheduleConfig
from vistrain.data.loader import ArrayBatches
from vistrain.device import Runtime
from vistrain.training.loop import BatchPipeline
from vistrain.training.lrfind import lr_range_test, suggest
from vistrain.training.optim import build_optimizer, build_scheduler


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.LayerNorm(4 * 6 * 6), nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_no_weight_decay_on_norms_and_biases(name):
    m = _model()
    opt = build_optimizer([{"params": list(m.parameters()), "lr": 0.1}],
                          OptimConfig(name=name, weight_decay=0.05), m)
    names = {id(p): n for n, p in m.named_parameters()}
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay == {"0.weight", "5.weight"}
    assert no_decay == {"0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "5.bias"}
    assert all(g["weight_decay"] == 0.05 for g in opt.param_groups if g["weight_decay"] > 0)


def _curve(cfg: ScheduleConfig, steps_per_epoch=10, epochs=5, lr=1.0, opt="adamw"):
    p = nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [p], "lr": lr}], OptimConfig(name=opt, weight_decay=0))
    sched = build_scheduler(optimizer, cfg, steps_per_epoch, epochs)
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    return np.array(lrs)


def test_cosine_with_warmup_endpoints():
    lrs = _curve(ScheduleConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.01))
    assert lrs[0] == pytest.approx(0.1)       # warm-up step 1 of 10
    assert lrs[9] == pytest.approx(1.0)       # end of warm-up: the full rate
    assert lrs[10] == pytest.approx(1.0)      # cosine starts at its peak
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) < 0)
    t = (49 - 10) / 40
    assert lrs[-1] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))
    assert lrs[-1] < 0.02


def test_step_schedule():
    lrs = _curve(ScheduleConfig(name="step", step_size=2, gamma=0.1))
    assert lrs[:20] == pytest.approx([1.0] * 20)
    assert lrs[20:40] == pytest.approx([0.1] * 20)
    assert lrs[40:] == pytest.approx([0.01] * 10)


def test_onecycle_peak_and_ends():
    lrs = _curve(ScheduleConfig(name="onecycle", warmup_epochs=1), lr=0.5)
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(0.5)
    assert 8 <= peak <= 11                    # pct_start = warm-up share (10 of 50 steps)
    assert lrs[0] == pytest.approx(0.5 / 25)  # torch's default div_factor
    assert lrs[-1] < 1e-4


def test_cyclic_between_bounds():
    lrs = _curve(ScheduleConfig(name="cyclic", step_size=2, min_lr_ratio=0.1), opt="sgd")
    assert lrs.min() == pytest.approx(0.1) and lrs.max() == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return ArrayBatches(x, y, batch_size=32, shuffle=True)


@pytest.mark.slow
def test_lr_range_test_ramp_divergence_suggestion_and_model_untouched():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    m[0].weight.requires_grad_(False)  # a frozen layer must stay frozen afterwards
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    res = lr_range_test(m, _data(), BatchPipeline(), Runtime.create("cpu"),
                        optim_cfg=OptimConfig(name="sgd", momentum=0.9, weight_decay=0))
    # untouched: weights and buffers (BN statistics), mode, requires_grad, grads, RNG state
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not m.training and not any(mod.training for mod in m.modules())
    assert m[0].weight.requires_grad is False and m[3].weight.requires_grad is True
    assert all(p.grad is None for p in m.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    lrs = np.array(res["lrs"])
    assert lrs[0] == pytest.approx(1e-7)
    assert np.allclose(lrs[1:] / lrs[:-1], (10 / 1e-7) ** (1 / 99))  # exponential ramp
    assert len(lrs) == 100 and 1e-3 < res["suggestion"] < 10
    assert res["min_div_10"] == pytest.approx(lrs[int(np.argmin(res["losses"]))] / 10)


@pytest.mark.slow
def test_lr_range_test_stops_at_divergence():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))  # no BN: SGD blows up
    res = lr_range_test(m, _data(), BatchPipeline(), Runtime.create("cpu"),
                        optim_cfg=OptimConfig(name="sgd", momentum=0.9, weight_decay=0))
    assert res["diverged_at"] is not None and len(res["lrs"]) < 100
    last = res["raw_losses"][-1]
    assert res["losses"][-1] > 4 * min(res["losses"]) or not math.isfinite(last)
    assert 1e-3 < res["suggestion"] < res["diverged_at"]


def test_suggestion_is_steepest_descent():
    lrs = list(np.logspace(-7, 1, 100))
    x = np.log10(lrs)
    losses = list(2 - np.tanh(2 * (x + 3)) + np.where(x > -1, (x + 1) ** 2 * 5, 0))
    s = suggest(lrs, losses)
    assert s["steepest"] == pytest.approx(1e-3, rel=0.15)


def test_lr_range_test_keeps_group_ratios():
    m = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    seen = []

    class Spy(BatchPipeline):
        def loss(self, logits, target):
            seen.append([g["lr"] for g in opt_holder[0].param_groups])
            return super().loss(logits, target)

    import vistrain.training.optim as optim_mod
    opt_holder = []
    real = optim_mod.build_optimizer

    def spy_build(*a, **k):
        opt = real(*a, **k)
        opt_holder.append(opt)
        return opt
    optim_mod.build_optimizer = spy_build
    try:
        lr_range_test(m, _data(), Spy(), Runtime.create("cpu"), steps=5,
                      param_groups=[{"params": list(m[0].parameters()), "lr": 1e-4},
                                    {"params": list(m[1].parameters()), "lr": 1e-3}],
                      optim_cfg=OptimConfig(weight_decay=0))
    finally:
        optim_mod.build_optimizer = real
    for lrs in seen:
        assert lrs[0] == pytest.approx(lrs[-1] / 10)  # [first group decay, no-decay, second ...]
    assert seen[0][-1] == pytest.approx(1e-7)


@pytest.mark.slow
def test_lr_find_cli_writes_plot_and_suggestion(tmp_path, capsys):
    import json
    from conftest import make_image_folder
    from vistrain.cli.main import main
    root = make_image_folder(tmp_path / "data", per_class=6)
    rc = main(["lr-find", str(root), "--model", "resnet18", "--no-pretrained", "--strategy", "gradual",
               "--set", "preprocess.size=32", "--set", "data.cache=off", "--device", "cpu",
               "--steps", "12", "--out", str(tmp_path / "lr.png"), "--json"])
    assert rc == 0
    assert (tmp_path / "lr.png").stat().st_size > 1000
    res = json.loads(capsys.readouterr().out)  # --json: one document on stdout, nothing else
    assert len(res["lrs"]) == 12 and res["lrs"][0] == 1e-7
