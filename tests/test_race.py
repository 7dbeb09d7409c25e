"""The recipe race of strategy auto: its plan within the budget, successive halving, the run it leaves."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vistrain
import vistrain.training.auto as auto
import vistrain.training.race as race
from conftest import make_image_folder
from vistrain.config import TrainConfig
from vistrain.device import Runtime
from vistrain.training.race import Entrant, Race, plan_race, survivors, worst_case


def entrant(name, epoch_s, fixed=5.0, recipe=None):
    return Entrant(name, recipe or ("feature-extraction" if epoch_s == 0 else "finetune"), {}, epoch_s, fixed)


# ---- the plan ---------------------------------------------------------------------------------
def test_survivors_halve_to_one():
    assert [survivors(n) for n in (1, 2, 3, 4, 5)] == [[1], [2, 1], [3, 1], [4, 2, 1], [5, 2, 1]]


def test_no_budget_plans_every_epoch():
    plan = plan_race([entrant("fe", 0), entrant("ft", 30.0)], None, max_epochs=12)
    assert [e.epochs for e in plan.entrants] == [12, 12] and plan.survivors == [2, 1]


def test_tight_budget_drops_the_most_expensive_end_to_end_entrant_not_the_frozen_head():
    field_ = [entrant("fe", 0, fixed=30), entrant("slow", 60.0), entrant("cheap", 2.0), entrant("mid", 20.0)]
    plan = plan_race(field_, 400.0, max_epochs=30)
    names = [e.name for e in plan.entrants]
    assert "fe" in names and "cheap" in names and "slow" not in names and plan.dropped[0] == "slow"
    assert worst_case(plan.entrants, plan.survivors) <= 400.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 120.0), st.floats(0.0, 60.0)), min_size=1, max_size=5),
       st.floats(30.0, 3000.0), st.integers(1, 40))
def test_the_plan_never_exceeds_the_seconds_left(costs, seconds, max_epochs):
    field_ = [entrant("fe", 0, fixed=10.0)] + [entrant(f"e{i}", e, f) for i, (e, f) in enumerate(costs)]
    plan = plan_race(field_, seconds, max_epochs=max_epochs)
    if len(plan.entrants) > 1:  # a race is planned only where its worst case fits
        assert plan.worst_seconds <= seconds + 1e-6
        assert all(e.epochs >= min(race.MIN_EPOCHS, max_epochs) for e in plan.entrants if e.end_to_end)
        assert {e.name for e in plan.entrants} | set(plan.dropped) == {e.name for e in field_}


# ---- successive halving, with the training replaced by scores ---------------------------------
class ScriptedRace(Race):
    """A race whose entrants' validation accuracy is a function of their epochs (no training)."""

    def __init__(self, curves, seconds=None):
        cfg = TrainConfig.from_dict({"data": {"root": "d"}, "train": {"epochs": 8}}).check()
        super().__init__(cfg, None, Runtime.create("cpu"), None, "unused", seconds=seconds, deadline=None,
                         progress=False)
        self.curves, self.calls = curves, []

    def _train(self, e, until):
        self.calls.append((e.name, until))
        e.trained, e.lr, e.lr_source = until, 0.001, "scripted"
        e.score = self.curves[e.name](until)
        e.curve.append([float(until), e.score])
        e.finished = not e.end_to_end or until >= e.epochs

    def _config(self, e):
        return self.cfg

    def _folder(self, e):
        from pathlib import Path
        return Path("/nonexistent") / e.name


def test_halving_keeps_the_better_half_and_trains_no_epoch_twice():
    curves = {"fe": lambda n: 0.80, "a": lambda n: 0.5 + 0.05 * n, "b": lambda n: 0.3 + 0.01 * n,
              "c": lambda n: 0.6 + 0.04 * n}
    r = ScriptedRace(curves)
    out = r.run([entrant("fe", 0), entrant("a", 1.0), entrant("b", 1.0), entrant("c", 1.0)])
    # rung 1 (2 of 8 epochs): fe 0.80, c 0.68, a 0.60, b 0.32 -> fe and c; rung 2 (4 epochs): c 0.76 <
    # fe, and c is the only one with training left: it trains to 8 (0.92) and wins
    assert r.calls == [("fe", 8), ("a", 2), ("b", 2), ("c", 2), ("c", 4), ("c", 8)]
    assert out.winner.name == "c" and out.record["winner"] == "c"
    results = {e["name"]: e["result"] for e in out.record["entrants"]}
    assert results == {"fe": "out after rung 2", "a": "out after rung 1", "b": "out after rung 1", "c": "winner"}


def test_the_frozen_head_wins_when_nothing_beats_it_finished():
    r = ScriptedRace({"fe": lambda n: 0.9, "a": lambda n: 0.5 + 0.01 * n})
    out = r.run([entrant("fe", 0), entrant("a", 1.0)])
    assert out.winner.name == "fe" and r.calls == [("fe", 8), ("a", 2), ("a", 8)]


def test_ties_go_to_the_rules_order():
    r = ScriptedRace({"x": lambda n: 0.7, "y": lambda n: 0.7})
    assert r.run([entrant("x", 1.0), entrant("y", 1.0)]).winner.name == "x"


# ---- a race on real images --------------------------------------------------------------------
@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("race") / "grey", per_class=30, size=(24, 24), mode="L")


@pytest.mark.slow
def test_an_auto_run_races_and_continues_the_winner(grey, tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "SCRATCH_MIN_PER_CLASS", 1)
    monkeypatch.setattr(race, "LR_STEPS", 12)
    r = vistrain.train(grey, out=tmp_path / "run", epochs=4, budget=4, progress=False, data={"cache": "off"})
    run = json.loads((r.run_dir / "run.json").read_text())
    reasoning = run["strategy"]["reasoning"]
    rec = reasoning["race"]
    assert len(rec["entrants"]) >= 2 and rec["winner"] in {e["name"] for e in rec["entrants"]}
    winner = next(e for e in rec["entrants"] if e["result"] == "winner")
    assert winner["lr"] is not None and winner["lr_source"]
    assert all(e["curve"] for e in rec["entrants"] if e["score"] is not None)
    assert run["wall_seconds"] <= 4 * 60 * 1.1
    assert not (r.run_dir / "race").exists()               # the entrants' folders are gone
    saved = TrainConfig.load(r.run_dir / "config.yaml")    # a resume continues the winner
    assert saved.strategy.name != "auto" and saved.train.epochs == len(r.history) or \
        "stopped_by_budget" in run["strategy"]
    # its rungs (the frozen head's whole training too) were reused, not trained again
    assert r.history[0]["epoch"] == 1 and len(r.history) >= winner["trained"]
    assert [round(h["val_accuracy"], 4) for h in r.history[:winner["trained"]]] == \
        [round(a, 4) for _, a in winner["curve"]]
    html = (r.run_dir / "report.html").read_text()
    assert "The recipe race" in html and "validation accuracy against seconds" in html
    assert any(line.startswith("race: ") for line in reasoning["plain"])


@pytest.mark.slow
def test_cv_races_once_for_all_folds(grey, tmp_path, monkeypatch):
    calls = []
    real = race.race_recipe

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("vistrain.training.race_memo.race_recipe", counted)
    monkeypatch.setattr(race, "LR_STEPS", 12)
    out = tmp_path / "cv"
    vistrain.cv(grey, folds=2, out=out, epochs=3, budget=3, progress=False, data={"cache": "off"})
    saved = json.loads((out / "strategy_auto.json").read_text())
    assert len(calls) == (1 if "race" in saved else 0)
    strategies = {TrainConfig.load(out / f"fold-{k}" / "config.yaml").strategy.name for k in (0, 1)}
    assert len(strategies) == 1 and strategies != {"auto"}
    assert not math.isnan(json.loads((out / "cv_metrics.json").read_text())["summary"]["metrics"]["accuracy"]["mean"])


def test_a_lead_over_the_frozen_head_within_the_noise_keeps_the_frozen_head():
    close = ScriptedRace({"fe": lambda n: 0.80, "a": lambda n: 0.80 + 0.01 * n})  # a: 0.88 at 8 epochs
    close.n_val = 150   # 1.645 standard errors of the difference: 0.069, below the lead of 0.08
    out = close.run([entrant("fe", 0), entrant("a", 1.0)])
    assert out.winner.name == "a" and "fallback" not in out.record
    closer = ScriptedRace({"fe": lambda n: 0.85, "a": lambda n: 0.80 + 0.01 * n})
    closer.n_val = 150
    out = closer.run([entrant("fe", 0), entrant("a", 1.0)])
    assert out.winner.name == "fe" and "within the noise" in out.record["fallback"]
    assert {e["name"]: e["result"] for e in out.record["entrants"]} == {
        "fe": "winner", "a": "not shown better than the frozen head"}
    closer2 = ScriptedRace({"fe": lambda n: 0.85, "a": lambda n: 0.80 + 0.01 * n})
    closer2.n_val = 5000  # the same lead on a large split is real
    assert closer2.run([entrant("fe", 0), entrant("a", 1.0)]).winner.name == "a"


def test_each_entrant_and_the_winner_train_at_their_own_recipes_precision():
    """A race whose first-ranked entrant is a network from scratch (bf16 where the CPU has it)
    must not train the frozen head or a fine-tuning in bf16: each runs as its named recipe would."""
    from vistrain.device import cpu_bf16_wanted
    from vistrain.training.auto import apply_choice
    from vistrain.training.prepare import recipe_runtime
    fp32 = Runtime.create("cpu")
    named = TrainConfig()                                         # cpu_amp off: float32
    scratch = apply_choice(named, {"train.cpu_amp": "auto"})      # what auto sets for scratch
    assert recipe_runtime(named, fp32) is fp32                    # nothing to change: the same object
    raced = recipe_runtime(scratch, fp32)
    assert raced.amp_dtype == (torch.bfloat16 if cpu_bf16_wanted("auto") else None)
    assert recipe_runtime(named, raced).amp_dtype is None         # the frozen head after it: float32 again
