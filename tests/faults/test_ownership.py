"""One ownership rule for every write and delete: vistrain deletes or replaces only files it can
prove it wrote (a folder's ``.vistrain-run`` marker, a cache's index, a PNG's ``vistrain-output``
chunk), never writes inside a data folder, and a second writer to one folder fails fast.

The named tests each drive one way a careless or hostile user lost files; the property test at
the end generates output paths (symbolic links, nesting, look-alike folders, same-named files,
``--out`` inside and around the data) for every verb that writes and checks that no file outside
vistrain's own folders changed and that the outcome is success or one ``error:`` line.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vistrain import fsutil
from vistrain.cli.main import main
from vistrain.data.cache.budget import record_entry
from tests.conftest import make_image_folder, skip_report

TINY = ["--model", "vistrain/resnet-tiny", "--batch-size", "8", "--set", "preprocess.size=16",
        "--set", "data.num_workers=0", "--set", "data.doctor=false"]
TRAIN = ["--epochs", "1", "--set", "data.cache=off", "--set", "train.patience=null", *TINY]




@pytest.fixture(scope="module")
def world(tiny_run):
    """(data, run): the session's shared tiny run and its image folder; a test that changes
    either works on a copy."""
    return tiny_run.data, tiny_run.dir


@pytest.fixture(autouse=True)
def quiet(monkeypatch, tmp_path_factory):
    skip_report(monkeypatch)
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path_factory.getbasetemp() / "own-cache"))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (links not followed): its bytes and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# -- the cache -------------------------------------------------------------------------------------
def test_cache_clear_refuses_a_folder_of_user_files(tmp_path, monkeypatch, capsys):
    user = tmp_path / "photos"
    make_image_folder(user, per_class=2)
    before = snapshot(user)
    monkeypatch.setenv("VISTRAIN_CACHE", str(user))
    for action in ("--clear", "--prune", "--verify"):
        assert "not a cache folder vistrain created" in one_line_error(capsys, ["cache", action])
    assert snapshot(user) == before


def test_cache_clear_deletes_only_recorded_entries(tmp_path, monkeypatch, capsys):
    root = tmp_path / "cache"
    monkeypatch.setenv("VISTRAIN_CACHE", str(root))
    record_entry(root / "pixels" / "pixels-k.npy")      # as vistrain does before writing one
    (root / "pixels").mkdir()
    (root / "pixels" / "pixels-k.npy").write_bytes(bytes(1000))
    (root / "pixels" / "pixels-mine.npy").write_bytes(bytes(1000))   # the user's, same pattern
    (root / "notes.txt").write_text("mine")
    assert main(["cache", "--clear"]) == 0
    assert not (root / "pixels" / "pixels-k.npy").exists()
    assert (root / "pixels" / "pixels-mine.npy").exists() and (root / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_training_evicts_only_recorded_cache_entries(world, tmp_path, monkeypatch):
    data, _ = world
    user = tmp_path / "mine"
    user.mkdir()
    for i in range(4):  # 4 MB, "least recently used", named like cache entries
        (user / f"pixels-{i}.npy").write_bytes(os.urandom(10**6))
        os.utime(user / f"pixels-{i}.npy", (1, 1))
    before = snapshot(user)
    monkeypatch.setenv("VISTRAIN_CACHE", str(user))
    monkeypatch.setenv("VISTRAIN_CACHE_MAX_GB", "0.001")            # 1 MB: the user's files are over it
    argv = ["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY]
    assert main(argv) == 0
    assert {k: v for k, v in snapshot(user).items() if k in before} == before


# -- --overwrite -----------------------------------------------------------------------------------
def test_pack_overwrite_refuses_a_shard_folder_around_the_data(world, tmp_path, capsys):
    data, _ = world
    shards = tmp_path / "sh"
    assert main(["pack", str(data), "--out", str(shards), "--size", "16"]) == 0
    assert fsutil.vistrain_output_kind(shards) == "shards"
    shutil.copytree(data, shards / "data")
    before = snapshot(shards)
    one_line_error(capsys, ["pack", str(shards / "data"), "--out", str(shards), "--overwrite"])
    assert snapshot(shards) == before


@pytest.mark.parametrize("files", [["config.yaml", "model.json"], ["compare.json"]])
def test_overwrite_refuses_a_run_look_alike(world, tmp_path, capsys, files):
    data, _ = world
    out = tmp_path / "mine"
    out.mkdir()
    for f in files:
        (out / f).write_text("{}")
    before = snapshot(out)
    for verb in ("train", "compare"):
        extra = ["--vary", "norm=batch,group"] if verb == "compare" else []
        err = one_line_error(capsys, [verb, str(data), "--out", str(out), "--overwrite", *extra, *TRAIN])
        assert "not written by vistrain" in err
    assert snapshot(out) == before


@pytest.mark.slow
def test_overwrite_through_a_symlinked_out(world, tmp_path):
    data, run = world
    target = tmp_path / "real-run"
    shutil.copytree(run, target)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(["train", str(data), "--out", str(link), "--overwrite", *TRAIN]) == 0
    assert link.is_symlink() and (target / "model.json").is_file()
    assert fsutil.read_marker(target)["id"] != fsutil.read_marker(run)["id"]
    assert not list(tmp_path.glob("real-run.old-*")) and not list(tmp_path.glob(".real-run.new-*"))


def test_concurrent_writers_to_one_folder_fail_fast(world, tmp_path, capsys):
    data, run = world
    out = tmp_path / "run"
    shutil.copytree(run, out)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vistrain import fsutil; "
         "fsutil.lock_folder(sys.argv[1]); fsutil.update_marker(sys.argv[1], pid=__import__('os').getpid()); "
         "print('ready', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = snapshot(out)
        start = time.monotonic()
        err = one_line_error(capsys, ["train", str(data), "--out", str(out), "--overwrite", *TRAIN])
        assert f"being written by another vistrain process (pid {holder.pid})" in err
        assert time.monotonic() - start < 10 and snapshot(out) == before
        assert not list(tmp_path.glob("run.old-*"))
    finally:
        holder.kill()
        holder.wait()


# -- single files and outputs folders ------------------------------------------------------------
@pytest.mark.parametrize("verb", ["preview", "augment-preview", "lr-find"])
def test_figures_never_replace_a_training_image(world, tmp_path, capsys, verb):
    data, _ = world
    work = tmp_path / "data"
    shutil.copytree(data, work)
    before = snapshot(work)
    target = str(work / "a" / "a_003.png")
    extra = ["--steps", "5", *TINY] if verb == "lr-find" else []
    for overwrite in ([], ["--overwrite"]):
        err = one_line_error(capsys, [verb, str(work), "--out", target, *overwrite, *extra])
        assert "inside the data folder" in err
    assert snapshot(work) == before


@pytest.mark.parametrize("verb", ["explain", "evaluate", "check"])
def test_outputs_never_go_into_a_class_folder(world, tmp_path, capsys, verb):
    data, run = world
    work = tmp_path / "data"
    shutil.copytree(data, work)
    before = snapshot(work)
    argv = {"explain": ["explain", str(run), str(work / "a" / "a_000.png")],
            "evaluate": ["evaluate", str(run), str(work), "--bootstrap", "10"],
            "check": ["check", str(work), "--steps", "2", "--lr-steps", "5", *TINY]}[verb]
    assert "data folder" in one_line_error(capsys, [*argv, "--out", str(work / "a")])
    assert snapshot(work) == before


def test_evaluate_never_replaces_the_run_s_own_metrics(world, tmp_path, capsys):
    data, run = world
    before = snapshot(run)
    err = one_line_error(capsys, ["evaluate", str(run), str(data), "--out", str(run), "--bootstrap", "10"])
    assert "vistrain run folder" in err
    assert snapshot(run) == before


def test_report_only_writes_into_a_marked_folder(world, tmp_path, capsys):
    _, run = world
    mine = tmp_path / "mine"
    shutil.copytree(run, mine)
    (mine / fsutil.MARKER).unlink()
    (mine / "report.html").write_text("my notes")
    before = snapshot(mine)
    assert "not a vistrain run directory" in one_line_error(capsys, ["report", str(mine)])
    assert snapshot(mine) == before


def test_same_named_user_file_is_not_replaced_silently(world, tmp_path, capsys):
    data, _ = world
    mine = tmp_path / "preview.png"
    shutil.copy(data / "a" / "a_000.png", mine)   # a picture of the user's, same name
    before = mine.read_bytes()
    assert "add --overwrite" in one_line_error(capsys, ["preview", str(data), "--out", str(mine), "--n", "2"])
    assert mine.read_bytes() == before
    assert main(["preview", str(data), "--out", str(mine), "--n", "2", "--overwrite"]) == 0
    assert fsutil.is_owned_png(mine)
    assert main(["preview", str(data), "--out", str(mine), "--n", "2"]) == 0   # vistrain's now


def test_explain_outputs_folder_is_reused_but_a_user_folder_is_not(world, tmp_path, capsys):
    data, run = world
    img = str(data / "a" / "a_000.png")
    out = tmp_path / "heat"
    for _ in range(2):
        assert main(["explain", str(run), img, "--out", str(out)]) == 0
    assert fsutil.vistrain_output_kind(out) == "outputs"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a_000_gradcam.png").write_text("mine")
    one_line_error(capsys, ["explain", str(run), img, "--out", str(mine)])
    assert (mine / "a_000_gradcam.png").read_text() == "mine"


# -- the property: any path, any verb --------------------------------------------------------------
PLACES = ["new", "new-nested", "data", "class-folder", "class-image", "around-data", "user-file",
          "user-folder", "look-alike-run", "look-alike-compare", "link-to-class", "link-to-user",
          "link-to-run", "run", "run-metrics", "run-sub"]
VERBS = ["preview", "augment-preview", "lr-find", "explain", "evaluate", "check", "report", "pack",
         "train"]


def _sandbox(base: Path, data: Path, run: Path) -> Path:
    box = Path(tempfile.mkdtemp(dir=base))
    shutil.copytree(data, box / "in" / "data")
    shutil.copytree(run, box / "run")
    (box / "user").mkdir()
    (box / "user" / "notes.txt").write_text("mine")
    (box / "user" / "picture.png").write_bytes((data / "b" / "b_001.png").read_bytes())
    for name, files in (("look-run", ["config.yaml", "model.json"]), ("look-cmp", ["compare.json"])):
        (box / name).mkdir()
        for f in files:
            (box / name / f).write_text("{}")
    (box / "link-class").symlink_to(box / "in" / "data" / "a")
    (box / "link-user").symlink_to(box / "user")
    (box / "link-run").symlink_to(box / "run")
    return box


def _out(box: Path, place: str, verb: str) -> Path:
    single = verb in ("preview", "augment-preview", "lr-find")
    leaf = "fig.png" if single else "out"
    return {"new": box / leaf, "new-nested": box / "x" / "y" / leaf, "data": box / "in" / "data",
            "class-folder": box / "in" / "data" / "a" / (leaf if single else ""),
            "class-image": box / "in" / "data" / "a" / "a_003.png", "around-data": box / "in",
            "user-file": box / "user" / "picture.png", "user-folder": box / "user",
            "look-alike-run": box / "look-run", "look-alike-compare": box / "look-cmp",
            "link-to-class": box / "link-class" / (leaf if single else ""),
            "link-to-user": box / "link-user" / ("picture.png" if single else ""),
            "link-to-run": box / "link-run", "run": box / "run", "run-metrics": box / "run" / "metrics.json",
            "run-sub": box / "run" / leaf}[place]


def _argv(verb: str, box: Path, out: Path, overwrite: bool) -> list[str]:
    data, run = str(box / "in" / "data"), str(box / "run")
    ow = ["--overwrite"] if overwrite and verb in ("preview", "augment-preview", "lr-find", "pack", "train") else []
    return {"preview": ["preview", data, "--n", "2"],
            "augment-preview": ["augment-preview", data, "--n", "2", "--k", "2", "--size", "32"],
            "lr-find": ["lr-find", data, "--steps", "5", *TINY],
            "explain": ["explain", run, str(box / "in" / "data" / "a" / "a_001.png")],
            "evaluate": ["evaluate", run, data, "--bootstrap", "5"],
            "check": ["check", data, "--steps", "2", "--lr-steps", "5", *TINY],
            "report": ["report", str(out)],
            "pack": ["pack", data, "--size", "16"],
            "train": ["train", data, *TRAIN]}[verb] + ([] if verb == "report" else ["--out", str(out)]) + ow


def _users_files(box: Path) -> dict[str, tuple[bytes, int]]:
    """The files of the sandbox that are not vistrain's: outside every marked folder, and not a
    PNG vistrain tagged."""
    marked = [p.parent for p in box.rglob(fsutil.MARKER)]
    return {k: v for k, v in snapshot(box).items()
            if not any(m == box / k or m in (box / k).parents for m in marked)
            and not fsutil.is_owned_png(box / k)}


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(verb=st.sampled_from(VERBS), place=st.sampled_from(PLACES), overwrite=st.booleans())
def test_no_verb_changes_a_file_it_did_not_write(world, tmp_path_factory, verb, place, overwrite):
    data, run = world
    box = _sandbox(tmp_path_factory.getbasetemp(), data, run)
    try:
        out = _out(box, place, verb)
        before = _users_files(box)
        data_before = snapshot(box / "in" / "data")
        stderr = io.StringIO()   # not capsys: function-scoped fixtures and Hypothesis do not mix
        with contextlib.redirect_stderr(stderr):
            rc = main(_argv(verb, box, out, overwrite))
        err = stderr.getvalue()
        assert rc in (0, 2) or (verb == "check" and rc == 1), (rc, err)  # check: 1 = a check failed
        if rc == 2:
            lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
            assert len(lines) == 1 and "Traceback" not in err, err
        after = _users_files(box)
        if overwrite and verb in ("preview", "augment-preview", "lr-find"):  # asked for: that one file
            before.pop(str(out.resolve().relative_to(box.resolve())), None)
        assert {k: v for k, v in after.items() if k in before} == before, (verb, place, rc, err)
        assert snapshot(box / "in" / "data") == data_before, (verb, place)   # nothing added either
        assert not list(box.glob("*.old-*")) and not list(box.glob(".*.new-*"))
    finally:
        shutil.rmtree(box, ignore_errors=True)
