"""--budget with a named recipe: an estimate before the first epoch, the epochs cut to fit, one
log line, the stop at the deadline with a finished model, and nothing measured without a budget."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

import vistrain
import vistrain.training.budget as budget
import vistrain.training.strategy as strategy
from conftest import make_image_folder
from vistrain.config import TrainConfig

TINY = dict(model="vistrain/resnet-tiny", strategy="finetune", batch_size=8, preprocess={"size": 16},
            data={"num_workers": 0, "cache": "off"}, progress=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """3 classes x 12 RGB 16 px images."""
    return make_image_folder(tmp_path_factory.mktemp("budget") / "data", size=(16, 16))


def _measured(monkeypatch, ips: float) -> list:
    """Make the measured training rate ``ips`` images/s; returns the list of measured sizes."""
    calls = []

    def fake(model, size, channels, rt, **kw):
        calls.append(size)
        return ips

    monkeypatch.setattr(budget, "train_images_per_second", fake)
    return calls


def _run_json(run) -> dict:
    return json.loads((run.run_dir / "run.json").read_text())


@pytest.mark.slow
def test_estimate_over_the_budget_cuts_the_epochs_and_says_so(small, tmp_path, monkeypatch, caplog):
    calls = _measured(monkeypatch, 1.0)  # 1 image/s: ~36 s per epoch of this data
    r = vistrain.train(small, out=tmp_path / "run", epochs=3, budget=2, **TINY)
    rec = _run_json(r)["strategy"]["budget"]
    assert calls == [16]
    assert rec["budget_minutes"] == 2 and rec["epochs"] == 3 and rec["images_per_second"] == 1.0
    assert rec["estimate_seconds"] > rec["left_seconds"] * budget.BUDGET_SHARE
    cut = rec["cut_epochs"]
    assert 1 <= cut < 3 and len(r.history) == cut and rec["decision"].startswith("over: ")
    assert f"training {cut} epoch" in rec["decision"]
    assert rec["reserve_seconds"] > budget.slack_seconds(2)  # the slack and the evaluation's passes
    assert TrainConfig.load(r.run_dir / "config.yaml").train.epochs == cut  # a resume trains the cut
    lines = [m for m in caplog.messages if m.startswith("budget: ")]
    assert len(lines) == 1 and "over the 2 min budget" in lines[0] and "--budget none" in lines[0]
    html = (r.run_dir / "report.html").read_text()
    assert "Time budget" in html and "3 epochs estimated at" in html and f"training {cut} epoch" in html
    assert "time budget (2.0 min): over: " in (r.run_dir / "MODEL_CARD.md").read_text()


def test_training_stops_where_the_evaluation_still_fits(monkeypatch):
    """The epoch driver's deadline is the budget less the reserve (the slack and the passes after
    training): a run whose one epoch does not fit has its evaluated model by the budget."""
    import dataclasses
    Ctx = dataclasses.make_dataclass("Ctx", ["deadline", "cfg", "rt"])
    rt = SimpleNamespace(is_main=True, distributed=False)
    monkeypatch.setattr(budget, "_decide", lambda ctx, resume: {"reserve_seconds": 40.0, "cut_epochs": 1})
    ctx, rec = budget.fit_to_budget(Ctx(1000.0, TrainConfig(), rt))
    assert ctx.deadline == 960.0 and ctx.cfg.train.epochs == 1 and rec["reserve_seconds"] == 40.0
    monkeypatch.setattr(budget, "_decide", lambda ctx, resume: {"reserve_seconds": None, "cut_epochs": None})
    assert budget.fit_to_budget(Ctx(1000.0, TrainConfig(), rt))[0].deadline == 1000.0  # not estimated


@pytest.mark.slow
def test_estimate_within_the_budget_keeps_the_epochs(small, tmp_path, monkeypatch):
    _measured(monkeypatch, 1e6)
    r = vistrain.train(small, out=tmp_path / "run", epochs=2, budget=5, **TINY)
    rec = _run_json(r)["strategy"]["budget"]
    assert rec["cut_epochs"] is None and rec["decision"].startswith("fits: ") and len(r.history) == 2


@pytest.mark.slow
def test_a_short_estimate_stops_at_the_deadline_with_a_finished_model(small, tmp_path, monkeypatch):
    _measured(monkeypatch, 1e6)  # the estimate fits; the clock then says the budget is spent
    monkeypatch.setattr(strategy, "time", SimpleNamespace(monotonic=lambda: float("inf")))
    r = vistrain.train(small, out=tmp_path / "run", epochs=3, budget=5, **TINY)
    run = _run_json(r)
    stop = run["strategy"]["stopped_by_budget"]  # within the first epoch, after its first batch
    assert (stop["after_epoch"], stop["of"], stop["batches"][0]) == (1, 3, 1) and stop["batches"][1] > 1
    assert len(r.history) == 1
    assert run["strategy"]["budget"]["cut_epochs"] is None
    assert (r.run_dir / "model.safetensors").is_file() and "accuracy" in r.metrics["test"]
    assert (r.run_dir / "report.html").is_file()


@pytest.mark.slow
def test_no_budget_measures_nothing(small, tmp_path, monkeypatch):
    calls = _measured(monkeypatch, 1.0)
    monkeypatch.setattr(strategy, "time", SimpleNamespace(monotonic=lambda: float("inf")))
    r = vistrain.train(small, out=tmp_path / "run", epochs=2, budget="none", **TINY)
    run = _run_json(r)
    assert calls == [] and "budget" not in run["strategy"] and "stopped_by_budget" not in run["strategy"]
    assert len(r.history) == 2


@pytest.mark.slow
def test_the_measurement_leaves_the_seeded_run_as_it_was(small, tmp_path):
    """The measured steps (random inputs, dropout) do not shift the seeded random stream."""
    measured = vistrain.train(small, out=tmp_path / "a", epochs=1, budget=5, **TINY)
    assert _run_json(measured)["strategy"]["budget"]["images_per_second"] > 0  # really measured
    unmeasured = vistrain.train(small, out=tmp_path / "b", epochs=1, budget="none", **TINY)
    assert measured.history[0]["train_loss"] == unmeasured.history[0]["train_loss"]


@pytest.mark.slow
def test_feature_extraction_is_not_measured_but_keeps_the_deadline(small, tmp_path, monkeypatch):
    calls = _measured(monkeypatch, 1.0)
    r = vistrain.train(small, out=tmp_path / "run", epochs=2, budget=5,
                       **{**TINY, "strategy": "feature-extraction"})
    rec = _run_json(r)["strategy"]["budget"]
    assert calls == [] and rec["estimate_seconds"] is None and rec["cut_epochs"] is None
    assert rec["decision"].startswith("not estimated")


CLI = """
import sys
import vistrain.training.budget as budget
budget.train_images_per_second = lambda *a, **kw: 1.0  # 1 image/s: the estimate passes the budget
from vistrain.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_cli_says_the_cut_once(small, tmp_path):
    out = tmp_path / "cli"
    argv = ["train", str(small), "--out", str(out), "--strategy", "finetune", "--model", "vistrain/resnet-tiny",
            "--epochs", "3", "--budget", "2", "--batch-size", "8", "--set", "preprocess.size=16",
            "--set", "data.cache=off", "--set", "data.num_workers=0"]
    done = subprocess.run([sys.executable, "-c", CLI, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    said = [ln for ln in (done.stdout + done.stderr).splitlines() if "over the 2 min budget" in ln]
    assert len(said) == 1 and "estimated at" in said[0] and "instead" in said[0], said
    assert sum("over the 2 min budget" in ln for ln in (out / "train.log").read_text().splitlines()) == 1
