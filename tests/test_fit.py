"""The epoch driver (:func:`vistrain.training.strategy.fit`) on a fake plan: a linear model over a
few hundred random features, no image decoded, each test in well under a second.

What is held here: the monitored metric picks the weights that are kept, early stopping counts
epochs without improvement, the budget stops inside an epoch and says where, checkpoints are
written at their cadence, and a run paused and resumed ends with the very weights of a run
trained straight through.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vistrain.training.strategy as strategy
from vistrain.config import TrainConfig
from vistrain.device import Runtime
from vistrain.training.context import RunContext
from vistrain.training.loop import BatchPipeline
from vistrain.training.plan import TrainingPlan

N, D, K = 96, 6, 3


def fake_plan(epochs: int, weights_seed: int = 0) -> TrainingPlan:
    """A linear head over ``N`` random ``D``-dimensional features of ``K`` separable classes (the
    same features every time; ``weights_seed`` draws the head's starting weights)."""
    labels = np.arange(N) % K
    x = (np.random.default_rng(0).normal(size=(N, D)) + 2.0 * np.eye(K, D)[labels]).astype(np.float32)
    torch.manual_seed(weights_seed)
    model = torch.nn.Linear(D, K)
    return TrainingPlan(kind="features", model=model, groups=[{"name": "head", "lr": 0.05,
                                                               "params": list(model.parameters())}],
                        pipe=BatchPipeline(), array=x, labels=labels.astype(np.int64),
                        parts={"train": np.arange(0, 72), "val": np.arange(72, N)}, batch_size=16,
                        epochs=epochs)


def fake_context(out, *, patience: int = 0, monitor: str = "val_loss", checkpoint_minutes: float = 0.0,
                 deadline: float | None = None) -> RunContext:
    cfg = TrainConfig()
    cfg.train.patience, cfg.train.monitor, cfg.train.checkpoint_minutes = patience, monitor, checkpoint_minutes
    cfg.data.balance = "none"
    return RunContext(cfg, None, None, None, SimpleNamespace(num_classes=K), Runtime.create("cpu"),
                      out=out, progress=False, deadline=deadline)


def scripted_validation(monkeypatch, rows: list[tuple[float, float]]) -> list[dict]:
    """Validation returns ``rows[epoch]`` as (loss, accuracy); the weights seen at each epoch's
    validation are kept, to tell which epoch's weights ``fit`` leaves in the model."""
    seen = []

    def evaluate(model, batches, pipe, rt):
        loss, acc = rows[len(seen)]
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"loss": loss, "accuracy": acc}
    monkeypatch.setattr(strategy, "evaluate", evaluate)
    return seen


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("monitor, best_epoch", [("val_loss", 1), ("val_accuracy", 2)])
def test_the_monitored_metric_picks_the_weights_kept(tmp_path, monkeypatch, monitor, best_epoch):
    seen = scripted_validation(monkeypatch, [(0.9, 0.5), (0.4, 0.6), (0.6, 0.9), (0.7, 0.7)])
    plan = fake_plan(epochs=4)
    result = strategy.fit(plan, fake_context(tmp_path, monitor=monitor))
    assert len(result.history) == 4
    assert same_weights(plan.model.state_dict(), seen[best_epoch])
    assert not same_weights(plan.model.state_dict(), seen[-1])


def test_early_stopping_counts_epochs_without_improvement(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [(0.5, 0.5), (0.6, 0.5), (0.4, 0.5), (0.45, 0.5), (0.41, 0.5),
                                      (0.3, 0.5)])
    result = strategy.fit(fake_plan(epochs=6), fake_context(tmp_path, patience=2))
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]   # no better than epoch 3 twice


def test_a_spent_budget_stops_within_the_first_epoch_and_says_where(tmp_path):
    plan = fake_plan(epochs=5)
    result = strategy.fit(plan, fake_context(tmp_path, deadline=time.monotonic() - 1.0))
    assert len(result.history) == 1
    assert result.record["stopped_by_budget"] == {"after_epoch": 1, "of": 5, "batches": [1, 4]}
    assert (tmp_path / "checkpoints" / "last.pt").is_file()   # a finished, resumable state


def test_checkpoints_within_an_epoch_follow_their_cadence(tmp_path, monkeypatch):
    saved = []
    real = strategy.ckpt.save_checkpoint
    monkeypatch.setattr(strategy.ckpt, "save_checkpoint",
                        lambda path, state: (saved.append(state.get("within")), real(path, state)))
    strategy.fit(fake_plan(epochs=2), fake_context(tmp_path, checkpoint_minutes=1e-9))
    # every step (4 per epoch) is past a cadence of ~0 s, then the epoch's own checkpoint
    assert [w["batches_done"] if w else None for w in saved] == [1, 2, 3, 4, None] * 2
    saved.clear()
    strategy.fit(fake_plan(epochs=2), fake_context(tmp_path / "hourly", checkpoint_minutes=60))
    assert saved == [None, None]                                # only after each epoch


def test_paused_and_resumed_ends_with_the_weights_of_a_straight_run(tmp_path):
    straight = fake_plan(epochs=4)
    strategy.fit(straight, fake_context(tmp_path / "straight"))
    paused = fake_plan(epochs=4)
    first = strategy.fit(paused, fake_context(tmp_path / "paused"), until=2)
    assert len(first.history) == 2
    resumed = fake_plan(epochs=4, weights_seed=1)                        # other starting weights: all come from the checkpoint
    rest = strategy.fit(resumed, fake_context(tmp_path / "paused"), resume=True)
    assert [r["epoch"] for r in rest.history] == [1, 2, 3, 4]
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
