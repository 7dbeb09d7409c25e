"""The command line's front: it answers at once, every argparse error is one line, a closed pipe
ends quietly, and an interrupt says what fits the verb.

Timings are held as ratios against ``python -c pass`` on the same machine, so that a loaded
machine slows both alike instead of failing the test.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from tests.conftest import make_image_folder
from vistrain.cli import failures
from vistrain.cli.main import COMMANDS, build_parser, main

CLI = [sys.executable, "-m", "vistrain.cli.main"]


def fastest(argv: list[str], tries: int = 5) -> float:
    """The shortest wall time of ``tries`` runs of ``argv`` (the least disturbed one)."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def one_line_error(argv: list[str]) -> str:
    res = subprocess.run(CLI + argv, capture_output=True, text=True)
    assert res.returncode == 2, res
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("error: ") and "usage:" not in res.stderr
    return res.stderr.strip()


# ---- startup --------------------------------------------------------------------------------
def test_help_and_version_answer_at_once():
    """--help, VERB --help and --version within 10x a bare interpreter start (0.2 s of 0.02 s)."""
    base = fastest([sys.executable, "-c", "pass"])
    for argv in (["--version"], ["--help"], ["train", "--help"], ["compare", "--help"]):
        took = fastest(CLI + argv, tries=3)
        assert took <= 10 * base, (argv, took, base)


def test_missing_path_and_bad_flag_fail_before_torch(tmp_path):
    """Within 50x a bare interpreter (1 s of 0.02 s), and torch never imported."""
    base = fastest([sys.executable, "-c", "pass"])
    for argv in (["train", str(tmp_path / "nope")], ["train", str(tmp_path), "--epochs", "abc"],
                 ["evaluate", str(tmp_path / "nope"), str(tmp_path)]):
        took = fastest(CLI + argv, tries=3)
        assert took <= 50 * base, (argv, took, base)
        res = subprocess.run([sys.executable, "-X", "importtime", "-m", "vistrain.cli.main", *argv],
                             capture_output=True, text=True)
        assert res.returncode == 2
        imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if "|" in line}
        assert "torch" not in imported and "numpy" not in imported, argv


def test_missing_path_in_process_leaves_torch_unimported(tmp_path):
    code = ("import sys; from vistrain.cli.main import main; rc = main(['train', sys.argv[1]]); "
            "assert rc == 2, rc; assert 'torch' not in sys.modules; print('ok')")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope")], capture_output=True,
                         text=True)
    assert res.stdout.strip() == "ok", res.stderr
    assert res.stderr.strip() == (f"error: {tmp_path / 'nope'}: no such folder; give the folder that "
                                  "holds one sub-folder per class")


def test_doctor_help_names_the_label_issues_file():
    from vistrain.cli.doctor import CSV_NAME
    from vistrain.evaluation.label_issues import CSV_NAME as written
    assert CSV_NAME == written


# ---- argparse errors, one line each ---------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["train", "x", "--epochs", "abc"], ["--epochs", "'abc'", "int", "vistrain train --help"]),
    (["evaluate", "r", "d", "--tta", "bogus"], ["--tta", "'bogus'", "'flip'", "vistrain evaluate --help"]),
    (["train", "x", "--bogus"], ["--bogus", "vistrain train --help"]),
    (["stats"], ["required", "data"]),
    (["nosuchverb"], ["'nosuchverb'", "'train'"]),
    (["pack", "d", "--out", "o", "--compress", "zip"], ["--compress", "'zip'", "'gzip'"]),
])
def test_argparse_errors_are_one_line(argv, words):
    line = one_line_error(argv)
    for word in words:
        assert word in line, line


def test_every_verb_reports_a_bad_type_in_one_line(capsys):
    """Every verb's parser raises its errors through the one-line path (exit 2)."""
    for verb in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([verb, "--no-such-flag-anywhere"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1, (verb, err)
        assert err.startswith("error: ") and f"vistrain {verb} --help" in err, (verb, err)


def test_verbose_after_the_verb(tmp_path):
    args = build_parser("train").parse_args(["train", str(tmp_path), "-v"])
    assert args.verbose is True
    args = build_parser("train").parse_args(["-v", "train", str(tmp_path)])
    assert args.verbose is True
    assert build_parser("train").parse_args(["train", str(tmp_path)]).verbose is False


def test_help_texts():
    parsers = dict(next(a for a in build_parser()._actions
                        if isinstance(a, argparse._SubParsersAction)).choices)
    assert "%%" not in parsers["evaluate"].format_help()
    compare = parsers["compare"].format_help()
    assert "tf_efficientnet_lite0" not in compare and "resnet-tiny" in compare
    for verb in ("train", "evaluate", "predict", "explain", "serve"):
        device = next(a for a in parsers[verb]._actions if a.dest == "device" or a.dest == "train_device"
                      or "--device" in a.option_strings)
        assert device.default in ("auto", None), (verb, device.default)


# ---- closed pipes ---------------------------------------------------------------------------
@pytest.mark.slow
def test_closed_stdout_pipe_ends_quietly(tmp_path):
    """`vistrain stats DATA | head -1`: the reader is gone before the verb prints."""
    data = make_image_folder(tmp_path / "data", per_class=3)
    proc = subprocess.Popen(CLI + ["stats", str(data), "--size", "16", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as head does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) in (0, 141), err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_broken_pipe_in_process_exits_141(monkeypatch):
    def fake(args):
        raise BrokenPipeError(32, "Broken pipe")
    dup = []
    monkeypatch.setattr(os, "dup2", lambda fd, fd2: dup.append(fd2))
    args = argparse.Namespace(command="stats", func=fake, verbose=False)
    assert failures.run_verb(args) == 141 and dup == [sys.stdout.fileno()]


# ---- interrupts -----------------------------------------------------------------------------
def fake_workflow(monkeypatch, verb: str, **attrs):
    module = __import__(f"vistrain.cli.{verb}", fromlist=["job"])
    monkeypatch.setattr(module, "job", lambda name: types.SimpleNamespace(**attrs))


def test_ctrl_c_in_evaluate_names_no_resume(monkeypatch, capsys, tmp_path):
    def evaluate(*a, **k):
        raise KeyboardInterrupt
    fake_workflow(monkeypatch, "evaluate", evaluate=evaluate)
    assert main(["evaluate", str(tmp_path), str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evaluate" in err and "--resume" not in err, err


def test_sigterm_is_handled_like_ctrl_c(monkeypatch, capsys, tmp_path):
    def evaluate(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    fake_workflow(monkeypatch, "evaluate", evaluate=evaluate)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["evaluate", str(tmp_path), str(tmp_path)]) == 143
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and err.count("\n") == 1, err
    assert signal.getsignal(signal.SIGTERM) is before  # restored for whoever called main


def test_ctrl_c_in_train_names_the_actual_folder(monkeypatch, capsys, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=3)
    run_dir = tmp_path / "runs" / "data-20260101-000000"

    def train(*a, out, **k):
        Path(out).mkdir(parents=True)
        (Path(out) / "config.yaml").write_text("{}")
        raise KeyboardInterrupt
    fake_workflow(monkeypatch, "train", train=train, default_out_dir=lambda root: run_dir)
    assert main(["train", str(data)]) == 130
    err = capsys.readouterr().err
    assert f"vistrain train --resume {run_dir}" in err and err.count("\n") == 1, err


def test_ctrl_c_in_train_before_the_folder_exists(monkeypatch, capsys, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=3)

    def train(*a, **k):
        raise KeyboardInterrupt
    fake_workflow(monkeypatch, "train", train=train, default_out_dir=lambda root: tmp_path / "r")
    assert main(["train", str(data)]) == 130
    assert "nothing to resume" in capsys.readouterr().err


def test_ctrl_c_in_cv_names_its_resume(monkeypatch, capsys, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=3)
    out = tmp_path / "cv"

    def cv(*a, **k):
        out.mkdir()
        raise KeyboardInterrupt
    fake_workflow(monkeypatch, "cv", cv=cv, default_out_dir=lambda root, suffix: out)
    assert main(["cv", str(data), "--folds", "2"]) == 130
    err = capsys.readouterr().err
    assert f"vistrain cv {data} --resume --out {out}" in err, err
