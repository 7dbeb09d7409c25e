"""k-fold cross-validation: fold construction, per-fold statistics, outputs, resume, --fold."""
from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vistrain.data.scan import ImageIndex
from vistrain.errors import DataError
from vistrain.evaluation.cv import fold_dir, make_folds
from test_run_record import round_trip_failures

TINY = ["--model", "resnet18", "--no-pretrained", "--set", "preprocess.size=32", "--epochs", "1",
        "--strategy", "finetune", "--augment", "none"]


def fake_index(counts: dict[str, int], given=None) -> ImageIndex:
    classes = sorted(counts)
    labels = [k for k, c in enumerate(classes) for _ in range(counts[c])]
    paths = [Path(f"/d/{classes[y]}/{i}.png") for i, y in enumerate(labels)]
    return ImageIndex(Path("/d"), classes, paths, labels, given)


def test_folds_stratified_disjoint_and_cover_once():
    index = fake_index({"a": 23, "b": 11, "c": 7, "d": 40})
    k = 4
    spec = make_folds(index, k, seed=3, val_fraction=0.2)
    labels = np.asarray(index.labels)
    tests = [f["test"] for f in spec["folds"]]
    assert sorted(i for t in tests for i in t) == list(range(len(index)))  # each image tested once
    total = Counter(index.labels)
    for f in spec["folds"]:
        tr, va, te = set(f["train"]), set(f["val"]), set(f["test"])
        assert not (tr & va or tr & te or va & te)
        assert tr | va | te == set(range(len(index)))
        fold_counts = Counter(labels[f["test"]].tolist())
        for c, n in total.items():  # every class within one image of its ideal share
            assert abs(fold_counts.get(c, 0) - n / k) <= 1
        val_counts = Counter(labels[f["val"]].tolist())
        assert set(val_counts) == set(total)  # the early-stopping slice holds every class


def test_given_test_folder_is_held_out_of_every_fold():
    given = ["train"] * 30 + ["test"] * 6
    index = fake_index({"a": 18, "b": 18}, None)
    order = np.argsort([p.name for p in index.paths])  # spread test images over both classes
    index.given_split = [given[i] for i in np.argsort(order)]
    test = [i for i, g in enumerate(index.given_split) if g == "test"]
    spec = make_folds(index, 3, seed=0, val_fraction=0.0)
    assert "test/ folder" in spec["pool"]
    covered = sorted(i for f in spec["folds"] for i in f["test"])
    assert covered == sorted(set(range(len(index))) - set(test))
    assert all(f["given_test"] == test for f in spec["folds"])


def test_too_few_images_names_the_class():
    index = fake_index({"common": 20, "rare_one": 2})
    with pytest.raises(DataError, match="rare_one") as err:
        make_folds(index, 3, seed=0, val_fraction=0.15)
    assert "fewer folds" in str(err.value) and "common" not in str(err.value)


def _brightness_folder(root: Path, per_class: int = 7) -> Path:
    """Class = dominant channel; brightness varies a lot between images, so the statistics of
    different training parts differ clearly from those of the whole data set."""
    from PIL import Image
    rng = np.random.default_rng(1)
    for k, name in enumerate(("r", "g", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            level = rng.uniform(0.1, 1.0)
            arr = np.full((20, 20, 3), 40 * level)
            arr[..., k] = 250 * level
            arr += rng.integers(0, 5, size=arr.shape)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _cv(argv):
    from vistrain.cli import cv
    from vistrain.config.spelling import cli_spelling
    parser = argparse.ArgumentParser()
    cv.register(parser.add_subparsers())
    args = parser.parse_args(["cv", *argv])
    with cli_spelling():  # as vistrain.cli.main runs a verb: messages name flags
        return args.func(args)


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cv")
    mp = pytest.MonkeyPatch()
    mp.setenv("VISTRAIN_CACHE", str(base / "cache"))
    # each fold's full run report (Grad-CAM etc., tested in its own file) costs ~10 s CPU a fold
    mp.setattr("vistrain.report.build.build_report", lambda run_dir: None)
    data = _brightness_folder(base / "data")
    out = base / "out"
    logging.getLogger("vistrain").setLevel(logging.WARNING)
    assert _cv([str(data), "--folds", "3", "--out", str(out), "--json", *TINY]) == 0
    yield data, out
    mp.undo()


@pytest.mark.slow
def test_cv_end_to_end_outputs(cv_run, capsys):
    data, out = cv_run
    for name in ("folds.json", "oof_predictions.json", "cv_metrics.json", "report.html",
                 "oof_confusion_matrix.png", "oof_roc_curves.png"):
        assert (out / name).is_file(), name
    assert round_trip_failures(out) == [] and round_trip_failures(fold_dir(out, 0)) == []
    res = json.loads((out / "cv_metrics.json").read_text())
    folds = json.loads((out / "folds.json").read_text())
    oof = json.loads((out / "oof_predictions.json").read_text())["predictions"]
    assert [r["index"] for r in oof] == list(range(21))
    for r in oof:
        assert r["index"] in folds["folds"][r["fold"]]["test"]["indices"]
        assert abs(sum(r["probs"]) - 1) < 1e-4 and r["file"].startswith(r["class"] + "/")
    s = res["summary"]["metrics"]
    for key in ("accuracy", "macro_f1", "macro_auc_roc"):
        vals = [v for v in s[key]["values"] if v is not None]
        assert len(s[key]["values"]) == 3
        assert s[key]["mean"] == pytest.approx(np.mean(vals))
        assert s[key]["std"] == pytest.approx(np.std(vals, ddof=1))
    y = np.array([r["label"] for r in oof])
    p = np.array([r["probs"] for r in oof])
    assert res["pooled_oof"]["accuracy"] == pytest.approx(float((p.argmax(1) == y).mean()))
    issues = res["label_issues"]  # a list, or (predictions too weak) none and one line why
    assert (issues["skipped"] is None) == (issues["csv"] is not None) == (out / "label_issues.csv").is_file()
    for k in range(3):  # every fold is a complete run with its own figures (checkpoints removed)
        fdir = out / f"fold-{k}"
        assert not (fdir / "checkpoints").exists()
        for name in ("model.safetensors", "metrics.json",
                     "confusion_matrix.png", "confusion_matrix_normalized.png", "roc_curves.png",
                     "pr_curves.png", "reliability.png"):
            assert (fdir / name).is_file(), f"fold-{k}/{name}"
        splits = json.loads((fdir / "splits.json").read_text())["parts"]
        assert splits["test"]["indices"] == folds["folds"][k]["test"]["indices"]
    html = (out / "report.html").read_text()
    assert "±" in html and html.count("data:image/png;base64,") >= 3
    from vistrain.evaluation.cv import format_cv
    text = format_cv(res)
    assert "macro_auc_roc" in text and "±" in text and "pooled out-of-fold" in text


@pytest.mark.slow
def test_fold_normalization_from_fold_train_part_only(cv_run):
    from vistrain.training.prepare import dataset_stats
    from vistrain.transforms.preprocess import Preprocess
    data, out = cv_run
    folds = json.loads((out / "folds.json").read_text())
    paths = [data / f for f in sorted(f for fold in folds["folds"] for f in fold["test"]["files"])]
    by_file = {str(p.relative_to(data)): p for p in paths}
    pre = None
    means = []
    for k in range(3):
        meta = json.loads((out / f"fold-{k}" / "model.json").read_text())
        pre = Preprocess.from_dict(meta["preprocess"])
        assert pre.normalize_mode == "dataset"
        files = json.loads((out / f"fold-{k}" / "splits.json").read_text())["parts"]["train"]["files"]
        pixels = np.stack([pre.pixels(by_file[f]).numpy() for f in files])
        mean, std = dataset_stats(pixels, np.arange(len(pixels)))
        np.testing.assert_allclose(pre.mean, mean, atol=1e-6)
        np.testing.assert_allclose(pre.std, std, atol=1e-6)
        means.append(np.asarray(mean))
    whole = np.stack([pre.pixels(p).numpy() for p in paths])
    whole_mean = np.asarray(dataset_stats(whole, np.arange(len(whole)))[0])
    assert all(np.abs(m - whole_mean).max() > 5e-3 for m in means)  # not the whole set's stats


@pytest.mark.slow
def test_resume_skips_finished_folds_and_fold_option(cv_run, caplog):
    import shutil
    data, out = cv_run
    mtimes = {k: (out / f"fold-{k}" / "run.json").stat().st_mtime_ns for k in range(3)}
    shutil.rmtree(out / "fold-2")
    assert _cv([str(data), "--folds", "3", "--out", str(out), "--fold", "2", "--json", *TINY]) == 0
    assert (out / "fold-2" / "run.json").is_file()
    for k in (0, 1):
        assert (out / f"fold-{k}" / "run.json").stat().st_mtime_ns == mtimes[k]
    caplog.set_level(logging.INFO, logger="vistrain")
    new2 = (out / "fold-2" / "run.json").stat().st_mtime_ns
    assert _cv([str(data), "--folds", "3", "--out", str(out), "--resume", "--json", *TINY]) == 0
    assert sum("finished earlier, skipped" in r.getMessage() for r in caplog.records) == 3
    assert (out / "fold-2" / "run.json").stat().st_mtime_ns == new2
    assert len(json.loads((out / "oof_predictions.json").read_text())["predictions"]) == 21


@pytest.mark.slow
def test_existing_out_without_resume_is_an_error(cv_run):
    from vistrain.errors import VistrainError
    data, out = cv_run
    with pytest.raises(VistrainError, match="--resume"):
        _cv([str(data), "--folds", "3", "--out", str(out), *TINY])


@pytest.mark.slow
def test_evaluate_out_writes_metrics_and_figures(cv_run, tmp_path):
    from vistrain.workflows.evaluate import evaluate_folder
    data, out = cv_run
    m = evaluate_folder(out / "fold-0", data, progress=False, n_bootstrap=0, out_dir=tmp_path / "ev")
    for name in ("metrics.json", "predictions.json", "confusion_matrix.png", "roc_curves.png",
                 "pr_curves.png", "reliability.png", "confusion_matrix_normalized.png"):
        assert (tmp_path / "ev" / name).is_file(), name
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"] == m["accuracy"]
