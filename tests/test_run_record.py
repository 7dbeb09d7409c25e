"""The typed run record: every run file round-trips through its record (``from_doc(doc).to_doc()
== doc``), a run.json of the previous version still opens, and ``vistrain.rundir`` needs no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vistrain.rundir import (SCHEMA_VERSION, CheckRecord, CompareSummary, CvSummary, DoctorRecord, Epoch,
                             FoldsRecord, ModelMeta, PartMetrics, PartPredictions, RunFolder, RunRecord, Splits)
from vistrain.training.checks import CheckResult

# the files of a run, cv or compare folder that are not typed run records
NOT_RECORDS = {"figures.json", "oof_predictions.json", "strategy_auto.json"}


def _each(read):
    return lambda doc, path: [read(x).to_doc() for x in doc]


def _parts(read):
    return lambda doc, path: {k: read(v).to_doc() for k, v in doc.items()}


ROUND_TRIPS = {
    "run.json": lambda doc, path: RunRecord.from_doc(doc).to_doc(),
    "model.json": lambda doc, path: ModelMeta.from_doc(doc).to_doc(),
    "history.json": _each(Epoch.from_doc),
    "checks.json": _each(CheckRecord.from_doc),
    "metrics.json": _parts(PartMetrics.from_doc),
    "predictions.json": lambda doc, path: {k: PartPredictions.from_doc(v, path, k).to_doc() for k, v in doc.items()},
    "splits.json": lambda doc, path: Splits.from_doc(doc).to_doc(),
    "doctor.json": lambda doc, path: DoctorRecord.from_doc(doc, path).to_doc(),
    "folds.json": lambda doc, path: FoldsRecord.from_doc(doc).to_doc(),
    "cv_metrics.json": lambda doc, path: CvSummary.from_doc(doc, path).to_doc(),
    "compare.json": lambda doc, path: CompareSummary.from_doc(doc, path).to_doc(),
}


def round_trip_failures(folder: Path) -> list[str]:
    """The JSON files of ``folder`` (not its sub-folders) whose record does not give back the
    document; a file with no record at all is one too."""
    bad = []
    for path in sorted(folder.glob("*.json")):
        if path.name in NOT_RECORDS:
            continue
        doc = json.loads(path.read_text())
        if path.name not in ROUND_TRIPS or ROUND_TRIPS[path.name](doc, path) != doc:
            bad.append(path.name)
    return bad


def test_every_file_of_a_run_round_trips(tiny_run):
    names = {p.name for p in tiny_run.dir.glob("*.json")}
    assert {"run.json", "model.json", "history.json", "metrics.json", "predictions.json", "splits.json"} <= names
    assert round_trip_failures(tiny_run.dir) == []
    folder = RunFolder.read(tiny_run.dir)
    run = json.loads((tiny_run.dir / "run.json").read_text())
    assert run["schema"] == SCHEMA_VERSION and folder.run.to_doc() == run
    assert {"report_seconds", "total_seconds", "data_fingerprint", "cache", "calibration"} <= set(run)
    history = json.loads((tiny_run.dir / "history.json").read_text())
    assert "trainable_params" in history[0] and [h.to_doc() for h in folder.history] == history
    metrics = json.loads((tiny_run.dir / "metrics.json").read_text())
    assert {p: m.to_doc() for p, m in folder.metrics.items()} == metrics


def test_fields_a_writer_leaves_out_stay_out_and_its_nulls_stay_null():
    m = PartMetrics.from_doc({"n_samples": 2, "accuracy": None, "macro": {"f1": 0.5}})
    doc = m.to_doc()
    assert "calibration" not in doc and "weighted" not in doc and doc["accuracy"] is None
    assert Splits.from_doc({"source": "s", "classes": [], "parts": {}}).to_doc() == {
        "source": "s", "classes": [], "parts": {}}
    assert Epoch.from_doc({"epoch": 1, "train_loss": 0.5}).to_doc() == {"epoch": 1, "train_loss": 0.5}

    check = CheckResult("lr_finder", None, {"lr": 0.01, "curve": [1.0, None]}, "skipped: no GPU").to_dict()
    doc = json.loads(json.dumps([check], default=str))   # as run_checks writes checks.json
    assert [CheckRecord.from_doc(c).to_doc() for c in doc] == doc


# run.json as vistrain wrote it before the schema key (the key set of runs/demo/run.json)
PREVIOUS_RUN_JSON = {
    "seed": 0, "split_seed": 0,
    "versions": {"vistrain": "0.1.0", "torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130", "timm": "1.0.31",
                 "numpy": "2.4.6", "pillow": "13.0.0", "python": "3.11.7"},
    "data_root": "/work/main/examples/fashion-mnist-small",
    "data_fingerprint": {"sha256": "2f81ce85", "n_files": 2000, "content": "9991e50d"},
    "n_images": 2000, "class_counts": {"Bag": 1000, "Coat": 1000},
    "skipped_files": [{"file": "Bag/x.png", "reason": "truncated"}],
    "strategy": {"requested": "auto", "reasoning": {"decision": "feature-extraction: won the race"},
                 "balance": "none", "strategy": "feature-extraction", "feature_cache": "hit",
                 "cpu_threads": {"threads": 2, "reason": "measured"}, "runtime": "cpu, fp32",
                 "calibration": {"method": "temperature", "temperature": 1.0}},
    "wall_seconds": 6.5, "cache": {"estimate_bytes": 301060096, "where": "disk"},
    "calibration": {"method": "temperature", "temperature": 1.0, "decision": "not applied", "reason": "kept"},
    "warnings": [], "report_seconds": 1.4, "total_seconds": 7.9,
    "wall_seconds_covers": "the run up to run.json; report_seconds: report.html; total_seconds: both",
}


def test_a_run_json_of_the_previous_version_opens(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(PREVIOUS_RUN_JSON))
    run = RunFolder.read(tmp_path).run
    assert run.schema == 1
    assert (run.seed, run.n_images, run.wall_seconds, run.total_seconds) == (0, 2000, 6.5, 7.9)
    assert run.class_counts == {"Bag": 1000, "Coat": 1000} and run.skipped_files[0].reason == "truncated"
    assert run.strategy.strategy == "feature-extraction" and run.strategy.feature_cache == "hit"
    assert run.data_fingerprint["n_files"] == 2000 and run.cache["where"] == "disk"
    assert run.calibration["decision"] == "not applied" and run.versions["timm"] == "1.0.31"
    assert run.to_doc() == {"schema": 1, **PREVIOUS_RUN_JSON}   # nothing lost; the version it had


def test_rundir_imports_no_torch():
    code = "import sys, vistrain.rundir; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
