"""The typed run record: every run file round-trips through its record (``from_doc(doc).to_doc()
== doc``), a run.json of the previous version still opens, and ``vistrain.rundir`` needs no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vistrain.artifact import save_model
from vistrain.data.doctor.report import Finding, doctor_doc
from vistrain.data.scan import ImageIndex
from vistrain.data.splits import splits_doc
from vistrain.evaluation.compare import collect_run
from vistrain.evaluation.cv import make_folds
from vistrain.models import create
from vistrain.rundir import (SCHEMA_VERSION, CheckRecord, Epoch, PartMetrics, RunFolder, Splits, write_run_file)
from vistrain.rundir.files import READERS, typed_doc
from vistrain.training.checks import CheckResult, write_checks
from vistrain.transforms.preprocess import Preprocess
from vistrain.workflows.cv import _save_folds

# the files of a run, cv or compare folder that are not typed run records
NOT_RECORDS = {"figures.json", "oof_predictions.json", "strategy_auto.json"}
MISMATCH = "its record does not give back"   # write_run_file's warning


def round_trip_failures(folder: Path) -> list[str]:
    """The JSON files of ``folder`` (not its sub-folders) whose records do not give back the
    document; a file with no record at all is one too."""
    bad = []
    for path in sorted(folder.glob("*.json")):
        if path.name in NOT_RECORDS:
            continue
        doc = json.loads(path.read_text())
        if path.name not in READERS or typed_doc(path.name, doc, path) != doc:
            bad.append(path.name)
    return bad


def test_every_file_of_a_run_round_trips(tiny_run):
    names = {p.name for p in tiny_run.dir.glob("*.json")}
    assert {"run.json", "model.json", "history.json", "metrics.json", "predictions.json", "splits.json"} <= names
    assert round_trip_failures(tiny_run.dir) == []
    assert not [r for r in tiny_run.records if MISMATCH in r.getMessage()]   # every writer's document whole
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


def _written_whole(path: Path, doc, caplog) -> dict | list:
    """The file a writer wrote from ``doc``: everything ``doc`` holds (as JSON), read back whole by
    its records, and no warning of write_run_file."""
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(doc, default=str)), path.name
    assert typed_doc(path.name, saved, path) == saved, path.name
    assert not [r for r in caplog.records if MISMATCH in r.getMessage()], path.name
    return saved


def _index(counts: dict[str, int]) -> ImageIndex:
    classes = sorted(counts)
    labels = [k for k, c in enumerate(classes) for _ in range(counts[c])]
    return ImageIndex(Path("/d"), classes, [Path(f"/d/{classes[y]}/{i}.png") for i, y in enumerate(labels)],
                      labels, None)


def test_write_run_file_writes_the_document_byte_for_byte(tmp_path):
    # model.json's keys in the writer's order, not the record's; predictions.json on one line
    meta = {"format_version": 1, "model_name": "m", "model_kwargs": {}, "num_classes": 2, "classes": ["a", "b"],
            "preprocess": {"size": 32, "mean": (0.5, 0.5, 0.5)}, "versions": {"vistrain": "0"},
            "strategy": {"requested": "auto", "balance": "none", "strategy": "finetune"}}
    write_run_file(tmp_path / "model.json", meta)
    assert (tmp_path / "model.json").read_text() == json.dumps(meta, indent=1)
    preds = {"test": {"indices": [3, 1], "labels": [0, 1], "probs": [[0.25, 0.75], [0.5, 0.5]]}}
    write_run_file(tmp_path / "predictions.json", preds, indent=None)
    assert (tmp_path / "predictions.json").read_text() == json.dumps(preds)


def test_a_key_its_record_would_drop_is_never_written(tmp_path, caplog):
    doc = {"test": {"n_samples": 2, "accuracy": "high", "macro": {"f1": 0.5}}}
    write_run_file(tmp_path / "metrics.json", doc)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == typed_doc("metrics.json", doc) and saved["test"]["accuracy"] is None
    assert [r.getMessage() for r in caplog.records if MISMATCH in r.getMessage()] == [
        f"{tmp_path / 'metrics.json'}: its record does not give back what vistrain wrote (at test/accuracy); "
        "the file holds what the record reads (a bug of vistrain: add the key to the record)"]


def test_each_writer_writes_what_its_record_reads(tmp_path, caplog):
    index = _index({"a": 6, "b": 4})
    doc = splits_doc(index, {"train": [0, 1, 6, 7], "val": [2, 8], "test": [3, 4, 5, 9]}, seed=3, source="hold-out",
                     groups={"regex": "(p\\d+)_"}, warnings=["the val split holds 2 of 2 classes"])
    write_run_file(tmp_path / "splits.json", doc)
    _written_whole(tmp_path / "splits.json", doc, caplog)

    doc = doctor_doc([Finding("warning", "tiny", "2 image(s) under 16 px", ["a/1.png", "b/2.png"], "replace them"),
                      Finding("info", "classes", "2 classes", [])])
    write_run_file(tmp_path / "doctor.json", doc)
    _written_whole(tmp_path / "doctor.json", doc, caplog)

    results = [CheckResult("normalization", True, {"mean": (0.1, 0.2), "plot": tmp_path / "x.png"}, "ok"),
               CheckResult("overfit-small-sample", False, {"final_loss": float("nan")}, "diverged"),
               CheckResult("label-shuffle", None, {}, "skipped: no held-out images")]
    write_checks(tmp_path, results)
    saved = _written_whole(tmp_path / "checks.json", [r.to_dict() for r in results], caplog)
    assert saved[0]["measurements"]["plot"] == str(tmp_path / "x.png") and saved[2]["status"] == "SKIP"

    _save_folds(tmp_path, index, make_folds(index, 2, seed=0, val_fraction=0.25))
    folds = json.loads((tmp_path / "folds.json").read_text())
    assert typed_doc("folds.json", folds) == folds and len(folds["folds"]) == 2

    model, _ = create("vistrain/resnet-tiny", 2, pretrained=False, input_size=32)
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
    for extra in (None, {"strategy": {"strategy": "finetune", "epochs": 1}, "calibration": {"temperature": 1.0}}):
        save_model(tmp_path, model, model_name="vistrain/resnet-tiny", classes=["a", "b"], preprocess=pre,
                   model_kwargs={"input_size": 32}, extra=extra)
        meta = json.loads((tmp_path / "model.json").read_text())
        assert typed_doc("model.json", meta) == meta and ("strategy" in meta) == (extra is not None)
        assert list(meta)[:2] == ["format_version", "model_name"]   # the writer's order
    assert not [r for r in caplog.records if MISMATCH in r.getMessage()]


def test_compare_json_keeps_the_nulls_it_writes(tiny_run, tmp_path, caplog):
    row = collect_run(tiny_run.dir, "norm-batch", {"norm": "batch"})
    head = {"name": "head", "setting": {"strategy": "feature-extraction"}, "run_dir": "x", "part": "val",
            "n_samples": 4, "accuracy": 0.5, "macro_f1": None, "macro_auc": None, "wall_seconds": 1.0, "lr": None,
            "history": [{"epoch": 1, "train_loss": 0.7, "val_loss": None, "val_accuracy": None}]}
    summary = {"data_root": "/d", "model": "vistrain/resnet-tiny", "vary": {"norm": ["batch"]}, "seed": 0,
               "split_seed": 0, "epochs": 2, "same_split": True, "runs": [row, head]}
    write_run_file(tmp_path / "compare.json", summary)
    _written_whole(tmp_path / "compare.json", summary, caplog)


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
