"""A finished recipe race kept in the cache: the same command on the same data takes its outcome;
anything the outcome depends on that differs races again."""
from __future__ import annotations

import json
import os

import pytest

import vistrain
import vistrain.training.race as race
from conftest import make_image_folder
from vistrain.config import TrainConfig
from vistrain.data.scan import scan_folder
from vistrain.device import Runtime
from vistrain.training.race_memo import memo_path, read_memo, reuse_memo, write_memo

AUTO = {"candidates": [{"recipe": "feature-extraction", "model": "tf_efficientnet_lite0", "size": 224},
                       {"recipe": "scratch", "model": "vistrain/resnet20", "size": 24, "grey": True}],
        "entrants": [{"name": "feature-extraction", "recipe": "feature-extraction", "epochs": 30,
                      "changes": {"strategy.name": "feature-extraction"}},
                     {"name": "scratch", "recipe": "finetune", "epochs": 12,
                      "changes": {"model.name": "vistrain/resnet20"}}],
        "plain": ["data: ..."]}


@pytest.fixture
def grey(tmp_path):
    return make_image_folder(tmp_path / "grey", per_class=30, size=(24, 24), mode="L")


def _cfg(root, **train):
    return TrainConfig.from_dict({"data": {"root": str(root)}, "train": {"budget": 3, **train}}).check()


def test_the_key_holds_what_the_outcome_depends_on(grey, tmp_path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    index, rt = scan_folder(grey), Runtime.create("cpu")
    same = memo_path(_cfg(grey), index, None, AUTO, rt)
    assert same == memo_path(_cfg(grey), scan_folder(grey), None, AUTO, rt)
    others = {memo_path(_cfg(grey, budget=4), index, None, AUTO, rt),
              memo_path(_cfg(grey, seed=1), index, None, AUTO, rt),
              memo_path(_cfg(grey), index, {"train": [0, 1], "val": [2]}, AUTO, rt),
              memo_path(_cfg(grey), index, None, {**AUTO, "candidates": AUTO["candidates"][:1]}, rt)}
    # the candidates' measured timings differ from run to run: not in the key
    timed = {**AUTO, "entrants": [dict(e, epochs=e["epochs"] - 1) for e in AUTO["entrants"]]}
    assert memo_path(_cfg(grey), index, None, timed, rt) == same
    assert same not in others and len(others) == 4
    # what acts after the race or beside training leaves the key: a tracked or calibration-free
    # repeat of the command takes the same outcome
    tracked = TrainConfig.from_dict({"data": {"root": str(grey)}, "logging": {"track": ["mlflow"]},
                                     "train": {"budget": 3, "calibration": "none", "keep_checkpoints": True}}).check()
    assert memo_path(tracked, index, None, AUTO, rt) == same
    first = sorted(grey.rglob("*.png"))[0]
    first.write_bytes(first.read_bytes())  # the same bytes, a new mtime: new data as far as a key knows
    os.utime(first, (1, 1))
    assert memo_path(_cfg(grey), scan_folder(grey), None, AUTO, rt) != same
    off = TrainConfig.from_dict({"data": {"root": str(grey), "cache": "off"}}).check()
    assert memo_path(off, index, None, AUTO, rt) is None
    assert memo_path(_cfg(grey), index, lambda ix: {}, AUTO, rt) is None


def test_a_kept_outcome_round_trips_and_a_damaged_one_is_ignored(tmp_path):
    path = tmp_path / "race" / "race-abc.json"
    after = {**AUTO, "race": {"winner": "scratch", "plain": "race: scratch won"}, "chosen": "finetune",
             "settings": {"model.name": "vistrain/resnet20", "optim.lr": 0.003, "train.epochs": 12},
             "decision": "scratch: won",
             "plain": ["data: ...", "race: scratch won on validation accuracy"]}
    write_memo(path, after)
    kept = read_memo(path)
    assert kept["settings"]["train.epochs"] == 12  # an end-to-end winner: the settings as they were
    reused = {**AUTO, "plain": ["data: ..."]}
    cfg = reuse_memo(_cfg(tmp_path), reused, kept, path)
    assert cfg.model.name == "vistrain/resnet20" and cfg.optim.lr == 0.003
    assert reused["settings"] == after["settings"] and reused["race"]["reused"] == str(path)
    assert reused["plain"][-1].startswith("race (kept from an earlier run") and "scratch won" in reused["plain"][-1]
    frozen = {**after, "race": {"winner": "feature-extraction", "plain": "race: fe won"},
              "settings": {"strategy.name": "feature-extraction", "train.epochs": 21}}
    write_memo(path, frozen)  # the head stopped early at 21: replayed with the schedule it ran, 30
    assert read_memo(path)["settings"]["train.epochs"] == 30
    path.write_text('{"race": ')
    assert read_memo(path) is None
    path.write_text(json.dumps({"race": {}}))  # another format: raced again
    assert read_memo(path) is None


@pytest.mark.slow
def test_a_second_identical_run_takes_the_kept_race(grey, tmp_path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(race, "LR_STEPS", 12)
    monkeypatch.setattr(race, "MAX_ENTRANTS", 2)
    calls = []
    real = race.Race.run
    monkeypatch.setattr(race.Race, "run", lambda self, entrants: calls.append(1) or real(self, entrants))
    first = vistrain.train(grey, out=tmp_path / "a", epochs=3, budget=2, progress=False)
    second = vistrain.train(grey, out=tmp_path / "b", epochs=3, budget=2, progress=False)
    assert len(calls) == 1
    a, b = (json.loads((r.run_dir / "run.json").read_text())["strategy"]["reasoning"] for r in (first, second))
    assert "reused" not in a["race"] and b["race"]["reused"].endswith(".json")
    assert a["settings"] == b["settings"] and a["chosen"] == b["chosen"]
    assert any(line.startswith("race (kept from an earlier run") for line in b["plain"])
    ca, cb = (TrainConfig.load(r.run_dir / "config.yaml") for r in (first, second))
    assert (ca.strategy, ca.model, ca.optim, ca.train) == (cb.strategy, cb.model, cb.optim, cb.train)
    assert "Not raced again" in (second.run_dir / "report.html").read_text()
    vistrain.train(grey, out=tmp_path / "c", epochs=3, budget=2, progress=False, seed=1)  # another seed
    assert len(calls) == 2
