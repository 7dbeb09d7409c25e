"""vistrain.fsutil's one atomic-write helper: the temporary-name rule as a parameter, cleanup."""
from __future__ import annotations

import json
import os

import pytest

from vistrain import fsutil
from vistrain.data.cache.budget import PART, cache_entries, record_entry


def test_default_rule_is_the_hidden_pid_name_that_resume_cleans_up(tmp_path):
    tmp = fsutil.temp_beside(tmp_path / "metrics.json")
    assert tmp.name == f".metrics.json.{os.getpid()}.tmp" and tmp.is_file()
    assert fsutil.remove_stale_temporaries(tmp_path) == [tmp.name]


def test_suffix_rule_gives_unique_names_the_cache_budget_counts_as_unfinished(tmp_path):
    record_entry(tmp_path / "pixels-k.npy")   # as the cache does before writing an entry
    a, b = (fsutil.temp_beside(tmp_path / "pixels-k.npy", PART) for _ in range(2))
    assert a != b and all(p.name.startswith("pixels-k.npy.") and p.suffix == PART for p in (a, b))
    entries = cache_entries(tmp_path)
    assert len(entries) == 2 and all(e.partial for e in entries)
    assert fsutil.remove_stale_temporaries(tmp_path) == []   # a run's cleanup leaves them alone


@pytest.mark.parametrize("suffix", [None, PART])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, suffix):
    path = tmp_path / "x.json"
    fsutil.atomic_write_json(path, {"old": 1}, suffix=suffix)
    with pytest.raises(ZeroDivisionError), fsutil.atomic_path(path, suffix=suffix) as tmp:
        tmp.write_text("half")
        1 / 0
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_bytes_with_fsync_and_a_suffix(tmp_path):
    fsutil.atomic_write_bytes(tmp_path / "w.bin", b"abc", fsync=True, suffix=PART)
    assert (tmp_path / "w.bin").read_bytes() == b"abc" and len(list(tmp_path.iterdir())) == 1


# -- ownership ----------------------------------------------------------------------------------
def test_markers_carry_a_fresh_id_and_only_they_make_a_folder_vistrains(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (b / "config.yaml").write_text("x")
    (b / "model.json").write_text("{}")
    assert fsutil.vistrain_output_kind(b) is None
    fsutil.write_marker(a, "run")
    fsutil.write_marker(b, "shards")
    ida, idb = fsutil.read_marker(a)["id"], fsutil.read_marker(b)["id"]
    assert len(ida) == 32 and ida != idb and fsutil.vistrain_output_kind(b) == "shards"
    with pytest.raises(ValueError):
        fsutil.write_marker(a, "photos")


def test_owned_png_is_a_valid_png_with_vistrains_chunk(tmp_path):
    from PIL import Image
    out = tmp_path / "sub" / "fig.png"
    fsutil.write_owned_png(out, lambda tmp: Image.new("RGB", (3, 2), "red").save(tmp))
    img = Image.open(out)
    img.load()   # every chunk's CRC is checked while decoding
    assert img.size == (3, 2) and img.text.get("vistrain-output") == "vistrain"
    assert fsutil.is_owned_png(out) and not list(out.parent.glob("*.tmp*"))
    Image.new("RGB", (3, 2)).save(tmp_path / "plain.png")
    assert not fsutil.is_owned_png(tmp_path / "plain.png")
    assert not fsutil.is_owned_png(tmp_path / "missing.png")


def test_check_output_file_rules(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "1.png").write_bytes(b"img")
    (tmp_path / "link").symlink_to(data / "a")
    for inside in (data / "a" / "1.png", data / "new.png", tmp_path / "link" / "x.png"):
        with pytest.raises(fsutil.RunDirError, match="inside the data folder"):
            fsutil.check_output_file(inside, data_folders=[data], overwrite=True)
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"user")
    with pytest.raises(fsutil.RunDirError, match="add --overwrite"):
        fsutil.check_output_file(mine, overwrite=False)
    assert fsutil.check_output_file(mine, overwrite=True) == mine.resolve()
    run = tmp_path / "run"
    run.mkdir()
    fsutil.write_marker(run, "run")
    (run / "metrics.json").write_text("{}")
    with pytest.raises(fsutil.RunDirError, match="file of the vistrain run folder"):
        fsutil.check_output_file(run / "metrics.json", overwrite=True)
    assert fsutil.check_output_file(run / "preview.png") == (run / "preview.png").resolve()
    with pytest.raises(fsutil.RunDirError, match="is a folder"):
        fsutil.check_output_file(run)


def test_outputs_folder_rules(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for bad, words in ((data / "a", "data folder"), (tmp_path, "data folder")):
        with pytest.raises(fsutil.RunDirError, match=words):
            fsutil.check_outputs_folder(bad, data_folders=[data])
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("x")
    with pytest.raises(fsutil.RunDirError, match="not written by vistrain"):
        fsutil.check_outputs_folder(user)
    out = fsutil.prepare_outputs_folder(tmp_path / "ev", data_folders=[data])
    (out / "metrics.json").write_text("{}")
    assert fsutil.prepare_outputs_folder(out) == out        # an earlier evaluation's: reused
    with pytest.raises(fsutil.RunDirError, match="vistrain run folder"):
        run = tmp_path / "run"
        run.mkdir()
        fsutil.write_marker(run, "run")
        fsutil.check_outputs_folder(run)


def test_folder_lock_is_reentrant_in_a_process_and_exclusive_across_processes(tmp_path):
    import subprocess
    import sys
    fsutil.lock_folder(tmp_path)
    fsutil.lock_folder(tmp_path)
    code = ("import sys; from vistrain import fsutil\n"
            "try:\n    fsutil.lock_folder(sys.argv[1])\nexcept fsutil.RunDirError as e:\n    print(e)")
    held = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert "being written by another vistrain process" in held.stdout
    fsutil.unlock_folder(tmp_path)
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert free.stdout == "" and free.returncode == 0
