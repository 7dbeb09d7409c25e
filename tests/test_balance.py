"""Class imbalance: weights, the auto rule, the weighted loss, the balanced sampler, the record."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vistrain.data.loader import ArrayBatches
from vistrain.errors import VistrainError
from vistrain.training.balance import BalancedBatches, apply_balance, class_weights, decide
from vistrain.training.loop import BatchPipeline


def test_class_weights_inverse_count_mean_one():
    counts = np.array([80, 20, 10, 0])
    w = class_weights(counts)
    inv = np.array([1 / 80, 1 / 20, 1 / 10])
    np.testing.assert_allclose(w[:3], inv / inv.mean())
    assert w[3] == 0 and w[:3].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(class_weights([7, 7, 7]), [1, 1, 1])


def test_auto_rule_and_explicit_modes():
    imbalanced = [0] * 31 + [1] * 10          # ratio 3.1 > 3: weights
    borderline = [0] * 30 + [1] * 10          # ratio 3.0: none
    d = decide("auto", imbalanced, 2)
    assert d["applied"] == "weights" and d["imbalance_ratio"] == pytest.approx(3.1)
    assert d["train_counts"] == [31, 10] and "3.10 > 3" in d["reason"]
    assert decide("auto", borderline, 2)["applied"] == "none"
    assert decide("sampler", borderline, 2)["applied"] == "sampler"
    assert decide("weights", borderline, 2)["class_weights"] == pytest.approx([0.5, 1.5])
    assert decide("none", imbalanced, 2)["applied"] == "none"
    with pytest.raises(VistrainError, match="data.balance='oversample'.*weights"):
        decide("oversample", imbalanced, 2)


def test_weighted_loss_matches_reference():
    torch.manual_seed(0)
    logits, y = torch.randn(12, 3), torch.tensor([0, 1, 2, 0, 0, 0, 1, 2, 0, 0, 1, 0])
    w = torch.tensor([0.25, 1.0, 1.75])
    pipe = BatchPipeline(class_weights=w)
    nll = -torch.log_softmax(logits, 1)[torch.arange(12), y]
    assert pipe.loss(logits, y).item() == pytest.approx((w[y] * nll).sum().item() / w[y].sum().item(), rel=1e-6)
    soft = torch.softmax(torch.randn(12, 3), 1)  # mixup targets: sum_c w_c t_c (-log p_c)
    ref = (-(soft * w) * torch.log_softmax(logits, 1)).sum(1).mean()
    assert pipe.loss(logits, soft).item() == pytest.approx(ref.item(), rel=1e-6)
    assert BatchPipeline().loss(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item())


def _batches(labels, **kw):
    labels = np.asarray(labels)
    return ArrayBatches(np.zeros((len(labels), 2), np.float32), labels, batch_size=50, shuffle=True,
                        seed=5, **kw)


def test_sampler_draws_classes_uniformly_and_is_seeded_by_epoch():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    pipe, tb = apply_balance("sampler", BatchPipeline(), _batches(labels), 3)
    assert isinstance(tb, BalancedBatches) and pipe.class_weights is None
    assert len(tb) == 20  # as many draws per epoch as training images
    draws = []
    for epoch in range(6):
        tb.set_epoch(epoch)
        draws.append(tb.epoch_indices())
    freq = np.bincount(labels[np.concatenate(draws)], minlength=3) / (6 * len(labels))
    # 6000 draws, p = 1/3 each: 4 standard deviations is 0.024
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.025)
    tb.set_epoch(2)
    np.testing.assert_array_equal(tb.epoch_indices(), draws[2])  # same epoch, same draw (resume)
    assert not np.array_equal(draws[0], draws[1])
    xs = [y for _, y in tb]  # iteration yields the drawn labels
    assert sum(len(y) for y in xs) == len(labels)


def test_sampler_shards_under_ddp_and_weights_mode():
    labels = np.array([0] * 40 + [1] * 10)
    full = apply_balance("sampler", BatchPipeline(), _batches(labels), 2)[1]
    r0 = apply_balance("sampler", BatchPipeline(), _batches(labels, rank=0, world_size=2), 2)[1]
    r1 = apply_balance("sampler", BatchPipeline(), _batches(labels, rank=1, world_size=2), 2)[1]
    np.testing.assert_array_equal(np.sort(np.concatenate([r0.epoch_indices(), r1.epoch_indices()])),
                                  np.sort(full.epoch_indices()))
    pipe, tb = apply_balance("auto", BatchPipeline(label_smoothing=0.1), _batches(labels), 2)
    assert type(tb) is ArrayBatches and pipe.label_smoothing == 0.1
    np.testing.assert_allclose(pipe.class_weights.numpy(), [0.4, 1.6])


@pytest.mark.slow
def test_training_records_balance(tmp_path, monkeypatch):
    from conftest import make_image_folder
    from vistrain.config import TrainConfig
    from vistrain.training.run import run_training
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6, size=(16, 16))
    make_image_folder(tmp_path / "data", classes=("a",), per_class=30, size=(16, 16), seed=1)
    cfg = TrainConfig.from_dict({"data": {"root": str(data), "balance": "sampler"},
                                 "model": {"name": "resnet18", "pretrained": False},
                                 "preprocess": {"size": 32}, "augment": {"preset": "none"},
                                 "strategy": {"name": "finetune"}, "train": {"epochs": 1}})
    run_training(cfg, tmp_path / "run", progress=False)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())["strategy"]["balance"]
    assert rec["requested"] == "sampler" and rec["applied"] == "sampler"
    assert rec["imbalance_ratio"] > 3 and sum(rec["train_counts"]) < 36
