"""``cv``, ``compare`` and ``report`` (of a run, a cross-validation and a comparison)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .acceptlib import CLASSES, RUN_FILES, assert_ok, vistrain


def test_cv_three_folds_on_2000_images(cv_out, shipped):
    out, res = cv_out
    assert_ok(res)
    for k in range(3):
        for name in RUN_FILES:
            assert (out / f"fold-{k}" / name).is_file(), f"fold-{k}/{name}"
    for name in ("folds.json", "cv_metrics.json", "oof_predictions.json", "report.html"):
        assert (out / name).is_file(), name
    # strategy auto chose one recipe for every fold, recorded once
    auto = json.loads((out / "strategy_auto.json").read_text())
    strategies = {json.loads((out / f"fold-{k}" / "run.json").read_text())["strategy"]["strategy"]
                  for k in range(3)}
    assert strategies == {auto["chosen"]}
    cvm = json.loads((out / "cv_metrics.json").read_text())
    assert cvm["n_folds"] == 3 and cvm["classes"] == CLASSES
    assert cvm["class_counts"] == {c: 200 for c in CLASSES}
    # every image is predicted exactly once, by the fold that did not train on it
    oof = json.loads((out / "oof_predictions.json").read_text())["predictions"]
    assert sorted(r["index"] for r in oof) == list(range(2000))
    tests = [set(f["test"]["indices"]) for f in json.loads((out / "folds.json").read_text())["folds"]]
    assert all(r["index"] in tests[r["fold"]] for r in oof)
    # pooled out-of-fold accuracy recomputed with NumPy
    y = np.array([r["label"] for r in oof])
    p = np.array([r["probs"] for r in oof])
    assert abs((p.argmax(1) == y).mean() - cvm["pooled_oof"]["accuracy"]) < 1e-12
    # mean over folds = mean of the fold test accuracies; printed as in cv_metrics.json
    accs = [f["test"]["accuracy"] for f in cvm["folds"]]
    mean = cvm["summary"]["metrics"]["accuracy"]["mean"]
    assert abs(np.mean(accs) - mean) < 1e-9
    assert f"{mean:.4f}" in res.stdout or f"{mean:.3f}" in res.stdout, res.stdout
    assert str((out / "report.html").resolve()) in res.stdout


def test_cv_fold_test_parts_are_disjoint(cv_out):
    out, res = cv_out
    assert_ok(res)
    folds = json.loads((out / "folds.json").read_text())["folds"]
    parts = [{name: set(f[name]["indices"]) for name in ("train", "val", "test")} for f in folds]
    tests = [p["test"] for p in parts]
    assert sum(map(len, tests)) == 2000 and set().union(*tests) == set(range(2000))
    for p in parts:
        assert not p["train"] & p["test"] and not p["val"] & p["test"] and not p["train"] & p["val"]
        assert len(p["train"]) + len(p["val"]) + len(p["test"]) == 2000


def test_cv_resume_json_reaggregates_without_training(cv_out, shipped):
    out, res = cv_out
    assert_ok(res)
    before = (out / "fold-0" / "model.safetensors").stat().st_mtime_ns
    js = assert_ok(vistrain("cv", shipped, "--folds", 3, "--epochs", 3, "--out", out, "--resume", "--json"))
    doc = js.json()
    saved = json.loads((out / "cv_metrics.json").read_text())
    assert doc["pooled_oof"]["accuracy"] == saved["pooled_oof"]["accuracy"]
    assert (out / "fold-0" / "model.safetensors").stat().st_mtime_ns == before  # nothing retrained


def test_compare_two_normalizations(compare_out, subset):
    out, res = compare_out
    assert_ok(res)
    summary = json.loads((out / "compare.json").read_text())
    assert (out / "compare.html").stat().st_size > 1000
    assert summary["same_split"] is True and len(summary["runs"]) == 2
    assert summary["model"].startswith("vistrain/")
    text = json.dumps(summary["runs"])
    assert "batch" in text and "group" in text
    run_dirs = [d for d in out.iterdir() if (d / "metrics.json").is_file()]
    assert len(run_dirs) == 2
    for d in run_dirs:
        for name in RUN_FILES:
            assert (d / name).is_file(), f"{d.name}/{name}"
        acc = json.loads((d / "metrics.json").read_text())["test"]["accuracy"]
        assert f"{acc:.4f}" in res.stdout or f"{acc:.3f}" in res.stdout, (d.name, acc, res.stdout)
    assert str((out / "compare.html").resolve()) in res.stdout


def test_compare_scratch_networks_learn(compare_out):
    """From-scratch comparison runs get a from-scratch learning rate (AdamW 1e-3), not the
    fine-tune one (1e-4, at which they barely learn), and end clearly above chance."""
    out, res = compare_out
    assert_ok(res)
    for d in out.iterdir():
        if (d / "metrics.json").is_file():
            peak_lr = max(h["lr"] for h in json.loads((d / "history.json").read_text()))
            assert peak_lr > 2e-4, (d.name, peak_lr)
            acc = json.loads((d / "metrics.json").read_text())["test"]["accuracy"]
            assert acc > 0.2, (d.name, acc)  # 350 training images, 2 epochs; chance is 0.1


def _report(path):
    """``vistrain report PATH``: the page it names lies in PATH and was written just now."""
    for old in path.glob("*.html"):
        os.utime(old, ns=(0, 0))  # an old page cannot pass for a new one
    res = assert_ok(vistrain("report", path))
    m = re.search(r"^report: (.+)$", res.stdout, re.M)
    assert m, res.describe()
    report = Path(m.group(1))
    assert report.parent == path.resolve() and report.suffix == ".html"
    assert report.stat().st_mtime_ns > 0, "report not rewritten"
    html = report.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "</html>" in html.lower()
    return res, html


def test_report_of_a_run(finetune_run):
    _, html = _report(finetune_run.dir)
    assert "no doctor.json" not in html
    assert "finetune" in html


def test_report_of_a_cross_validation(cv_out):
    out, res = cv_out
    assert_ok(res)
    _report(out)


def test_report_of_a_comparison(compare_out):
    out, res = compare_out
    assert_ok(res)
    _report(out)


def test_report_json(gradual_run):
    doc = assert_ok(vistrain("report", gradual_run.dir, "--json")).json()
    assert str((gradual_run.dir / "report.html").resolve()) in json.dumps(doc) \
        or str(gradual_run.dir / "report.html") in json.dumps(doc)
