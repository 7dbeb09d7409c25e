"""vistrain.data.doctor: hashes, pair classification, split leakage, folds, quick checks."""
from __future__ import annotations

import ast
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder
from vistrain.cli.main import main
from vistrain.config import TrainConfig
from vistrain.data.doctor import run as doctor
from vistrain.data.doctor.run import diagnose, quick_checks
from vistrain.data.doctor.hash import hamming, near_pairs, phash, phash_and_thumb, thumb_distance
from vistrain.data.doctor.report import doctor_doc
from vistrain.data.scan import scan_folder
from vistrain.errors import DataError
from vistrain.rundir import write_run_file
from vistrain.data.splits import make_parts


def _photo(seed, size=(96, 80)):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)   # smooth random structure
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def test_phash_is_robust_to_reencoding_and_resizing_but_separates_pictures(tmp_path):
    a = _photo(0)
    a.save(tmp_path / "a.jpg", quality=80)
    same = [Image.open(tmp_path / "a.jpg"), a.resize((200, 160)), a.resize((48, 40))]
    ha, ta = phash_and_thumb(a)
    for img in same:
        h, t = phash_and_thumb(img)
        assert hamming(ha, h) <= 6 and thumb_distance(ta, t) <= 3
    others = [phash(_photo(s)) for s in range(1, 30)]
    assert min(hamming(ha, h) for h in others) > 10


def test_near_pairs_equals_brute_force():
    rng = np.random.default_rng(0)
    hashes = [int(x) for x in rng.integers(0, 2**63, 300, dtype=np.uint64)]
    hashes += [h ^ (1 << int(b)) for h, b in zip(hashes[:20], rng.integers(0, 63, 20))]
    ref = sorted((i, j, hamming(a, b)) for (i, a), (j, b) in itertools.combinations(enumerate(hashes), 2)
                 if hamming(a, b) <= 12)
    assert sorted(near_pairs(hashes, 12, block=64)) == ref
    assert len(ref) >= 20


def test_duplicates_across_the_split_are_leakage(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", classes=("a", "b"), per_class=20)
    for p in sorted((root / "a").glob("*.png"))[:10]:
        shutil.copy(p, p.with_name("copy_" + p.name))        # 10 copies: some cross the split
    report = diagnose(root, workers=0)
    index = scan_folder(root)
    parts = make_parts(index, TrainConfig().data)
    where = {str(index.paths[i]): name for name, idx in parts.items() for i in idx}
    crossing = [p for p in (root / "a").glob("copy_*.png")
                if where[str(p)] != where[str(p).replace("copy_", "")]]
    codes = {f.code: f for f in report.findings}
    assert crossing and "leakage" in codes and codes["leakage"].severity == "error"
    leaked = set(codes["leakage"].paths)
    train_crossing = [p for p in crossing if "train" in (where[str(p)], where[str(p).replace("copy_", "")])]
    assert {str(p) for p in train_crossing} <= leaked
    assert not report.ok
    assert main(["doctor", str(root), "--json", "--workers", "0"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_clean_folder_is_ok_and_folds_check(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    for cls, n in (("a", 12), ("b", 4)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            _photo(int(rng.integers(1 << 30))).save(root / cls / f"{i}.png")
    report = diagnose(root, workers=0)
    assert report.ok, report.format()
    imb = [f for f in report.findings if f.code == "imbalance"][0]
    assert "3.00" in imb.message and imb.severity == "warning"
    assert main(["doctor", str(root), "--folds", "5", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "class-too-small" in out and "'b' (4)" in out
    assert main(["doctor", str(root), "--folds", "4", "--workers", "0"]) == 0


def test_quick_checks_find_exact_duplicates_without_decoding(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("a", "b"), per_class=6)
    shutil.copy(root / "a" / "a_000.png", root / "b" / "same.png")
    (root / "b" / "junk.png").write_bytes(b"not decoded by the quick checks")
    findings = quick_checks(scan_folder(root))
    codes = {f.code for f in findings}
    assert "conflicting-labels" in codes
    assert not any("junk" in f.message for f in findings)


def test_presplit_folder_leakage_and_structure_in_one_pass(tmp_path, capsys):
    """Given train/ and test/ folders: a copy across them is leakage, a test/ class without
    training images and an empty val/ class are errors, all reported together (exit 1, not 2)."""
    root = tmp_path / "d"
    make_image_folder(root / "train", classes=("a", "b"), per_class=8)
    make_image_folder(root / "test", classes=("a", "b"), per_class=3, seed=1)
    make_image_folder(root / "test", classes=("c",), per_class=2, seed=2)
    (root / "val" / "a").mkdir(parents=True)
    shutil.copy(root / "train" / "a" / "a_000.png", root / "test" / "a" / "leaked.png")
    assert main(["doctor", str(root), "--json", "--workers", "0"]) == 1
    report = json.loads(capsys.readouterr().out)
    codes = {f["code"]: f for f in report["findings"]}
    assert str(root / "test" / "a" / "leaked.png") in codes["leakage"]["paths"]
    assert codes["leakage"]["severity"] == "error"
    assert codes["class-not-in-train"]["paths"] == [str(root / "test" / "c" / f"c_{i:03d}.png") for i in range(2)]
    assert codes["empty-class"]["paths"] == [str(root / "val" / "a")]
    shutil.rmtree(root / "val")
    with pytest.raises(DataError, match="classes not present in train/: c"):
        scan_folder(root)                                   # training keeps refusing it


def test_single_class_and_no_class_folders_are_findings(tmp_path, capsys):
    make_image_folder(tmp_path / "one", classes=("only",), per_class=3)
    report = diagnose(tmp_path / "one", workers=0)
    assert [f.code for f in report.findings if f.severity == "error"] == ["single-class"]
    loose = tmp_path / "loose"
    make_image_folder(loose, classes=("x",), per_class=2)
    for p in (loose / "x").iterdir():
        p.rename(loose / p.name)
    (loose / "x").rmdir()
    report = diagnose(loose, workers=0)
    codes = {f.code: f for f in report.findings}
    assert codes["no-class-folders"].severity == "error"
    assert len(codes["outside-class-folder"].paths) == 2
    assert [f.code for f in report.findings if f.severity == "error"] == ["no-class-folders"]
    assert main(["doctor", str(tmp_path / "nope")]) == 2        # not a folder: one error line
    assert "no such folder" in capsys.readouterr().err


def test_doctor_is_in_the_data_layer():
    """data/doctor/*.py import nothing above the data layer (training imports them, not vice versa)."""
    allowed = ("vistrain.errors", "vistrain.fsutil", "vistrain.config", "vistrain.device", "vistrain.progress",
               "vistrain.imageio", "vistrain.data", "vistrain.transforms", "vistrain.models")
    modules = sorted(Path(doctor.__file__).parent.glob("*.py"))
    assert len(modules) >= 2
    for module in modules:
        tree = ast.parse(module.read_text())
        names = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        names += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        mine = [n for n in names if n and n.startswith("vistrain")]
        assert all(n.startswith(allowed) for n in mine), (module.name, mine)


def test_doctor_json_round_trip(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("a", "b"), per_class=6)
    shutil.copy(root / "a" / "a_000.png", root / "b" / "same.png")
    findings = quick_checks(scan_folder(root))
    write_run_file(tmp_path / "doctor.json", doctor_doc(findings))
    doc = json.loads((tmp_path / "doctor.json").read_text())
    assert doc == doctor_doc(findings)   # what training builds, whole
    assert [f["code"] for f in doc["findings"]] == [f.code for f in findings]
    assert doc["summary"]["errors"] == 1 and doc["summary"]["ok"] is False
    assert all(set(f) == {"severity", "code", "message", "paths", "fix"} for f in doc["findings"])
