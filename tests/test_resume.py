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
        "train": {"epochs": 3, "device": "cpu", "seed": 0, "patience": None, "keep_checkpoints": True}})


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("source", ["memory", "stream", "shards"])
def test_resume_within_an_epoch_gives_identical_weights(tmp_path, monkeypatch, source):
    """``train.checkpoint_minutes``: a run killed after batch 2 of epoch 2 resumes at batch 3 (the
    pixel array, files decoded per batch, or shards) and ends as the uninterrupted run."""
    from conftest import make_image_folder
    from vistrain.workflows.pack import pack
    root = make_image_folder(tmp_path / "data", per_class=20)  # 42 training images: 5 batches
    if source == "shards":
        root = tmp_path / "shards"
        pack(tmp_path / "data", out=root, workers=0, progress=False, shard_mb=0.01)

    def cfg():
        c = _cfg(root)
        c.data.cache = {"memory": "off", "stream": "stream", "shards": "auto"}[source]
        c.data.num_workers = 0
        c.train.checkpoint_minutes = 1e-9  # after every step
        c.model.name = "vistrain/resnet-tiny"
        return c
    full = run_training(cfg(), tmp_path / "full", progress=False)

    real, calls = strategy.train_one_epoch, {"n": 0}

    def dies_in_second(model, batches, *a, **k):
        calls["n"] += 1
        if calls["n"] != 2:
            return real(model, batches, *a, **k)

        def two_then_die():
            for i, batch in enumerate(batches):
                if i == 2:
                    raise KeyboardInterrupt
                yield batch
        return real(model, two_then_die(), *a, **k)
    monkeypatch.setattr(strategy, "train_one_epoch", dies_in_second)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg(), tmp_path / "killed", progress=False)
    saved = load_checkpoint(tmp_path / "killed/checkpoints/last.pt")
    assert saved["epoch"] == 1 and saved["within"]["batches_done"] == 2
    monkeypatch.setattr(strategy, "train_one_epoch", real)
    resumed = run_training(cfg(), tmp_path / "killed", resume=True, progress=False)

    a = load_checkpoint(tmp_path / "full/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "killed/checkpoints/last.pt")
    assert a["epoch"] == b["epoch"] == 2 and "within" not in b or b["within"]["batches_done"] > 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
