"""Group-aware splits: every group (patient, object, session) lies in exactly one part of the
hold-out split and in one test fold only in k-fold; groups come from a CSV file or a pattern on
the file paths; every user error is one line before any image is decoded."""
from __future__ import annotations

import json

import numpy as np
import pytest

import vistrain
from conftest import cli_error, make_image_folder
from vistrain.cli.main import main
from vistrain.data.groups import groups_from_regex, groups_from_table, image_groups, read_group_table
from vistrain.data.scan import scan_folder
from vistrain.data.splits import group_holdout, make_parts, stratified_group_kfold
from vistrain.errors import DataError, VistrainError
from vistrain.evaluation.cv import make_folds


def group_sets(parts: dict, groups) -> dict[str, set]:
    return {name: {groups[i] for i in idx} for name, idx in parts.items()}


def assert_no_group_spans_parts(parts: dict, groups) -> None:
    sets = group_sets(parts, groups)
    names = sorted(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sets[a] & sets[b], f"groups in both {a} and {b}: {sorted(sets[a] & sets[b])[:5]}"


@pytest.fixture(scope="module")
def grouped_folder(tmp_path_factory):
    """3 classes x 40 images; file names carry one of 60 "objects" (2 shots each)."""
    root = make_image_folder(tmp_path_factory.mktemp("groups") / "data", per_class=40)
    for path in sorted(root.rglob("*.png")):
        i = int(path.stem.split("_")[-1])
        path.rename(path.with_name(f"{path.parent.name}-obj{i // 2:02d}_shot{i % 2}.png"))
    return root


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fractions", [(0.15, 0.15), (0.2, 0.0), (0.0, 0.25), (0.1, 0.3)])
def test_holdout_keeps_each_group_in_one_part(seed, fractions):
    rng = np.random.default_rng(seed)
    groups = [f"g{g}" for g in rng.integers(0, 50, size=300)]
    labels = [int(g[1:]) % 3 for g in groups]   # a group's images share a class, as in real data
    val, test = fractions
    parts = group_holdout(labels, groups, val_fraction=val, test_fraction=test, seed=seed)
    assert sorted(sum(parts.values(), [])) == list(range(300))
    assert_no_group_spans_parts(parts, groups)
    for name, fraction in (("val", val), ("test", test)):
        assert (len(parts[name]) > 0) == (fraction > 0)
        assert abs(len(parts[name]) / 300 - fraction) < 0.12


@pytest.mark.parametrize("k", [2, 3, 5])
def test_every_fold_keeps_each_group_in_one_part(grouped_folder, k):
    index = scan_folder(grouped_folder)
    cfg = vistrain.make_config(grouped_folder, group_regex=r"-(obj\d+)_")
    groups = image_groups(index, cfg.data)
    spec = make_folds(index, k, seed=0, val_fraction=0.2, groups=groups)
    tested = []
    for parts in spec["folds"]:
        assert_no_group_spans_parts(parts, groups)
        tested += parts["test"]
    assert sorted(tested) == list(range(len(index)))  # each image tested exactly once
    assert spec["by_groups"]


def test_kfold_test_folds_partition_the_groups():
    groups = [f"g{i // 3}" for i in range(90)]
    labels = [(i // 3) % 2 for i in range(90)]
    folds = stratified_group_kfold(labels, groups, 5, seed=0)
    seen = [{groups[i] for i in te} for _, te in folds]
    assert sum(len(s) for s in seen) == 30 and set().union(*seen) == set(groups)


def test_groups_from_csv_by_path_or_unique_file_name(grouped_folder, tmp_path):
    index = scan_folder(grouped_folder)
    names = [p.relative_to(grouped_folder).as_posix() for p in index.paths]
    table = tmp_path / "groups.csv"
    rows = [f"{n if i % 2 else n.split('/')[-1]},batch{i % 7}" for i, n in enumerate(names)]
    table.write_text("file,group\n" + "\n".join(rows) + "\n")
    assert groups_from_table(read_group_table(table), names, "t") == [f"batch{i % 7}" for i in range(len(names))]
    cfg = vistrain.make_config(grouped_folder, groups=str(table))
    parts = make_parts(index, cfg.data)
    assert_no_group_spans_parts(parts, image_groups(index, cfg.data))


def test_group_regex_first_capture_group_or_whole_match():
    assert groups_from_regex(r"p\d", ["a/p1_x.png", "b/p2_y.png"]) == ["p1", "p2"]
    assert groups_from_regex(r"(p\d)_(\w)", ["a/p1_x.png"]) == ["p1"]


def test_group_problems_are_one_line_errors(grouped_folder, tmp_path):
    index = scan_folder(grouped_folder)
    names = [p.relative_to(grouped_folder).as_posix() for p in index.paths]
    with pytest.raises(DataError, match="matches no part of"):
        groups_from_regex(r"nomatch", names)
    partial = tmp_path / "partial.csv"
    partial.write_text("file,group\n" + f"{names[0]},a\n")
    with pytest.raises(DataError, match="images have no group"):
        groups_from_table(read_group_table(partial), names, str(partial))
    headless = tmp_path / "headless.csv"
    headless.write_text(f"{names[0]},a\n")
    with pytest.raises(DataError, match="header row"):
        read_group_table(headless)
    with pytest.raises(DataError, match="too few"):
        group_holdout([0, 1] * 5, ["a", "b"] * 5, val_fraction=0.15, test_fraction=0.15, seed=0)
    with pytest.raises(VistrainError, match="both given"):
        vistrain.make_config(grouped_folder, groups=str(partial), group_regex="x")
    with pytest.raises(VistrainError, match="no such file"):
        vistrain.make_config(grouped_folder, groups=str(tmp_path / "missing.csv"))
    with pytest.raises(VistrainError, match="not a regular expression"):
        vistrain.make_config(grouped_folder, group_regex="(")


def test_cli_refuses_bad_groups_before_anything_is_written(grouped_folder, tmp_path, capsys):
    out = tmp_path / "run"
    for flags in (["--groups", str(tmp_path / "missing.csv")], ["--group-regex", "("]):
        line = cli_error(capsys, ["train", str(grouped_folder), "--out", str(out), *flags])
        assert "data.group" in line
        assert not out.exists()


@pytest.mark.slow
def test_train_saves_a_split_without_shared_groups(grouped_folder, tmp_path):
    out = tmp_path / "run"
    code = main(["train", str(grouped_folder), "--out", str(out), "--group-regex", r"(obj\d+)_",
                 "--model", "vistrain/resnet-tiny", "--epochs", "1", "--batch-size", "8",
                 "--set", "preprocess.size=16", "--set", "data.num_workers=0", "--set", "data.doctor=false"])
    assert code == 0
    splits = json.loads((out / "splits.json").read_text())
    objects = {name: {f.split("-")[1].split("_")[0] for f in part["files"]}
               for name, part in splits["parts"].items()}
    assert not objects["train"] & objects["test"] and not objects["train"] & objects["val"]
    assert not objects["val"] & objects["test"]
    assert "group_regex" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_cv_folds_keep_each_group_in_one_part(grouped_folder, tmp_path):
    out = tmp_path / "cv"
    code = main(["cv", str(grouped_folder), "--out", str(out), "--folds", "3", "--group-regex", r"(obj\d+)_",
                 "--model", "vistrain/resnet-tiny", "--epochs", "1", "--batch-size", "8",
                 "--set", "preprocess.size=16", "--set", "data.num_workers=0", "--set", "data.doctor=false"])
    assert code == 0
    folds = json.loads((out / "folds.json").read_text())["folds"]
    assert len(folds) == 3
    tested = set()
    for fold in folds:
        objects = {name: {f.split("-")[1].split("_")[0] for f in fold[name]["files"]}
                   for name in ("train", "val", "test")}
        assert not objects["train"] & objects["test"] and not objects["train"] & objects["val"]
        assert not objects["val"] & objects["test"] and not objects["test"] & tested
        tested |= objects["test"]
