"""A newcomer's first hour with the CLI: the run folder, resume, --out, splits, progress, predict.

Two small runs (3 classes of coloured squares, ``vistrain/resnet-tiny`` at 32 px, 2 epochs on
the CPU) are trained once through the command line, as a user would, and shared by the tests.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vistrain
from conftest import make_image_folder
from vistrain.errors import RunDirError
from vistrain.progress import EpochProgress

TINY = ["--model", "vistrain/resnet-tiny", "--strategy", "finetune", "--epochs", "2",
        "--set", "preprocess.size=32", "--device", "cpu", "--batch-size", "8"]


def cli(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """``vistrain ARGS`` in a subprocess (stderr not a terminal, as in a log file or CI)."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("VISTRAIN_PROGRESS", None) if not (env or {}).get("VISTRAIN_PROGRESS") else None
    return subprocess.run([sys.executable, "-m", "vistrain.cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=subprocess.DEVNULL)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("nc") / "data", per_class=12)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished run, trained by ``vistrain train`` with the default settings but the model."""
    out = tmp_path_factory.mktemp("nc-runs") / "x"
    p = cli("train", data, "--out", out, *TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p


@pytest.fixture(scope="module")
def kept(data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished run that keeps its checkpoints, trained with --json and bars forced on."""
    out = tmp_path_factory.mktemp("nc-kept") / "k"
    p = cli("train", data, "--out", out, *TINY, "--keep-checkpoints", "--json",
            env={"VISTRAIN_PROGRESS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p


# -- resume of a finished run ------------------------------------------------------------------
@pytest.mark.slow
def test_resume_of_a_finished_run_says_so_and_writes_nothing(run):
    out, _ = run
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    line = one_error_line(cli("train", "--resume", out))
    assert "finished" in line and "2 epochs" in line and "--epochs N" in line, line
    after = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    assert after == before and len(json.loads(before["history.json"])) == 2


@pytest.mark.slow
def test_resume_of_a_finished_run_with_kept_checkpoints(kept, tmp_path):
    out = tmp_path / "k"
    shutil.copytree(kept[0], out)  # the module's run stays as it is for the other tests
    assert (out / "checkpoints" / "last.pt").is_file()
    line = one_error_line(cli("train", "--resume", out))              # no more epochs asked for
    assert "finished" in line and "--epochs N" in line, line
    assert len(json.loads((out / "history.json").read_text())) == 2
    p = cli("train", "--resume", out, "--epochs", "3")                # more epochs: it trains on
    assert p.returncode == 0 and "resumed from epoch 2" in p.stderr, p.stderr[-2000:]
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2, 3]


# -- the output folder first ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_taken_out_is_refused_before_any_scan_or_measuring(run, data, monkeypatch):
    import vistrain.training.prepare as prepare_mod
    import vistrain.training.run as run_mod

    def never(*a, **k):
        raise AssertionError("work done before the output folder was checked")
    monkeypatch.setattr(run_mod, "open_index", never)
    monkeypatch.setattr(prepare_mod, "resolve_auto", never)
    with pytest.raises(RunDirError, match="exists and is not empty"):
        vistrain.train(data, out=run[0], strategy="auto")


@pytest.mark.slow
def test_cli_taken_out_is_one_line_with_no_log_before_it(run, data):
    start = time.perf_counter()
    line = one_error_line(cli("train", data, "--out", run[0]))  # strategy auto, the default
    assert "--overwrite" in line and time.perf_counter() - start < 60


def test_cv_taken_out_is_refused_before_the_scan(tmp_path, data, monkeypatch):
    import vistrain.workflows.cv as cv_mod
    taken = tmp_path / "cv"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    monkeypatch.setattr(cv_mod, "scan_folder", lambda *a, **k: pytest.fail("scanned first"))
    with pytest.raises(RunDirError, match="not written by vistrain"):
        vistrain.cv(data, out=taken, folds=2)
    assert (taken / "notes.txt").read_text() == "mine"


# -- the run folder: history.csv, train.log, no checkpoints ------------------------------------
@pytest.mark.slow
def test_run_folder_has_history_csv_train_log_and_no_checkpoints(run):
    out, p = run
    assert not (out / "metrics.csv").exists() and not (out / "checkpoints").exists()
    rows = list(csv.DictReader(io.StringIO((out / "history.csv").read_text())))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    log_text = (out / "train.log").read_text()
    for words in ("runtime:", "data: 36 images", "epoch   2/2", "removed"):
        assert words in log_text, words
    assert "INFO" in log_text


def test_old_runs_history_csv_is_still_read(tmp_path):
    from vistrain.training.loggers import history_csv
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    assert history_csv(tmp_path).name == "metrics.csv"
    (tmp_path / "history.csv").write_text("epoch\n1\n")
    assert history_csv(tmp_path).name == "history.csv"


# -- splits that lose classes --------------------------------------------------------------------
@pytest.mark.slow
def test_grouped_split_records_its_method_and_the_classes_it_lost(tmp_path):
    folder = make_image_folder(tmp_path / "g", per_class=40)   # a/a_000.png ... c/c_039.png
    out = tmp_path / "run"
    p = cli("train", folder, "--out", out, *TINY, "--group-regex", r"^(\w/\w_0\d)")
    assert p.returncode == 0, p.stderr[-3000:]
    splits = json.loads((out / "splits.json").read_text())
    assert splits["source"] == "grouped hold-out" and splits["groups"] == {"regex": r"^(\w/\w_0\d)"}
    lost = [w for w in splits["warnings"] if "classes (none of" in w]
    assert lost, splits.get("warnings")
    warned = [ln for ln in p.stderr.splitlines() if "classes (none of" in ln]
    assert warned and all(w in p.stderr for w in lost)
    assert json.loads((out / "run.json").read_text())["warnings"] == splits["warnings"]
    assert lost[0].split(":")[0] in (out / "report.html").read_text()


def test_split_warnings_name_the_missing_classes():
    from types import SimpleNamespace
    from vistrain.data.splits import split_warnings
    index = SimpleNamespace(classes=["a", "b", "c"], labels=[0, 1, 2, 0, 1, 2])
    assert split_warnings(index, {"train": [0, 1, 2], "val": [3, 4, 5], "test": []}) == []
    [line] = split_warnings(index, {"train": [0, 1, 2], "val": [3, 4]})
    assert line.startswith("the val split holds 2 of 3 classes (none of c)")


# -- progress -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_json_keeps_the_bars_with_loss_and_run_eta(kept):
    _, p = kept
    json.loads(p.stdout)  # stdout: the one document
    assert "epoch 1/2" in p.stderr and "loss " in p.stderr and "run ETA" in p.stderr, p.stderr[-2000:]


@pytest.mark.slow
def test_log_lines_within_an_epoch_when_no_terminal(data, tmp_path, monkeypatch, caplog):
    import vistrain.progress as progress
    caplog.set_level(logging.INFO, logger="vistrain")  # pytest's root handler would keep it at WARNING
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(progress, "bars_wanted", lambda: False)
    vistrain.train(data, out=tmp_path / "r", model="vistrain/resnet-tiny", strategy="finetune",
                   epochs=1, device="cpu", batch_size=8, preprocess={"size": 32})
    lines = [ln for ln in (tmp_path / "r" / "train.log").read_text().splitlines() if ": batch " in ln]
    assert lines and "epoch 1/1: batch 1/" in lines[0] and "img/s" in lines[0] and "run ETA" in lines[0]


def test_epoch_progress_eta_counts_the_epochs_after():
    p = EpochProgress(range(10), desc="epoch 1/3", enabled=False, epochs_after=2)
    p.start -= 10.0  # 1 batch took 10 s: 9 left here + 2 epochs of 10
    p.step(loss=1.0, images=4)
    assert p.eta(time.perf_counter()) == "4:50"


def test_auto_measuring_shows_a_bar(monkeypatch):
    import numpy as np
    import vistrain.training.auto as auto
    from vistrain.config import TrainConfig
    from vistrain.data.scan import ImageIndex
    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.total, self.n, self.postfix = kw, kw.get("total"), 0, []
            bars.append(self)

        def set_postfix_str(self, text):
            self.postfix.append(text)

        def update(self, n):
            self.n += n

        def close(self):
            pass
    cfg = TrainConfig()
    index = ImageIndex("d", ["a", "b"], [f"d/a/{i}.png" for i in range(20)], [i % 2 for i in range(20)])
    monkeypatch.setattr(auto, "progress_bar", lambda **kw: Bar(**kw))
    monkeypatch.setattr(auto, "open_images", lambda index, pick: list(pick))
    monkeypatch.setattr(auto, "profile_images", lambda paths: (28, True))
    monkeypatch.setattr(auto, "cached_similarity",
                        lambda *a, **k: {"skill": 0.5, "feature_gain": 0.2, "input_size": 224})
    monkeypatch.setattr(auto, "ranking", lambda *a: (["feature-extraction"], "why"))
    monkeypatch.setattr(auto, "_candidate", lambda recipe, *a, size=None: auto.Candidate(
        recipe, "m", size or 28, False, 1.0, 1, 1.0, True))
    monkeypatch.setattr(auto, "_changes", lambda *a: {})
    monkeypatch.setattr(auto, "_reasoning", lambda *a: {"plain": []})
    monkeypatch.setattr(auto, "_train_ids", lambda cfg, index, parts: np.arange(20))
    auto._choose(cfg, index, auto.Runtime.create("cpu"), None, time.monotonic())
    [bar] = bars
    every = auto.race_candidates(["feature-extraction"], 28, 224)  # each one's speed is a step
    assert bar.kw["desc"] == "auto: measuring" and bar.n == bar.total == 2 + len(every)
    assert bar.postfix[-1] == f"speed of {every[-1][0]}"


# -- predict at scale ---------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_csv_one_row_per_image(run, data, tmp_path):
    out, _ = run
    p = cli("predict", out, data, "--format", "csv", "--top-k", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert len(rows) == 36 and set(rows[0]) == {"file", "class", "probability", "top_k", "error"}
    assert all(r["class"] in ("a", "b", "c") and r["top_k"].count(":") == 2 for r in rows)
    assert rows[0]["top_k"].startswith(rows[0]["class"] + ":")
    p = cli("predict", out, data / "a", "--format", "csv", "--out", tmp_path / "pred.csv")
    assert p.returncode == 0 and p.stdout == "", p.stderr[-2000:]
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 13


@pytest.mark.slow
def test_predict_text_is_one_line_per_image_of_a_folder(run, data):
    out, _ = run
    p = cli("predict", out, data / "b")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert len(lines) == 12 and all(ln.split("  ")[1] in ("a", "b", "c") for ln in lines), p.stdout


@pytest.mark.slow
def test_predict_format_json_is_json(run, data):
    out, _ = run
    a = json.loads(cli("predict", out, data / "c", "--format", "json").stdout)
    b = json.loads(cli("predict", out, data / "c", "--json").stdout)
    assert a["n_predicted"] == b["n_predicted"] == 12
    assert one_error_line(cli("predict", out, data / "c", "--json", "--format", "csv"))
