"""``vistrain train``: every strategy, a from-scratch network, resume, on real images."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import yaml

from .acceptlib import CLASSES, SCRATCH, assert_ok, check_run_dir, vistrain


def _config(run_dir):
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_feature_extraction_on_2000_images(fe_run):
    info = check_run_dir(fe_run.dir, fe_run.res, n_images=2000, epochs=fe_run.epochs)
    cfg = _config(fe_run.dir)
    assert cfg["strategy"]["name"] == "feature-extraction" and cfg["model"]["name"] == "tf_efficientnet_lite0"
    assert cfg["data"]["num_workers"] == -1  # the default worker count
    assert info["meta"]["preprocess"]["size"] == 224
    # 300 test images, frozen ImageNet features + linear head: 0.843 after 30 epochs
    test = info["metrics"]["test"]
    assert test["n_samples"] == 300 and test["accuracy"] >= 0.75, test["accuracy"]
    for fig in ("confusion_matrix.png", "roc_curves.png", "pr_curves.png", "reliability.png"):
        assert (fe_run.dir / fig).stat().st_size > 1000, fig


def test_default_strategy_auto_races_within_its_budget(auto_run, fe_run):
    """The default is strategy auto: it measures the shipped data (140 training images per class,
    28 px, grey), races the candidates that fit its budget, finishes the winner and says why."""
    run = json.loads((auto_run.dir / "run.json").read_text())
    strategy, cfg = run["strategy"], _config(auto_run.dir)
    assert strategy["requested"] == "auto" and cfg["strategy"]["name"] == strategy["strategy"] != "auto"
    why = strategy["reasoning"]
    assert why["native_size"] == 28 and why["grey"] is True and why["n_train"] == 1400
    assert why["budget_minutes"] == 5.0 and why["measurements"]["sample_images"] == 200
    assert {"feature-extraction", "gradual", "finetune", "scratch"} <= {c["recipe"] for c in why["candidates"]}
    race = why["race"]
    entrants = {e["name"]: e for e in race["entrants"]}
    assert race["winner"] in entrants and "feature-extraction" in entrants
    winner = entrants[race["winner"]]
    assert winner["result"] == "winner" and why["chosen"] == winner["recipe"]
    assert all(winner["score"] >= e["score"] for e in entrants.values() if e["score"] is not None
               and e["result"].startswith("out after rung " + str(len(race["survivors"]) - 1)))
    assert run["wall_seconds"] <= 5 * 60 * 1.1, run["wall_seconds"]   # within the budget + 10 %
    test = json.loads((auto_run.dir / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.75, test["accuracy"]
    assert not (auto_run.dir / "race").exists() and not (auto_run.dir / "checkpoints").exists()
    assert any(line.startswith("race: ") for line in why["plain"]) and "auto: race: " in auto_run.res.stderr
    html = (auto_run.dir / "report.html").read_text(encoding="utf-8")
    assert "Why this recipe (strategy auto)" in html and "The recipe race" in html


def test_finetune_with_two_workers(finetune_run):
    info = check_run_dir(finetune_run.dir, finetune_run.res, n_images=500, epochs=1)
    cfg = _config(finetune_run.dir)
    assert cfg["strategy"]["name"] == "finetune" and cfg["data"]["num_workers"] == 2
    assert info["meta"]["preprocess"]["size"] == 64
    assert info["metrics"]["test"]["n_samples"] == 75


def test_gradual_with_two_workers(gradual_run):
    info = check_run_dir(gradual_run.dir, gradual_run.res, n_images=500, epochs=2)
    assert _config(gradual_run.dir)["strategy"]["name"] == "gradual"
    assert info["metrics"]["test"]["accuracy"] > 0.1  # above chance (10 classes) after 2 epochs


def test_from_scratch_smallest_network(scratch_run):
    info = check_run_dir(scratch_run.dir, scratch_run.res, n_images=2000, epochs=scratch_run.epochs)
    meta, cfg = info["meta"], _config(scratch_run.dir)
    assert cfg["model"]["name"] == "vistrain/vgg-tiny" and cfg["model"]["pretrained"] is False
    assert cfg["strategy"]["name"] == "finetune"  # the CLI trains every layer of a scratch net
    assert meta["preprocess"]["size"] == 28 and meta["preprocess"]["normalize_mode"] == "dataset"
    assert info["metrics"]["test"]["accuracy"] > 0.2, info["metrics"]["test"]["accuracy"]


def test_progress_bars_leave_no_debris_in_logs(fe_run, finetune_run):
    """stderr is a pipe here, not a terminal: log lines only, no carriage-return bar frames."""
    for run in (fe_run, finetune_run):
        assert "\r" not in run.res.stderr and "it/s]" not in run.res.stderr, run.res.describe()


def test_report_does_not_complain_about_its_own_run(fe_run):
    html = (fe_run.dir / "report.html").read_text(encoding="utf-8")
    assert "no doctor.json" not in html


def test_train_json_prints_one_document(subset, tmp_path, acc_env):
    out = tmp_path / "run"
    res = assert_ok(vistrain("train", subset, "--out", out, "--epochs", 1, *SCRATCH, "--json"))
    doc = res.json()
    metrics = json.loads((out / "metrics.json").read_text())
    text = json.dumps(doc)
    assert str(out.resolve()) in text or str(out) in text
    assert f"{metrics['test']['accuracy']}" in text  # the held-out accuracy of metrics.json


def test_interrupted_run_resumes_to_the_end(subset, tmp_path, acc_env):
    """Ctrl-C after an epoch keeps the checkpoint; ``--resume`` finishes the remaining epochs."""
    out, epochs = tmp_path / "run", 8
    cmd = [sys.executable, "-m", "vistrain.cli.main", "train", str(subset), "--out", str(out),
           "--epochs", str(epochs), "--set", "train.patience=null", *SCRATCH]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    interrupted = proc.poll() is None
    if interrupted:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr
    if interrupted:
        assert proc.returncode == 130, stderr
        assert "--resume" in stderr.splitlines()[-1]
        assert not (out / "report.html").exists()
    res = assert_ok(vistrain("train", "--resume", out))
    history = json.loads((out / "history.json").read_text())
    assert len(history) == epochs
    assert [h["epoch"] for h in history] == sorted({h["epoch"] for h in history})
    check_run_dir(out, res, n_images=500, epochs=epochs)
    assert json.loads((out / "model.json").read_text())["classes"] == CLASSES
