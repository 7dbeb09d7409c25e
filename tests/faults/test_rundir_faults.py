"""Faults around the run directory: --overwrite aimed at the user's files, resume on other data,
damaged artifacts and checkpoints.  Each must end in one line naming the problem and the fix, with
nothing of the user's deleted and nothing silently wrong (no NaN probabilities, no training on
the wrong folder)."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

import vistrain.training.strategy as strategy
from vistrain import fsutil
from vistrain.cli.main import main
from vistrain.errors import RunDirError
from vistrain.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import cli_error, make_image_folder, skip_report

FLAGS = ["--model", "vistrain/resnet-tiny", "--epochs", "3", "--batch-size", "8",
         "--set", "preprocess.size=16", "--set", "data.cache=off", "--set", "data.num_workers=0",
         "--set", "train.patience=null", "--set", "data.doctor=false"]




@pytest.fixture(autouse=True)
def quick(monkeypatch):
    skip_report(monkeypatch)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(data, run): one uninterrupted run, the reference for the resumed ones."""
    root = tmp_path_factory.mktemp("finished")
    data = make_image_folder(root / "data", per_class=10, size=(20, 16))
    with pytest.MonkeyPatch.context() as mp:
        skip_report(mp)
        assert main(["train", str(data), "--out", str(root / "run"), *FLAGS]) == 0
    return data, root / "run"


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def killed_run(monkeypatch, data, out, after_epochs: int, extra=()) -> Path:
    """A run interrupted (KeyboardInterrupt) after ``after_epochs`` finished epochs."""
    real, calls = strategy.train_one_epoch, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] > after_epochs:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(strategy, "train_one_epoch", dies)
    assert main(["train", str(data), "--out", str(out), *FLAGS, *extra]) == 130
    monkeypatch.setattr(strategy, "train_one_epoch", real)
    return Path(out)


def weights(run: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(run / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- --overwrite never deletes what vistrain did not create -----------------------------------------
@pytest.mark.parametrize("where", ["data", "parent", "inside"])
def test_overwrite_refuses_the_data_folder_its_parents_and_inside(tmp_path, capsys, where):
    data = make_image_folder(tmp_path / "user" / "data", per_class=3)
    (tmp_path / "user" / "notes.txt").write_text("mine")
    before = files_of(tmp_path / "user")
    out = {"data": data, "parent": tmp_path / "user", "inside": data / "run"}[where]
    line = cli_error(capsys, ["train", str(data), "--out", str(out), "--overwrite", *FLAGS])
    assert "data folder" in line, line
    assert files_of(tmp_path / "user") == before


def test_overwrite_refuses_a_folder_vistrain_did_not_write(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=3)
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "config.yaml").write_text("mine: true\n")   # a config.yaml alone is not a run
    (other / "chapter1.tex").write_text("...")
    line = cli_error(capsys, ["train", str(data), "--out", str(other), "--overwrite", *FLAGS])
    assert "not written by vistrain" in line
    assert sorted(p.name for p in other.iterdir()) == ["chapter1.tex", "config.yaml"]


def test_home_root_and_current_folder_are_refused(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(RunDirError, match="home folder"):
        fsutil.check_output_location(home)
    with pytest.raises(RunDirError, match="filesystem root"):
        fsutil.check_output_location("/")
    # the current folder, even when it is a vistrain run: it cannot be moved aside
    run = tmp_path / "run"
    run.mkdir()
    fsutil.write_marker(run, "run")
    (run / "config.yaml").write_text("{}")
    monkeypatch.chdir(run)
    with pytest.raises(RunDirError, match="current folder"):
        fsutil.prepare_output_dir(run, overwrite=True)
    assert (run / "config.yaml").is_file()


def test_output_kinds_only_from_the_marker(tmp_path):
    """A folder is vistrain's only when it carries the marker: files that look like a run's,
    a cv's or a comparison's prove nothing (they may be the user's); old markers without an id
    still count."""
    def folder(name, files):
        d = tmp_path / name
        for f in files:
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            (d / f).write_text("{}")
        return d
    for name, files in [("run", ["config.yaml", "run.json"]), ("killed", ["config.yaml", "checkpoints/last.pt"]),
                        ("cv", ["config.yaml", "folds.json"]), ("cmp", ["compare.json"]),
                        ("cmp2", ["a/config.yaml", "a/model.json"]), ("user", ["config.yaml", "model.json"])]:
        assert fsutil.vistrain_output_kind(folder(name, files)) is None, name
    old = folder("old-marker", ["config.yaml"])
    (old / fsutil.MARKER).write_text('{"created_by": "vistrain", "kind": "run"}')
    assert fsutil.vistrain_output_kind(old) == "run"


@pytest.mark.slow
def test_overwrite_moves_the_old_run_aside_until_the_first_checkpoint(finished, tmp_path, monkeypatch):
    data, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    seen = {}
    real = fsutil.discard_replaced

    def discard(folder):  # first call, at the first checkpoint: the old run still exists, aside
        seen.setdefault("aside", [p.name for p in tmp_path.iterdir() if p.name.startswith("run.old-")])
        real(folder)
    monkeypatch.setattr(fsutil, "discard_replaced", discard)
    assert main(["train", str(data), "--out", str(out), "--overwrite", *FLAGS]) == 0
    assert len(seen["aside"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]   # then deleted
    assert same_weights(out, ref) and fsutil.read_marker(out)["replaces"] is None


def test_overwrite_that_fails_before_a_checkpoint_restores_the_old_run(tiny_run, tmp_path, monkeypatch,
                                                                       capsys):
    data, ref = tiny_run.data, tiny_run.dir
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    before = files_of(out)
    monkeypatch.setattr(strategy, "train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["train", str(data), "--out", str(out), "--overwrite", *FLAGS]) == 130
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_unmarked_run_look_alike_is_not_overwritten(tiny_run, tmp_path, capsys):
    """A folder without the marker is not vistrain's, even with every file of a run: --overwrite
    refuses it in one line and changes nothing."""
    data, ref = tiny_run.data, tiny_run.dir
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / fsutil.MARKER).unlink()
    before = files_of(out)
    assert main(["train", str(data), "--out", str(out), "--overwrite", *FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "not written by vistrain" in err
    assert files_of(out) == before


# -- resume is pinned to its data ---------------------------------------------------------------
@pytest.mark.slow
def test_resume_from_another_cwd_uses_the_recorded_data(finished, tmp_path, monkeypatch, capsys):
    data_ref, ref = finished
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(data_ref, a / "data")
    make_image_folder(b / "data", per_class=5, seed=3)   # same name, other images
    monkeypatch.chdir(a)
    run = killed_run(monkeypatch, "data", tmp_path / "run", after_epochs=1)  # relative DATA
    monkeypatch.chdir(b)
    assert main(["train", "--resume", str(run)]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["data_root"] == str((a / "data").resolve()) and info["n_images"] == 30
    assert same_weights(run, ref)


@pytest.mark.slow
def test_resume_on_changed_data_stops(finished, tmp_path, monkeypatch, capsys):
    data_ref, _ = finished
    data = tmp_path / "data"
    shutil.copytree(data_ref, data)
    run = killed_run(monkeypatch, data, tmp_path / "run", after_epochs=1)
    shutil.copy(data / "a" / "a_000.png", data / "a" / "a_new.png")        # one image added
    line = cli_error(capsys, ["train", "--resume", str(run)])
    assert "not the data" in line and "--data" in line
    (data / "a" / "a_new.png").unlink()
    (data / "b" / "b_001.png").write_bytes((data / "b" / "b_001.png").read_bytes() + b"\0")  # resized
    assert "not the data" in cli_error(capsys, ["train", "--resume", str(run)])


@pytest.mark.slow
def test_resume_with_moved_data(finished, tmp_path, monkeypatch, capsys):
    data_ref, ref = finished
    data = tmp_path / "data"
    shutil.copytree(data_ref, data)
    run = killed_run(monkeypatch, data, tmp_path / "run", after_epochs=1)
    moved = tmp_path / "elsewhere" / "copy"
    shutil.move(str(data), moved)
    line = cli_error(capsys, ["train", "--resume", str(run)])
    assert "--data" in line and str(data) in line
    other = make_image_folder(tmp_path / "other", per_class=10, seed=5)   # same names, other pixels
    (other / "a" / "a_000.png").write_bytes(b"x" * 10)
    assert "not the data" in cli_error(capsys, ["train", "--resume", str(run), "--data", str(other)])
    assert main(["train", "--resume", str(run), "--data", str(moved)]) == 0
    assert same_weights(run, ref)
    assert json.loads((run / "run.json").read_text())["data_root"] == str(moved.resolve())


# -- damaged artifacts -------------------------------------------------------------------------
def _edit_meta(meta: dict, how: str) -> dict | str:
    m = json.loads(json.dumps(meta))
    if how == "invalid-json":
        return '{"model_name": "x", '
    if how == "not-object":
        return "[1, 2]"
    if how == "missing-classes":
        del m["classes"]
    elif how == "num-classes-text":
        m["num_classes"] = "3"
    elif how == "classes-count":
        m["classes"] = m["classes"][:2]
    elif how == "std-zero":
        m["preprocess"]["std"] = [0.0] * len(m["preprocess"]["std"])
    elif how == "std-nan":
        m["preprocess"]["std"] = [float("nan")] * len(m["preprocess"]["std"])
    elif how == "size-zero":
        m["preprocess"]["size"] = 0
    elif how == "resize-mode":
        m["preprocess"]["resize_mode"] = "squash"
    elif how == "model-kwargs":
        m["model_kwargs"] = {"no_such_argument": 1}
    return m


@pytest.mark.parametrize("how,needle", [
    ("invalid-json", "not valid JSON"), ("not-object", "JSON object"), ("missing-classes", "missing classes"),
    ("num-classes-text", "num_classes"), ("classes-count", "2 class names for num_classes=3"),
    ("std-zero", "preprocess.std"), ("std-nan", "preprocess.std"), ("size-zero", "preprocess.size"),
    ("resize-mode", "preprocess.resize_mode"), ("model-kwargs", "model_kwargs")])
def test_damaged_model_json_is_one_line(tiny_run, tmp_path, capsys, how, needle):
    data, ref = tiny_run.data, tiny_run.dir
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ref / "model.safetensors", run)
    meta = _edit_meta(json.loads((ref / "model.json").read_text()), how)
    (run / "model.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    img = sorted((data / "a").glob("*.png"))[0]
    line = cli_error(capsys, ["predict", str(run), str(img)])
    assert needle in line and "model.json" in line, line


def _damage_weights(path: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "random":
        path.write_bytes(os.urandom(len(raw)))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        state = load_file(str(path))
        key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim >= 2)
        if how == "shape":
            state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
        elif how == "nan":
            state[key] = state[key].clone()
            state[key].view(-1)[0] = float("nan")
        elif how == "missing":
            del state[key]
        save_file(state, str(path))


@pytest.mark.parametrize("how,needle", [
    ("truncated", "damaged weights"), ("random", "damaged weights"), ("empty", "damaged weights"),
    ("shape", "wrong shape"), ("nan", "non-finite"), ("missing", "missing")])
def test_damaged_weights_are_one_line(tiny_run, tmp_path, capsys, how, needle):
    data, ref = tiny_run.data, tiny_run.dir
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ref / "model.json", run)
    shutil.copy(ref / "model.safetensors", run)
    _damage_weights(run / "model.safetensors", how)
    img = sorted((data / "a").glob("*.png"))[0]
    line = cli_error(capsys, ["predict", str(run), str(img)])
    assert needle in line and "model.safetensors" in line, line


# -- checkpoints ------------------------------------------------------------------------------------
def test_checkpoint_checksum_detects_damage(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    state = {"model": {"w": torch.arange(1000.0)}, "epoch": 0}
    save_checkpoint(path, state)
    assert torch.equal(load_checkpoint(path)["model"]["w"], state["model"]["w"])
    raw = path.read_bytes()
    for damaged, what in ((raw[: len(raw) // 2], "damaged"), (os.urandom(len(raw)), "damaged"),
                          (raw[:100] + bytes([raw[100] ^ 1]) + raw[101:], "sha256 mismatch")):
        path.write_bytes(damaged)
        with pytest.raises(CheckpointError, match=what) as err:
            load_checkpoint(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    legacy = tmp_path / "legacy.pt"   # written before checksums: still loads
    torch.save(state, legacy)
    assert load_checkpoint(legacy)["epoch"] == 0


def test_previous_checkpoint_is_kept(tmp_path):
    path = tmp_path / "last.pt"
    for epoch in range(3):
        save_checkpoint(path, {"model": {}, "epoch": epoch})
    assert load_checkpoint(path)["epoch"] == 2
    assert load_checkpoint(tmp_path / "prev.pt")["epoch"] == 1


@pytest.mark.slow
def test_resume_with_truncated_last_checkpoint_falls_back_to_prev(finished, tmp_path, monkeypatch,
                                                                   capsys, caplog):
    data, ref = finished
    run = killed_run(monkeypatch, data, tmp_path / "run", after_epochs=2)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        assert main(["train", "--resume", str(run)]) == 0
    assert "prev.pt" in caplog.text and "damaged" in caplog.text
    assert same_weights(run, ref)   # epoch 2 redone from epoch 1's state: the same result


@pytest.mark.slow
def test_resume_with_no_usable_checkpoint_is_one_line(finished, tmp_path, monkeypatch, capsys):
    data, _ = finished
    run = killed_run(monkeypatch, data, tmp_path / "run", after_epochs=2)
    for name in ("last.pt", "prev.pt"):
        (run / "checkpoints" / name).write_bytes(os.urandom(3000))
    line = cli_error(capsys, ["train", "--resume", str(run)])
    assert "last.pt" in line and "prev.pt" in line and "--overwrite" in line


# -- atomic writes -------------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    fsutil.atomic_write_json(path, {"old": 1})

    def fails(*a):
        raise OSError("disk full")
    monkeypatch.setattr(fsutil.os, "replace", fails)
    with pytest.raises(OSError):
        fsutil.atomic_write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]   # no temporary left


def test_reuse_accepts_a_new_or_same_kind_folder_only(tmp_path):
    """What `cv --fold k` processes sharing one OUT need: create it, or reuse a cv folder."""
    out = tmp_path / "cv"
    assert fsutil.prepare_output_dir(out, kind="cv", reuse=True) is None
    assert fsutil.vistrain_output_kind(out) == "cv"
    (out / "folds.json").write_text("{}")
    fsutil.prepare_output_dir(out, kind="cv", reuse=True)   # a second process: fine
    assert (out / "folds.json").is_file()
    run = tmp_path / "run"
    fsutil.prepare_output_dir(run, kind="run")
    (run / "config.yaml").write_text("{}")
    with pytest.raises(RunDirError, match="not a vistrain cv directory"):
        fsutil.prepare_output_dir(run, kind="cv", reuse=True)


def test_user_error_while_decoding_leaves_no_run_dir(tmp_path, capsys):
    """A refused run (unreadable image with --on-bad-image fail) must not block the corrected rerun."""
    data = make_image_folder(tmp_path / "data", per_class=4, size=(12, 12))
    (data / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "run"
    line = cli_error(capsys, ["train", str(data), "--out", str(out), *FLAGS, "--on-bad-image", "fail"])
    assert "broken.png" in line and not out.exists()
    (tmp_path / "empty").mkdir()   # a folder the user made stays, empty
    cli_error(capsys, ["train", str(data), "--out", str(tmp_path / "empty"), *FLAGS,
                       "--on-bad-image", "fail"])
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


# -- cross-validation folders follow the same rules ---------------------------------------------------
@pytest.mark.parametrize("where", ["data", "parent", "foreign"])
def test_cv_overwrite_never_deletes_user_files(tmp_path, capsys, where):
    data = make_image_folder(tmp_path / "user" / "data", per_class=4)
    (tmp_path / "user" / "notes.txt").write_text("mine")
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("...")
    before = {**files_of(tmp_path / "user"), **files_of(foreign)}
    out = {"data": data, "parent": tmp_path / "user", "foreign": foreign}[where]
    line = cli_error(capsys, ["cv", str(data), "--folds", "2", "--out", str(out), "--overwrite", *FLAGS])
    assert ("data folder" if where != "foreign" else "not written by vistrain") in line, line
    assert {**files_of(tmp_path / "user"), **files_of(foreign)} == before


def test_cv_refused_before_it_creates_its_folder(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "cv"
    assert "at least 2" in cli_error(capsys, ["cv", str(data), "--folds", "1", "--out", str(out), *FLAGS])
    assert "no such folder" in cli_error(capsys, ["cv", str(tmp_path / "nope"), "--out", str(out), *FLAGS])
    assert "train.epochs" in cli_error(capsys, ["cv", str(data), "--out", str(out), *FLAGS, "--epochs", "0"])
    assert not out.exists()


def test_compare_overwrite_never_deletes_user_files(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=4)
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("...")
    line = cli_error(capsys, ["compare", str(data), "--vary", "norm=batch,group", "--out", str(foreign),
                              "--overwrite", *FLAGS])
    assert "not written by vistrain" in line and (foreign / "chapter1.tex").read_text() == "..."
    bad = cli_error(capsys, ["compare", str(data), "--vary", "norm=batch,nonsense", "--out",
                             str(tmp_path / "cmp"), *FLAGS])
    assert "model.norm" in bad and not (tmp_path / "cmp").exists()
