"""Training on streamed pixels: from ``vistrain pack`` shards and from a folder with ``--cache stream``,
to the accuracy of the cached folder on the same split."""
from __future__ import annotations

import json

import pytest

from .acceptlib import SCRATCH, TWO_WORKERS, assert_ok, assert_user_error, check_run_dir, vistrain


@pytest.fixture(scope="module")
def shards(shipped, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "shards"
    assert_ok(vistrain("pack", shipped, "--out", out, "--workers", 2, "--shard-mb", 0.25))
    return out


def _test_files(run_dir, names):
    parts = json.loads((run_dir / "splits.json").read_text())["parts"]
    return sorted(names[i] for i in parts["test"]["indices"])


def test_frozen_features_from_shards_match_the_folder(shards, shipped, tmp_path):
    """The shipped data's recipe (frozen Lite0, a new head) named outright: strategy auto's
    choice depends on the measured speed, which other load on the machine changes."""
    flags = ["--strategy", "feature-extraction", "--epochs", 5]
    runs = {}
    for name, data in (("folder", shipped), ("shards", shards)):
        res = assert_ok(vistrain("train", data, "--out", tmp_path / name, *flags))
        runs[name] = check_run_dir(tmp_path / name, res, n_images=2000, epochs=5)
    cache = runs["shards"]["run"]["cache"]
    assert cache["where"] == "shards" and cache["parts"] == {"train": 1400, "val": 300, "test": 300}
    assert runs["folder"]["run"]["cache"]["where"] in ("disk", "memory")
    # the same 300 test images (pack splits as training does) ...
    files = json.loads((shards / "index.json").read_text())["files"]
    assert _test_files(tmp_path / "shards", files) == sorted(runs["folder"]["splits"]["parts"]["test"]["files"])
    # ... to the same accuracy: the pixels are the same, so the frozen features are too
    acc, ref = (runs[k]["metrics"]["test"]["accuracy"] for k in ("shards", "folder"))
    assert abs(acc - ref) <= 0.02 and acc >= 0.75, (acc, ref)


def test_from_scratch_streamed_from_shards_and_from_the_folder(scratch_run, shards, shipped, tmp_path):
    ref = json.loads((scratch_run.dir / "metrics.json").read_text())["test"]["accuracy"]
    for name, data, extra in (("shards", shards, []), ("stream", shipped, ["--cache", "stream"])):
        out = tmp_path / name
        res = assert_ok(vistrain("train", data, "--out", out, "--epochs", scratch_run.epochs,
                                 *SCRATCH, *TWO_WORKERS, *extra))
        info = check_run_dir(out, res, n_images=2000, epochs=scratch_run.epochs)
        assert info["run"]["cache"]["where"] == name, info["run"]["cache"]
        # another batch order and other augmentation draws than the cached run: run-to-run noise
        acc = info["metrics"]["test"]["accuracy"]
        assert abs(acc - ref) <= 0.08, (name, acc, ref)


def test_cache_require_over_budget_refuses_before_decoding(subset, tmp_path, acc_env):
    env = {"VISTRAIN_CACHE": str(tmp_path / "cache"), "VISTRAIN_CACHE_MAX_GB": "0.0001"}
    line = assert_user_error(vistrain("train", subset, "--out", tmp_path / "run", "--cache", "require",
                                      *SCRATCH, env=env))
    assert "budget" in line or "VISTRAIN_CACHE_MAX_GB" in line, line
    assert not list((tmp_path / "cache").rglob("*.npy")) and not (tmp_path / "run" / "model.safetensors").exists()


def test_folder_commands_name_the_shards(shards, fe_run):
    line = assert_user_error(vistrain("evaluate", fe_run.dir, shards))
    assert "WebDataset shards" in line and "image folder" in line
    line = assert_user_error(vistrain("cv", shards, "--folds", 2))
    assert "WebDataset shards" in line


def test_shards_by_url_resume_from_anywhere(shards, tmp_path):
    url, out = shards.as_uri(), tmp_path / "run"
    assert_ok(vistrain("train", url, "--out", out, "--epochs", 1, "--keep-checkpoints", *SCRATCH))
    assert json.loads((out / "run.json").read_text())["data_root"] == url  # not CWD/file:/...
    res = assert_ok(vistrain("train", "--resume", out, "--epochs", 2, cwd=tmp_path))
    assert "resumed from epoch 1" in res.stderr
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
