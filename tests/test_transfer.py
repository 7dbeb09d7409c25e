"""Transfer learning: gradual unfreezing stages, discriminative rates, frozen BatchNorm statistics."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from vistrain.config import TrainConfig
from vistrain.data.loader import ArrayBatches
from vistrain.device import Runtime
from vistrain.errors import VistrainError
from vistrain.training.layers import bn_policy_hook, layer_groups, trainable_groups
from vistrain.training.loop import BatchPipeline, train_one_epoch
from vistrain.training.optim import build_optimizer
from vistrain.training.plan import GradualUnfreezer, unfreeze_plan


def _net():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=3)


def _trainable_names(groups):
    return [name for name, ps in groups if all(p.requires_grad for _, p in ps)]


def _frozen_names(groups):
    return [name for name, ps in groups if not any(p.requires_grad for _, p in ps)]


def test_gradual_every_epoch_unfreezes_last_block_first_down_to_stem():
    net = _net()
    cfg = TrainConfig()
    groups = layer_groups(net)
    names = [n for n, _ in groups]
    assert names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    trainable_groups(cfg, net, head_only=False, base_lr=1e-3, trainable_from=len(groups) - 1)
    record = {}
    hook = GradualUnfreezer(net, unfreeze_plan(len(groups), epochs=7, every=1), record)
    expected = [names[5:], names[4:], names[3:], names[2:], names[1:], names, names]
    for epoch, want in enumerate(expected):
        hook(epoch)
        assert _trainable_names(groups) == want, epoch
        assert _frozen_names(groups) == [n for n in names if n not in want], epoch
    assert [s["epoch"] for s in record["unfreeze_schedule"]] == [1, 2, 3, 4, 5, 6]
    assert record["unfreeze_schedule"][0]["trainable_groups"] == ["head"]
    assert record["unfreeze_schedule"][-1]["trainable_from"] == "stem"


def test_gradual_explicit_epochs_and_every_two():
    assert unfreeze_plan(6, epochs=8, at_epochs=[3, 5]) == [5, 5, 4, 4, 3, 3, 3, 3]
    assert unfreeze_plan(6, epochs=6, every=2) == [5, 5, 4, 4, 3, 3]
    assert unfreeze_plan(3, epochs=6, every=1) == [2, 1, 0, 0, 0, 0]
    with pytest.raises(VistrainError, match="unfreeze_epochs"):
        unfreeze_plan(6, epochs=4, at_epochs=[1, 3])
    with pytest.raises(VistrainError, match="unfreeze_every"):
        unfreeze_plan(6, epochs=4, every=0)


def test_resumed_hook_lands_on_the_same_stage():
    """The stage is a function of the epoch alone: a fresh hook at epoch 3 = a hook run 0..3."""
    a, b = _net(), _net()
    plan = unfreeze_plan(6, epochs=5, every=1)
    ha, hb = GradualUnfreezer(a, plan, {}), GradualUnfreezer(b, plan, {})
    for e in range(4):
        ha(e)
    assert hb(3) is True  # changed: the DDP wrapper must be rebuilt
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]
    assert hb(3) is False


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_frozen_params_untouched_by_optimizer_even_with_weight_decay(opt):
    net = _net()
    for m in net.modules():  # timm zero-inits each block's last BN scale: no gradient would reach bn1
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    cfg = TrainConfig.from_dict({"optim": {"name": opt, "weight_decay": 0.5}})
    groups, _ = trainable_groups(cfg, net, head_only=False, base_lr=0.1, trainable_from=4)
    optimizer = build_optimizer(groups, cfg.optim, net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    for n, p in net.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == p.requires_grad, n


def test_param_groups_carry_lr_factor_three_values_and_per_group():
    net = _net()
    cfg = TrainConfig.from_dict({"strategy": {"lr_factor": 2.0}})
    groups, _ = trainable_groups(cfg, net, head_only=False, base_lr=1e-3)
    opt = build_optimizer(groups, cfg.optim, net)
    by_name = {}
    for g in opt.param_groups:
        by_name.setdefault(g["name"], set()).add(g["lr"])
    assert {k: v.pop() for k, v in by_name.items()} == pytest.approx(
        {"stem": 1e-3 / 32, "stage1": 1e-3 / 16, "stage2": 1e-3 / 8, "stage3": 1e-3 / 4,
         "stage4": 1e-3 / 2, "head": 1e-3})

    cfg = TrainConfig.from_dict({"strategy": {"group_lrs": [1e-5, 1e-4, 1e-3]}})
    groups, _ = trainable_groups(cfg, net, head_only=False, base_lr=1.0)
    opt = build_optimizer(groups, cfg.optim, net)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    # 5 body groups in consecutive thirds (0,0,1,1,2); the head takes "late"
    assert lrs == {"stem": 1e-5, "stage1": 1e-5, "stage2": 1e-4, "stage3": 1e-4, "stage4": 1e-3,
                   "head": 1e-3}

    per = [1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6]
    cfg = TrainConfig.from_dict({"strategy": {"group_lrs": per}})
    groups, _ = trainable_groups(cfg, net, head_only=False, base_lr=1.0)
    opt = build_optimizer(groups, cfg.optim, net)
    assert [lrs for lrs in dict((g["name"], g["lr"]) for g in opt.param_groups).values()] == per
    cfg = TrainConfig.from_dict({"strategy": {"group_lrs": [1e-3, 1e-4]}})
    with pytest.raises(VistrainError, match="group_lrs"):
        trainable_groups(cfg, net, head_only=False, base_lr=1.0)


def _running_stats(net):
    return {n: b.detach().clone() for n, b in net.named_buffers() if "running" in n}


def _train_a_bit(net, bn_mode):
    x = np.random.default_rng(0).integers(0, 255, size=(16, 3, 32, 32), dtype=np.uint8)
    y = np.arange(16) % 3
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    train_one_epoch(net, ArrayBatches(x, y, batch_size=8), opt,
                    BatchPipeline(normalize=lambda t: t.float() / 255), Runtime.create("cpu"),
                    on_train_mode=bn_policy_hook(bn_mode))


def test_bn_statistics_frozen_in_feature_extraction_live():
    net = _net()
    for p in net.parameters():  # what build_plan does before the live feature path
        p.requires_grad_(False)
    _, bn_mode = trainable_groups(TrainConfig(), net, head_only=True, base_lr=1e-3)
    before = _running_stats(net)
    _train_a_bit(net, bn_mode)
    assert all(torch.equal(v, _running_stats(net)[k]) for k, v in before.items())


@pytest.mark.parametrize("policy,moves", [("frozen", False), ("train", True)])
def test_bn_statistics_finetune_policy(policy, moves):
    net = _net()
    cfg = TrainConfig.from_dict({"strategy": {"bn_policy": policy}})
    _, bn_mode = trainable_groups(cfg, net, head_only=False, base_lr=1e-3, n_train=10_000)
    before = _running_stats(net)
    _train_a_bit(net, bn_mode)
    after = _running_stats(net)
    changed = [k for k in before if "num_batches" not in k and not torch.equal(before[k], after[k])]
    assert bool(changed) == moves
    if moves:
        assert len(changed) == len([k for k in before if "num_batches" not in k])


def test_bn_statistics_of_frozen_groups_stay_during_gradual():
    net = _net()
    cfg = TrainConfig.from_dict({"strategy": {"bn_policy": "train"}})
    _, bn_mode = trainable_groups(cfg, net, head_only=False, base_lr=1e-3, n_train=10_000,
                                  trainable_from=4)  # stage4 + head trainable
    before = _running_stats(net)
    _train_a_bit(net, bn_mode)
    after = _running_stats(net)
    for k in before:
        if "num_batches" in k:
            continue
        assert torch.equal(before[k], after[k]) == (not k.startswith("layer4.")), k


def test_feature_cache_key_separates_precisions_and_keeps_float32_keys():
    from vistrain.training.features import feature_cache_key
    args = ("tf_efficientnet_lite0", "file:x", {"size": 224}, "pix")
    assert feature_cache_key(*args) == feature_cache_key(*args, "float32")
    assert feature_cache_key(*args, "bfloat16") != feature_cache_key(*args)


def _blobs(n, dims, seed, informative=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, dims)) * 3.0
    x[:, :informative] += np.eye(3)[y][:, :informative] * 2.0 + (y == 2)[:, None] * -2.0
    return x.astype(np.float32), y


def test_logreg_head_matches_scikit_learn_on_raw_features():
    """The folded head (standardisation inside the linear layer) gives sklearn's probabilities."""
    from sklearn.linear_model import LogisticRegression
    from vistrain.training.features import fit_logistic_regression, standardizer
    x, y = _blobs(300, 10, 0)
    head = fit_logistic_regression(x, y, 3, C=0.1)
    mu, sd = standardizer(x)
    ref = LogisticRegression(C=0.1, max_iter=2000, random_state=0).fit((x - mu) / sd, y)
    with torch.no_grad():
        probs = head(torch.from_numpy(x)).softmax(1).numpy()
    np.testing.assert_allclose(probs, ref.predict_proba((x - mu) / sd), atol=1e-4)


def test_select_logreg_c_picks_the_best_validation_score_smallest_on_ties():
    from vistrain.training.features import select_logreg_c
    x, y = _blobs(600, 200, 1)  # few samples, many noise dimensions: regularisation pays
    best, scores, _ = select_logreg_c(x[:150], y[:150], x[150:], y[150:], 3,
                                       grid=(0.001, 0.01, 1.0, 100.0))
    assert set(scores) == {0.001, 0.01, 1.0, 100.0}
    assert scores[best] == max(scores.values())
    assert best == min(c for c, v in scores.items() if v == scores[best])
    assert scores[best] > scores[100.0]  # weak regularisation overfits the noise dimensions


@pytest.mark.slow
def test_logreg_head_run_chooses_c_on_validation_and_records_it(tmp_path, monkeypatch):
    import json
    from conftest import make_image_folder
    from vistrain.training.features import LOGREG_C_GRID
    from vistrain.training.run import run_training
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig()
    cfg.data.root = str(make_image_folder(tmp_path / "data", per_class=10))
    cfg.data.num_workers = 0
    cfg.model.name, cfg.model.pretrained = "resnet18", False
    cfg.strategy.name, cfg.strategy.head = "feature-extraction", "logreg"
    cfg.preprocess.size = 32
    cfg.train.device = "cpu"
    result = run_training(cfg, tmp_path / "run", progress=False)
    strategy = json.loads((tmp_path / "run" / "run.json").read_text())["strategy"]
    scores = {float(c): v for c, v in strategy["logreg_c_val_accuracy"].items()}
    assert set(scores) == set(LOGREG_C_GRID)
    assert strategy["logreg_c"] in LOGREG_C_GRID and scores[strategy["logreg_c"]] == max(scores.values())
    assert 0.0 <= result.metrics["test"]["accuracy"] <= 1.0 and result.metrics["test"]["n_samples"] > 0


def _tiny_context(cfg):
    """A RunContext over 8 blank 16 px images (6 train, 2 val) and an untrained resnet18."""
    from vistrain.data.scan import ImageIndex
    from vistrain.models import PretrainedCfg
    from vistrain.training.context import PreparedData, RunContext
    from vistrain.transforms.preprocess import Preprocess
    index = ImageIndex("d", ["a", "b", "c"], [f"d/{i}.png" for i in range(8)], [i % 3 for i in range(8)])
    data = PreparedData(index, np.zeros((8, 3, 16, 16), np.uint8), np.arange(8),
                        {"train": list(range(6)), "val": [6, 7]}, "key")
    pcfg = PretrainedCfg("resnet18", input_size=(3, 16, 16), pretrained=True)
    return RunContext(cfg, _net(), pcfg, Preprocess(size=16), data, Runtime.create("cpu"))


def test_gradual_plan_leaves_the_config_alone_and_holds_the_recipe():
    from vistrain.training.plan import build_plan
    cfg = TrainConfig()
    cfg.augment.preset, cfg.train.epochs = "none", 3
    ctx = _tiny_context(cfg)
    plan = build_plan(ctx, "gradual")
    assert cfg.strategy.lr_factor is None                       # the ULMFiT default went to a copy
    assert plan.record["lr_factor"].startswith("2.6")
    lrs = [g["lr"] for g in plan.groups]
    assert lrs[-1] == pytest.approx(1e-3) and lrs[-2] == pytest.approx(1e-3 / 2.6)
    assert plan.kind == "end-to-end" and plan.epochs == 3 and plan.on_epoch_start is not None
    assert plan.labels[ctx.data.rows].tolist() == ctx.data.labels().tolist()
    assert plan.parts["train"].tolist() == [0, 1, 2, 3, 4, 5]
    assert _trainable_names(layer_groups(ctx.model)) == ["head"]  # epoch 1: the head alone
