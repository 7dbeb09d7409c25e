"""Exact resume: a run killed after epoch 2 and resumed ends with the same weights as one that
was never interrupted (CPU, fixed seed, cosine schedule over the full 3 epochs)."""
from __future__ import annotations

import pytest
import torch

import vistrain.training.strategy as strategy
from vistrain.config import TrainConfig
from vistrain.training.checkpoint import load_checkpoint
from vistrain.training.run import run_training


def _cfg(root, name="finetune"):
    return TrainConfig.from_dict({
        "data": {"root": str(root), "cache": "off", "batch_size": 8}, "preprocess": {"size": 32},
        "model": {"name": "resnet18", "pretrained": False},
        "strategy": {"name": name, "bn_policy": "train"},
        "train": {"epochs": 3, "device": "cpu", "seed": 0, "patience": None}})


def test_resume_after_kill_gives_identical_weights(tmp_path, monkeypatch):
    from conftest import make_image_folder
    root = make_image_folder(tmp_path / "data", per_class=10)
    full = run_training(_cfg(root), tmp_path / "full", progress=False)

    real = strategy.train_one_epoch
    calls = {"n": 0}

    def dies_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(strategy, "train_one_epoch", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(root), tmp_path / "killed", progress=False)
    assert load_checkpoint(tmp_path / "killed/checkpoints/last.pt")["epoch"] == 1  # 0-based: 2 done
    monkeypatch.setattr(strategy, "train_one_epoch", real)
    resumed = run_training(_cfg(root), tmp_path / "killed", resume=True, progress=False)

    a = load_checkpoint(tmp_path / "full/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "killed/checkpoints/last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:  # every weight and buffer (BN statistics included), exactly
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["best_state"]:
        assert torch.equal(a["best_state"][k], b["best_state"][k]), k
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    assert [h["lr"] for h in full.history] == [h["lr"] for h in resumed.history]
