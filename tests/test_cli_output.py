"""One output convention for every verb, and ``vistrain evaluate`` on a folder.

``--json``: one JSON document on stdout and nothing else there (log lines go to stderr);
``--help`` shows defaults; ``--version``; the same option names for the same thing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from vistrain import __version__
from vistrain.artifact import save_model
from vistrain.cli.main import COMMANDS, build_parser, main
from vistrain.models import create
from vistrain.predictor import Classifier
from vistrain.transforms.preprocess import Preprocess

CLASSES = ("a", "b", "c")
TINY = ["--model", "vistrain/resnet-tiny", "--set", "preprocess.size=32", "--epochs", "1",
        "--batch-size", "8", "--set", "data.num_workers=0"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """An untrained, seeded 3-class run (model files only) and a folder of 3 x 34 images."""
    tmp = tmp_path_factory.mktemp("cli-output")
    data = make_image_folder(tmp / "data", classes=CLASSES, per_class=34, size=(36, 32))
    torch.manual_seed(0)
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32)
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
    save_model(tmp / "run", model, model_name="vistrain/resnet-tiny", classes=list(CLASSES),
               preprocess=pre, model_kwargs={"input_size": 32})
    return tmp / "run", data


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vistrain.cli.main", *args], capture_output=True,
                          text=True, timeout=300)


def one_json_document(text: str):
    """The whole of ``text`` parsed as one JSON document (json.loads refuses anything more)."""
    return json.loads(text)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"vistrain {__version__}\n"


def test_every_verb_help_shows_defaults():
    missing = []
    for verb, parser in subparsers().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            default = action.default
            if (not action.option_strings or action.help == argparse.SUPPRESS or default is None
                    or default is False or default == [] or default == argparse.SUPPRESS):
                continue
            if "default" not in formatter._expand_help(action).lower():
                missing.append(f"{verb} {action.option_strings[0]}")
        assert "(default: " in parser.format_help() or verb in ("report", "cache"), verb
    assert missing == []


def test_verbs_with_json_take_it_as_a_flag():
    """``--json`` never takes a file name: it switches stdout to one JSON document."""
    for verb, parser in subparsers().items():
        for action in parser._actions:
            if "--json" in action.option_strings:
                assert isinstance(action, argparse._StoreTrueAction), verb
    mine = {"predict", "evaluate", "cv", "compare", "explain", "stats", "preview", "augment-preview",
            "report"}
    have = {verb for verb, p in subparsers().items() if any("--json" in a.option_strings for a in p._actions)}
    assert mine <= have and set(COMMANDS) >= have


def test_augment_preview_takes_augment_like_train(saved_run, tmp_path, capsys):
    _, data = saved_run
    parser = subparsers()["augment-preview"]
    assert "--augment" in parser.format_help() and "--preset" not in parser.format_help()
    args = ["augment-preview", str(data), "--n", "2", "--k", "1", "--size", "24", "--json"]
    assert main([*args, "--augment", "medium", "--out", str(tmp_path / "a.png")]) == 0
    doc = one_json_document(capsys.readouterr().out)
    assert doc["augment"]["preset"] == "medium" and Path(doc["preview"]).stat().st_size > 1000
    assert len(doc["images"]) == 2
    assert main([*args, "--preset", "heavy", "--out", str(tmp_path / "b.png")]) == 0
    captured = capsys.readouterr()
    assert one_json_document(captured.out)["augment"]["preset"] == "heavy"
    assert "--preset is deprecated; use --augment" in captured.err


def test_preview_json(saved_run, tmp_path, capsys):
    _, data = saved_run
    assert main(["preview", str(data), "--n", "2", "--size", "32", "--out", str(tmp_path / "p.png"),
                 "--json"]) == 0
    doc = one_json_document(capsys.readouterr().out)
    assert Path(doc["preview"]) == (tmp_path / "p.png").resolve() and len(doc["images"]) == 2
    assert doc["preprocess"]["size"] == 32


def test_explain_json(saved_run, tmp_path, capsys):
    run, data = saved_run
    image = str(data / "b" / "b_000.png")
    assert main(["explain", str(run), image, "--out", str(tmp_path), "--json"]) == 0
    doc = one_json_document(capsys.readouterr().out)
    record = doc["images"][0]
    assert record["image"] == image and record["predicted"] in CLASSES
    assert Path(record["files"]["cam"]).parent == tmp_path and Path(record["files"]["cam"]).is_file()
    probs = Classifier.from_run(run).predict_proba([image])[0]
    assert record["probability"] == pytest.approx(probs.max(), abs=1e-5)
    assert main(["explain", str(run), "--list-layers", "--json"]) == 0
    layers = one_json_document(capsys.readouterr().out)["layers"]
    assert sum(layer["default"] for layer in layers) == 1


@pytest.mark.slow
def test_evaluate_a_folder_of_over_100_images(saved_run, tmp_path):
    """Subprocess: stdout must be the JSON alone, the log lines (here -v) go to stderr."""
    run, data = saved_run
    out = tmp_path / "eval"
    res = run_cli("-v", "evaluate", str(run), str(data), "--json", "--bootstrap", "50", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = one_json_document(res.stdout)
    assert metrics["n_samples"] == 102 and metrics["skipped_files"] == []
    for name in ("metrics.json", "predictions.json", "confusion_matrix.png", "roc_curves.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    preds = json.loads((out / "predictions.json").read_text())
    probs, labels = np.asarray(preds["probs"]), np.asarray(preds["labels"])
    assert metrics["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert labels.tolist() == [CLASSES.index(Path(f).parent.name) for f in preds["files"]]
    some = preds["files"][::25]
    np.testing.assert_allclose(Classifier.from_run(run).predict_proba(some), probs[::25], atol=1e-5)


def test_evaluate_names_every_unknown_class(saved_run, tmp_path, capsys):
    run, _ = saved_run
    data = make_image_folder(tmp_path / "other", classes=("a", "zebra", "yak"), per_class=2)
    assert main(["evaluate", str(run), str(data), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "yak, zebra" in err[0] and "unknown to the model" in err[0]
    assert "a, b, c" in err[0]


def test_evaluate_out_must_be_a_folder(saved_run, tmp_path, capsys):
    run, data = saved_run
    (tmp_path / "file").write_text("x")
    assert main(["evaluate", str(run), str(data), "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_json_stdout_only(saved_run):
    run, data = saved_run
    res = run_cli("-v", "predict", str(run), str(data / "a"), "--json", "--top-k", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = one_json_document(res.stdout)
    assert doc["n_predicted"] == 34 and all(len(p["top"]) == 1 for p in doc["predictions"])


@pytest.mark.slow
def test_cv_json_while_folds_are_missing(saved_run, tmp_path, capsys, monkeypatch):
    """A partial cross-validation prints its JSON too, not a sentence."""
    _, data = saved_run
    monkeypatch.setattr("vistrain.report.build.build_report", lambda run_dir: None)  # ~10 s, tested elsewhere
    assert main(["cv", str(data), "--folds", "3", "--fold", "0", "--out", str(tmp_path / "cv"),
                 "--json", *TINY]) == 0
    doc = one_json_document(capsys.readouterr().out)
    assert doc["finished"] == [0] and doc["missing"] == [1, 2] and doc["out_dir"] == str(tmp_path / "cv")


@pytest.mark.slow
def test_report_json(tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "data", per_class=8, size=(32, 32))
    monkeypatch.setattr("vistrain.report.build.build_report", lambda run_dir: None)  # rebuilt below
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *TINY]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run"), "--json"]) == 0
    doc = one_json_document(capsys.readouterr().out)
    assert doc == {"report": str((tmp_path / "run" / "report.html").resolve())}
    assert Path(doc["report"]).stat().st_size > 10_000


@pytest.mark.parametrize("verb, args", [
    ("cv", ["{data}", "--folds", "1"]),
    ("cv", ["{data}", "--folds", "50"]),
    ("cv", ["{tmp}/no-data"]),
    ("compare", ["{data}", "--vary", "norm=batch,bogus"]),
    ("compare", ["{tmp}/no-data", "--vary", "norm=batch,group"]),
])
def test_refused_cv_and_compare_leave_no_folder_and_keep_an_old_one(saved_run, tmp_path, capsys, verb, args):
    _, data = saved_run
    args = [a.format(data=data, tmp=tmp_path) for a in args]
    assert main([verb, *args, "--out", str(tmp_path / "new"), *TINY]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("earlier results")
    assert main([verb, *args, "--out", str(old), "--overwrite", *TINY]) == 2
    assert (old / "keep.txt").read_text() == "earlier results"  # --overwrite never ran
