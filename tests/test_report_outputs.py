"""``vistrain report DIR`` for train, cv and compare outputs; paths and strings from run files."""
from __future__ import annotations

import base64
import html
import json
import logging
import re
from pathlib import Path

import markupsafe
import numpy as np
import PIL.Image
import pytest
from PIL import Image

from conftest import make_image_folder
from vistrain.cli.main import main
from vistrain.report.html import SECTIONS, build_full_report
from vistrain.report.run_sections import sample_files
from vistrain.rundir import RunFolder

EVIL = "<b>&\"x'"
TINY = ["--epochs", "1", "--batch-size", "8", "--set", "preprocess.size=32", "--augment", "none",
        "--set", "data.cache=off", "--device", "cpu", "--set", "data.num_workers=0"]


@pytest.fixture
def no_run_reports(monkeypatch):
    """Each fold's / setting's own run report (Grad-CAM etc., tested in test_report.py) costs
    seconds of CPU; the outputs tested here do not need them."""
    monkeypatch.setattr("vistrain.report.build.build_report", lambda run_dir: None)
    logging.getLogger("vistrain").setLevel(logging.WARNING)


def _report_cli(out: Path, capsys) -> Path:
    (out / "report.html").unlink(missing_ok=True)
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    page = out / "report.html"
    assert str(page.resolve()) in printed
    page.unlink()
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"report": str(page.resolve())}
    assert page.is_file()
    return page


@pytest.mark.slow
def test_report_on_a_cv_folder(tmp_path, no_run_reports, capsys):
    data = make_image_folder(tmp_path / "data", classes=("a", EVIL), per_class=6, size=(24, 24))
    out = tmp_path / "cv"
    assert main(["cv", str(data), "--folds", "2", "--out", str(out), "--json",
                 "--model", "vistrain/resnet-tiny", "--set", "data.val_fraction=0.25", *TINY]) == 0
    capsys.readouterr()
    page = _report_cli(out, capsys).read_text()
    assert "2-fold cross-validation" in page and "±" in page
    assert page.count("data:image/png;base64,") >= 3          # pooled out-of-fold figures
    assert EVIL not in page and str(markupsafe.escape(EVIL)) in page
    # a crafted cv_metrics.json cannot inject markup either
    res = json.loads((out / "cv_metrics.json").read_text())
    res["pool"], res["seed"], res["folds"][0]["fold"] = "<script>1</script>", "<i>", "<u>"
    (out / "cv_metrics.json").write_text(json.dumps(res))
    page = build_full_report(out).read_text()
    assert "<script" not in page and "<i>" not in page and "<u>" not in page
    # an unfinished cross-validation says what to do in one line
    (out / "cv_metrics.json").unlink()
    assert main(["report", str(out)]) == 2
    assert "not finished" in capsys.readouterr().err


@pytest.mark.slow
def test_report_on_a_compare_folder(tmp_path, no_run_reports, capsys):
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=8, size=(32, 32))
    out = tmp_path / "cmp"
    assert main(["compare", str(data), "--vary", "norm=batch,group", "--model",
                 "vistrain/resnet-tiny", "--out", str(out), "--json", *TINY]) == 0
    capsys.readouterr()
    page = _report_cli(out, capsys).read_text()
    assert "norm-batch" in page and "norm-group" in page and "Final metrics" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r'src="(?!data:)', page)
    summary = json.loads((out / "compare.json").read_text())
    summary["runs"][0].update(name=EVIL, n_samples="<script>1</script>", part="<i>")
    summary["seed"], summary["model"] = "<u>", EVIL
    (out / "compare.json").write_text(json.dumps(summary))
    page = build_full_report(out).read_text()
    assert EVIL not in page and "<script" not in page and "<i>" not in page and "<u>" not in page
    assert str(markupsafe.escape(EVIL)) in page


# ---- a run directory written by hand: paths that leave the data root ----------------------
def _png(path: Path, size, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def crafted_run(tmp_path):
    """A run dir whose splits.json names files outside its data root (``..``, absolute, a link)."""
    root, secret = tmp_path / "data", tmp_path / "secret"
    _png(root / "A" / "ok.png", (20, 20), (10, 200, 10))
    _png(root / "B" / "<i>odd name</i>.png", (20, 20), (200, 10, 10))
    _png(secret / "x.png", (77, 55), (1, 2, 3))
    _png(secret / "y.png", (77, 55), (1, 2, 3))
    (root / "A" / "link.png").symlink_to(secret / "y.png")
    files = ["A/ok.png", "A/../../secret/x.png", str(secret / "y.png"), "A/link.png",
             "B/<i>odd name</i>.png"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"data_root": str(root), "class_counts": {"A": 4, "B": 1}}))
    ids = list(range(len(files)))
    parts = {"train": {"indices": ids, "files": files, "counts": {"A": 4, "B": 1}},
             "test": {"indices": ids, "files": files, "counts": {"A": 4, "B": 1}}}
    (run / "splits.json").write_text(json.dumps({"classes": ["A", "B"], "parts": parts}))
    probs = [[0.1, 0.9]] * 4 + [[0.9, 0.1]]                  # every image misclassified
    (run / "predictions.json").write_text(json.dumps(
        {"test": {"indices": ids, "labels": [0, 0, 0, 0, 1], "probs": probs}}))
    return run, root, secret


def test_report_opens_no_file_outside_the_data_root(crafted_run, monkeypatch, caplog):
    run_dir, root, secret = crafted_run
    opened = []
    real_open = PIL.Image.open

    def recording_open(fp, *args, **kwargs):
        if isinstance(fp, (str, Path)):
            opened.append(Path(fp).resolve())
        return real_open(fp, *args, **kwargs)
    monkeypatch.setattr(PIL.Image, "open", recording_open)
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        page = build_full_report(run_dir).read_text()
    assert opened, "the report should have opened the files inside the data root"
    assert not [p for p in opened if p.is_relative_to(secret.resolve())], opened
    assert (root / "A" / "ok.png").resolve() in opened
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "outside the data root" in page and "outside the data root" in caplog.text
    assert "<i>odd name</i>" not in page and html.escape("<i>odd name</i>") in page

    folder = RunFolder.read(run_dir)
    assert folder.data_file("A/ok.png") == (root / "A" / "ok.png").resolve()
    for bad in ("A/../../secret/x.png", str(secret / "y.png"), "A/link.png", "A/\0.png", None, 3):
        assert folder.data_file(bad) is None, bad
    assert all(p.resolve().is_relative_to(root.resolve()) for p in sample_files(folder, 10))


def test_doctor_section_only_when_the_run_wrote_doctor_json(crafted_run):
    from vistrain.data.doctor.report import Finding, doctor_doc
    from vistrain.rundir import write_run_file
    run_dir, _, _ = crafted_run
    page = build_full_report(run_dir).read_text()
    assert "doctor.json" not in page and "Data doctor" not in page
    write_run_file(run_dir / "doctor.json", doctor_doc([Finding("error", "conflicting-labels", "a == b <x>",
                                                                ["a", "b"], "keep it in one class")]))
    page = build_full_report(run_dir).read_text()
    assert "Data doctor" in page and "conflicting-labels" in page and "keep it in one class" in page
    assert "a == b &lt;x&gt;" in page


def test_not_an_output_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a vistrain run directory" in err and len(err.splitlines()) == 1
    np.testing.assert_equal(list(tmp_path.iterdir()), [])      # nothing written


def test_hand_edited_run_files_do_not_break_the_page(crafted_run):
    run_dir, _, _ = crafted_run
    (run_dir / "metrics.json").write_text("[1, 2]")                    # not an object
    (run_dir / "model.json").write_text(json.dumps({"classes": [EVIL, 3], "model_name": EVIL}))
    (run_dir / "history.json").write_text("{not json")
    run = json.loads((run_dir / "run.json").read_text())
    run.update(seed=EVIL, skipped_files=[{"file": EVIL, "reason": [EVIL]}], versions={EVIL: EVIL})
    (run_dir / "run.json").write_text(json.dumps(run))
    page = build_full_report(run_dir).read_text()
    assert EVIL not in page and str(markupsafe.escape(EVIL)) in page
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    # each damaged file is named, in one line, where the page needed it
    assert "metrics.json: damaged, expected a JSON object, got list" in page
    assert "history.json: damaged, not valid JSON" in page
    assert "could not be built" not in page
