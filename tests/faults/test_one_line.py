"""Failure families that must end in one line (exit 2), never a traceback, a hang or a truncated
file: a user pattern that backtracks without end, file names that are not UTF-8, a full disk, a
diverging learning rate, a damaged folds.json, an HTTP request uvicorn cannot parse."""
from __future__ import annotations

import errno
import io
import json
import os
import socket
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import vistrain.data.groups as groups
from vistrain import fsutil
from vistrain.cli import failures
from vistrain.cli.main import main
from vistrain.errors import DataError, VistrainError
from tests.conftest import cli_error, make_image_folder

TINY = ["--model", "vistrain/resnet-tiny", "--set", "preprocess.size=16", "--epochs", "1",
        "--batch-size", "8", "--set", "data.num_workers=0", "--set", "data.doctor=false"]
BACKTRACKS = r"(a|aa)+\.jpg"  # exponential in both `re` and `regex` on a long run of a's


# ---- user patterns: bounded -----------------------------------------------------------------
def test_backtracking_group_regex_stops_with_one_line(monkeypatch):
    monkeypatch.setattr(groups, "MATCH_LIMIT_S", 0.05)
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        groups.groups_from_regex(BACKTRACKS, ["c/" + "a" * 40 + ".png"])
    assert time.monotonic() - start < 20
    assert f"'{BACKTRACKS}'" in str(info.value) and "simplify" in str(info.value)


def test_nested_repeat_on_long_names_finishes():
    start = time.monotonic()
    with pytest.raises(DataError, match="matches no part"):
        groups.groups_from_regex(r"^(a+)+$", ["a" * 60 + "!.png"] * 50)
    assert time.monotonic() - start < 20


def test_group_regex_still_groups():
    assert groups.groups_from_regex(r"(p\d+)_", ["a/p1_x.png", "b/p2_y.png"]) == ["p1", "p2"]


@pytest.fixture
def long_names(tmp_path) -> Path:
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4, size=(16, 16))
    for cls in ("a", "b"):
        first = sorted((data / cls).iterdir())[0]
        first.rename(first.with_name("a" * 40 + ".png"))
    return data


def test_backtracking_group_regex_in_pack(monkeypatch, capsys, tmp_path, long_names):
    monkeypatch.setattr(groups, "MATCH_LIMIT_S", 0.05)
    line = cli_error(capsys, ["pack", str(long_names), "--out", str(tmp_path / "shards"),
                              "--group-regex", BACKTRACKS, "--workers", "1"])
    assert "--group-regex" in line and BACKTRACKS in line


def test_backtracking_group_regex_in_train(monkeypatch, capsys, tmp_path, long_names):
    monkeypatch.setattr(groups, "MATCH_LIMIT_S", 0.05)
    line = cli_error(capsys, ["train", str(long_names), "--out", str(tmp_path / "run"),
                              "--group-regex", BACKTRACKS, *TINY])
    assert BACKTRACKS in line


# ---- names that are not UTF-8 -----------------------------------------------------------------
@pytest.fixture
def odd_names(tmp_path) -> Path:
    data = make_image_folder(tmp_path / "data", per_class=10, size=(16, 16))
    for cls, raw in (("a", b"\xff\xfe.png"), ("b", b"caf\xe9.png")):
        src = sorted((data / cls).iterdir())[0]
        os.rename(os.fsencode(src), os.fsencode(data / cls) + b"/" + raw)
    return data


def test_stats_keeps_names_that_are_not_utf8(capsys, odd_names):
    assert main(["stats", str(odd_names), "--size", "16", "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_images"] == 30


@pytest.mark.slow
def test_train_keeps_and_lists_names_that_are_not_utf8(capsys, tmp_path, odd_names):
    assert main(["train", str(odd_names), "--out", str(tmp_path / "run"), "--json", *TINY]) == 0
    listed = (tmp_path / "run" / "splits.json").read_text()
    names = json.loads(listed)
    assert "\\udcff\\udcfe.png" in listed and "caf\\udce9.png" in listed, names
    assert (tmp_path / "run" / "report.html").is_file()


# ---- a full disk ------------------------------------------------------------------------------
class FullDisk(io.FileIO):
    """A file on a full disk: the first write puts a few bytes, then ENOSPC."""

    def write(self, data):
        super().write(bytes(data)[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk(monkeypatch, module) -> None:
    """Every file ``module`` opens for writing is on a full disk (its name for open shadows the
    builtin)."""
    real = open

    def fake_open(file, mode="r", *args, **kwargs):
        if "w" in mode and "b" in mode:
            return FullDisk(file, "w")
        return real(file, mode, *args, **kwargs)
    monkeypatch.setattr(module, "open", fake_open, raising=False)


def test_full_disk_is_one_line_naming_the_file(monkeypatch, capsys, tmp_path):
    fill_disk(monkeypatch, fsutil)
    target = tmp_path / "predictions.json"

    def verb(args):
        fsutil.atomic_write_json(target, {"probs": [0.5] * 1000})
    args = types.SimpleNamespace(command="evaluate", func=verb, verbose=False)
    assert failures.run_verb(args) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: no space left on /") and f"while writing {target}; free " in line
    assert " MB" in line and "\n" not in line
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary


def test_full_disk_during_evaluate_leaves_no_truncated_predictions(monkeypatch, tmp_path):
    import vistrain.workflows.evaluate as evaluate
    fsutil.prepare_outputs_folder(tmp_path / "out")   # an earlier evaluation's folder
    (tmp_path / "out" / "predictions.json").write_text('{"old": true}')
    fill_disk(monkeypatch, fsutil)
    index = type("Index", (), {"root": tmp_path / "data", "paths": ["x.png", "y.png"]})()
    y, probs = np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(OSError) as info:
        evaluate.write_evaluation(tmp_path / "out", tmp_path, index, np.array([0, 1]), ["a", "b"],
                                  y, probs, {"accuracy": 1.0})
    assert failures.no_space_error(info.value) is not None
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [fsutil.MARKER, "predictions.json"]  # no half-written metrics.json, the old file intact
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == {"old": True}


def test_full_disk_during_checkpoint_leaves_the_old_one(monkeypatch, tmp_path):
    from vistrain.training.checkpoint import load_checkpoint, save_checkpoint
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}, "epoch": 1})
    fill_disk(monkeypatch, fsutil)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {"model": {"w": torch.ones(1)}, "epoch": 2})
    assert failures.no_space_error(info.value) is not None
    assert "last.pt" in failures.no_space_line(failures.no_space_error(info.value))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] in (1, 2) and not list(path.parent.glob("*.tmp"))


def test_full_disk_during_pack_is_one_line_and_leaves_nothing(monkeypatch, capsys, tmp_path):
    import vistrain.data.shards.write as shards_write
    data = make_image_folder(tmp_path / "data", per_class=4, size=(16, 16))
    fill_disk(monkeypatch, shards_write)
    line = cli_error(capsys, ["pack", str(data), "--out", str(tmp_path / "shards"), "--workers", "1"])
    assert line.startswith("error: no space left on ") and "shard-000000.tar" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_wrapped_full_disk_is_found():
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as err:
            raise RuntimeError("writer failed") from err
    except RuntimeError as outer:
        assert failures.no_space_error(outer) is inner


# ---- divergence -------------------------------------------------------------------------------
@pytest.mark.slow
def test_huge_lr_is_one_line_naming_step_and_lr(capsys, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=10, size=(16, 16))
    line = cli_error(capsys, ["train", str(data), "--out", str(tmp_path / "run"), *TINY, "--lr", "1e30"])
    assert line.startswith("error: training diverged at step ") and "lower --lr (now 1e+30)" in line


# ---- a damaged folds.json -------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"k": 2, "folds": [', '[1, 2]', '{"k": 2, "folds": [{"test": 1}]}'])
def test_damaged_folds_json_on_resume_names_the_file(capsys, tmp_path, text):
    data = make_image_folder(tmp_path / "data", per_class=6, size=(16, 16))
    out = tmp_path / "cv"
    out.mkdir()
    fsutil.write_marker(out, "cv")
    (out / "folds.json").write_text(text)
    line = cli_error(capsys, ["cv", str(data), "--folds", "2", "--resume", "--out", str(out), *TINY])
    assert f"{out / 'folds.json'}: damaged" in line and "--overwrite" in line


# ---- HTTP errors the server cannot see ----------------------------------------------------------
def test_oversized_headers_answer_json(tmp_path):
    uvicorn = pytest.importorskip("uvicorn")
    from vistrain.server.protocol import JsonErrorH11Protocol

    async def app(scope, receive, send):  # never reached: the request is refused before
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=JsonErrorH11Protocol, log_level="critical",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            reply = b""
            for _ in range(40):  # in pieces, as a slow client sends: h11 counts what is pending
                conn.sendall(b"a" * 1000)
                time.sleep(0.02)
                conn.setblocking(False)
                try:
                    reply += conn.recv(65536)
                except BlockingIOError:
                    pass
                conn.setblocking(True)
                if reply:
                    break
            while chunk := conn.recv(65536):
                reply += chunk
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    assert "KiB" in json.loads(body)["error"]


# ---- temporaries of a killed run ----------------------------------------------------------------
DEAD_PID = 999_999_999  # no process has it


def left_behind(path: Path, is_dir: bool = False) -> Path:
    """A temporary entry written before this test process started (as by a killed run)."""
    from vistrain.data.leftovers import STARTED
    path.mkdir() if is_dir else path.write_bytes(b"half")
    os.utime(path, (STARTED - 60, STARTED - 60))
    return path


def test_pack_removes_the_staging_folder_of_a_killed_pack(capsys, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=4, size=(16, 16))
    dead = left_behind(tmp_path / f".shards.{DEAD_PID}-abc_12.part", is_dir=True)
    live = left_behind(tmp_path / f".shards.{os.getpid()}-abc_12.part", is_dir=True)
    other = left_behind(tmp_path / f".other.{DEAD_PID}-abc_12.part", is_dir=True)
    assert main(["pack", str(data), "--out", str(tmp_path / "shards"), "--workers", "1", "--json"]) == 0
    assert not dead.exists() and live.exists() and other.exists()


def test_export_removes_the_staging_folder_of_a_killed_export(tmp_path):
    from vistrain.workflows.export import remove_leftovers
    dead = left_behind(tmp_path / f".staging-{DEAD_PID}-k3j_x", is_dir=True)
    live = left_behind(tmp_path / f".staging-{os.getpid()}-k3j_x", is_dir=True)
    young = tmp_path / f".staging-{DEAD_PID}-young"
    young.mkdir()  # written after this process started: not this cleaner's to judge
    remove_leftovers(tmp_path)
    assert not dead.exists() and live.exists() and young.exists()


def test_cache_removes_the_part_files_of_a_killed_build(tmp_path):
    from vistrain.data.cache.budget import part_suffix, prune_cache, record_entry
    record_entry(tmp_path / "pixels-abc.npy", tmp_path / "pixels-def.npy")  # their builds began
    dead = left_behind(tmp_path / f"pixels-abc.npy.x1y2z3.{DEAD_PID}.part")
    live = left_behind(tmp_path / f"pixels-def.npy.x1y2z3{part_suffix()}")
    prune_cache(tmp_path, limit_bytes=None)
    assert not dead.exists() and live.exists()
