"""User errors: exit code != 0, one ``error: ...`` line, no traceback, nothing left behind or deleted."""
from __future__ import annotations

import pytest

from .acceptlib import SCRATCH, assert_user_error, file_list, vistrain

# train flags that would make a short run if the command were (wrongly) accepted
QUICK = [*SCRATCH, "--epochs", "1"]

TRAIN_ERRORS = {
    "missing data folder": ["train", "{missing}", "--out", "{out}"],
    "invalid --set value (type)": ["train", "{data}", "--out", "{out}", *QUICK, "--set", "train.epochs=abc"],
    "invalid --set value (choice)": ["train", "{data}", "--out", "{out}", *QUICK, "--set", "data.cache=of"],
    "invalid --set value (bad-image policy)": ["train", "{data}", "--out", "{out}", *QUICK,
                                               "--set", "data.on_bad_image=fial"],
    "unknown --set key": ["train", "{data}", "--out", "{out}", *QUICK, "--set", "optim.nosuch=1"],
    "--epochs 0": ["train", "{data}", "--out", "{out}", *SCRATCH, "--epochs", "0"],
    "--epochs -3": ["train", "{data}", "--out", "{out}", *SCRATCH, "--epochs", "-3"],
    "--batch-size 0": ["train", "{data}", "--out", "{out}", *QUICK, "--batch-size", "0"],
    "--lr nan": ["train", "{data}", "--out", "{out}", *QUICK, "--lr", "nan"],
    "--lr -1": ["train", "{data}", "--out", "{out}", *QUICK, "--lr", "-1"],
    "unknown strategy in --set": ["train", "{data}", "--out", "{out}", *QUICK, "--set", "strategy.name=fast"],
}


@pytest.mark.parametrize("case", list(TRAIN_ERRORS))
def test_train_refuses_and_leaves_no_run_directory(case, subset, tmp_path, acc_env):
    out = tmp_path / "run"
    before = file_list(subset)
    args = [a.format(data=subset, out=out, missing=tmp_path / "no-such-folder") for a in TRAIN_ERRORS[case]]
    assert_user_error(vistrain(*args, cwd=tmp_path, timeout=300))
    assert not out.exists(), f"{case}: left {sorted(p.name for p in out.iterdir())} behind"
    assert not (tmp_path / "runs").exists()
    assert file_list(subset) == before


def test_out_naming_a_file_is_refused_and_the_file_kept(subset, tmp_path, acc_env):
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    assert_user_error(vistrain("train", subset, "--out", target, *QUICK, cwd=tmp_path, timeout=300))
    assert target.read_text() == "my notes\n"


@pytest.mark.parametrize("which", ["data folder", "parent of the data folder"])
def test_overwrite_never_deletes_the_data(which, subset, tmp_path, acc_env):
    """``train DATA --out DATA --overwrite``: refused, and every data file is still there."""
    target = subset if which == "data folder" else subset.parent
    before = file_list(subset)
    assert len(before) == 500
    assert_user_error(vistrain("train", subset, "--out", target, "--overwrite", *QUICK, cwd=tmp_path,
                               timeout=300))
    assert file_list(subset) == before


def test_rerun_after_a_refused_run_needs_no_overwrite(subset, tmp_path, acc_env):
    """A refused run leaves nothing that blocks the corrected command."""
    out = tmp_path / "run"
    assert_user_error(vistrain("train", subset, "--out", out, *QUICK, "--set", "data.cache=of",
                               cwd=tmp_path, timeout=300))
    res = vistrain("train", subset, "--out", out, *QUICK, "--set", "data.cache=off", cwd=tmp_path)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.describe()


def test_predict_top_k_negative(scratch_run, shipped, tmp_path):
    img = sorted((shipped / "Bag").glob("*.png"))[0]
    assert_user_error(vistrain("predict", scratch_run.dir, img, "--top-k", -1, cwd=tmp_path))
    assert_user_error(vistrain("predict", scratch_run.dir, img, "--top-k", 0, cwd=tmp_path))


OTHER_ERRORS = {
    "predict: missing run": ["predict", "{tmp}/no-run", "{img}"],
    "predict: missing image": ["predict", "{run}", "{tmp}/no-image.png"],
    "evaluate: missing run": ["evaluate", "{tmp}/no-run", "{data}"],
    "evaluate: missing data": ["evaluate", "{run}", "{tmp}/no-data"],
    "explain: unknown class": ["explain", "{run}", "{img}", "--class", "Unicorn", "--out", "{tmp}/x"],
    "explain: missing run": ["explain", "{tmp}/no-run", "{img}"],
    "report: not a run": ["report", "{tmp}"],
    "resume: not a run": ["train", "--resume", "{tmp}/no-run"],
    "cv: --folds 1": ["cv", "{data}", "--folds", "1", "--out", "{tmp}/cv", *QUICK],
    "cv: missing data": ["cv", "{tmp}/no-data", "--out", "{tmp}/cv"],
    "compare: bad --vary": ["compare", "{data}", "--vary", "norm", "--out", "{tmp}/cmp"],
    "compare: unknown norm": ["compare", "{data}", "--vary", "norm=batch,bogus", "--out", "{tmp}/cmp", *QUICK],
    "stats: missing data": ["stats", "{tmp}/no-data"],
    "stats: negative size": ["stats", "{data}", "--size", "-1"],
    "doctor: missing data": ["doctor", "{tmp}/no-data"],
    "doctor: --folds 1": ["doctor", "{data}", "--folds", "1"],
    "preview: --n 0": ["preview", "{data}", "--n", "0", "--out", "{tmp}/p.png"],
    "augment-preview: --k 0": ["augment-preview", "{data}", "--k", "0", "--out", "{tmp}/a.png"],
    "check: missing data": ["check", "{tmp}/no-data"],
    "lr-find: missing data": ["lr-find", "{tmp}/no-data"],
    "lr-find: --steps 0": ["lr-find", "{data}", "--steps", "0", *SCRATCH],
    "train: --config missing": ["train", "{data}", "--config", "{tmp}/none.yaml", "--out", "{tmp}/r"],
}


@pytest.mark.parametrize("case", list(OTHER_ERRORS))
def test_every_verb_refuses_bad_input_in_one_line(case, scratch_run, subset, tmp_path):
    img = sorted((subset / "Bag").glob("*.png"))[0]
    args = [a.format(run=scratch_run.dir, img=img, data=subset, tmp=tmp_path) for a in OTHER_ERRORS[case]]
    assert_user_error(vistrain(*args, cwd=tmp_path, timeout=300))
    for name in ("cv", "cmp", "r", "x"):
        assert not (tmp_path / name).exists(), f"{case}: left {name}/ behind"
