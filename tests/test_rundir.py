"""RunFolder: typed, lazily read parts of run / cv / compare folders, one-line errors on damage."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vistrain.errors import RunDirError
from vistrain.rundir import CompareSummary, Epoch, RunFolder, output_kind


def _write(folder, name, doc):
    (folder / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))


@pytest.fixture
def run(tmp_path):
    _write(tmp_path, "run.json", {"seed": 3, "data_root": str(tmp_path), "class_counts": {"a": 2, "b": "x"},
                                  "skipped_files": [{"file": "a/x.png", "reason": "truncated"}, 7],
                                  "strategy": {"strategy": "finetune", "requested": "auto", "lr": 0.1}})
    _write(tmp_path, "history.json", [{"epoch": 1, "val_accuracy": 0.5, "val_loss": "oops"}, "junk"])
    _write(tmp_path, "metrics.json", {"test": {"n_samples": 4, "accuracy": 0.75, "macro": {"f1": 0.7},
                                               "ci95": {"accuracy": {"low": 0.5, "high": 1.0}},
                                               "per_class": [{"class": "a", "support": 2, "f1": 1.0}]}})
    _write(tmp_path, "predictions.json", {"test": {"indices": [5, 6], "labels": [0, 1],
                                                   "probs": [[0.9, 0.1], [0.6, 0.4]]}})
    _write(tmp_path, "splits.json", {"classes": ["a", "b"], "source": "given",
                                     "parts": {"test": {"indices": [5, 6], "files": ["a/1.png", "b/2.png"]}}})
    return tmp_path


def test_parts_are_typed_and_coerced(run):
    folder = RunFolder.read(run)
    assert folder.kind == "train" == output_kind(run)
    assert folder.run.seed == 3 and folder.run.class_counts == {"a": 2}      # "x" is not a count
    assert [s.reason for s in folder.run.skipped_files] == ["truncated"]
    assert folder.run.strategy.strategy == "finetune" and folder.run.strategy.settings == {"lr": 0.1}
    assert folder.history == [Epoch(1, val_accuracy=0.5)]                     # "oops" is no loss
    m = folder.metrics["test"]
    assert (m.accuracy, m.macro_f1, m.macro_auc_roc, m.ci95["accuracy"].low) == (0.75, 0.7, None, 0.5)
    assert m.per_class[0].name == "a" and m.per_class[0].precision is None
    p = folder.predictions["test"]
    assert p.probs.shape == (2, 2) and p.labels.dtype == np.int64
    assert folder.evaluated_part() == "test" and folder.splits.files_of("test") == {5: "a/1.png", 6: "b/2.png"}
    assert folder.meta is None and folder.doctor is None and folder.checks == [] and folder.cv is None
    assert folder.classes == ["a", "b"]                                      # no model.json: splits.json's


@pytest.mark.parametrize("name, text, says", [
    ("metrics.json", "[1, 2]", "expected a JSON object, got list"),
    ("history.json", "{not json", "not valid JSON"),
    ("predictions.json", '{"test": {"indices": [1], "labels": [0, 1], "probs": [[1.0]]}}', "do not line up"),
    ("predictions.json", '{"test": {"indices": [1], "labels": [3], "probs": [[1.0]]}}', "do not line up"),
    ("doctor.json", '{"findings": 3}', "findings is not a list"),
    ("cv_metrics.json", '{"folds": []}', "no summary.metrics"),
])
def test_a_damaged_file_is_one_line_naming_it(run, name, text, says):
    _write(run, name, text)
    folder = RunFolder.read(run)
    attr = {"metrics.json": "metrics", "history.json": "history", "predictions.json": "predictions",
            "doctor.json": "doctor", "cv_metrics.json": "cv"}[name]
    with pytest.raises(RunDirError) as err:
        getattr(folder, attr)
    msg = str(err.value)
    assert str(run / name) in msg and says in msg and "\n" not in msg
    assert folder.run.seed == 3                                              # the other parts still read


def test_model_json_is_checked_by_read_meta(run):
    _write(run, "model.json", {"model_name": "m", "classes": ["a", 3]})
    folder = RunFolder.read(run)
    with pytest.raises(RunDirError, match="model.json|model.safetensors"):
        folder.meta
    assert folder.classes == ["a", "b"]


def test_not_a_folder_and_kinds(tmp_path):
    with pytest.raises(RunDirError, match="run directory not found"):
        RunFolder.read(tmp_path / "nope")
    assert RunFolder.read(tmp_path).kind is None
    _write(tmp_path, "folds.json", {})
    assert output_kind(tmp_path) == "cv"
    _write(tmp_path, "compare.json", {"runs": [{"name": "<b>", "accuracy": "high", "history": [{"epoch": 1}]}],
                                      "vary": {"norm": ["batch", 1]}, "same_split": "yes"})
    cmp = RunFolder.read(tmp_path).compare
    assert cmp.runs[0].name == "<b>" and cmp.runs[0].accuracy is None and cmp.vary == {"norm": ["batch", "1"]}
    assert cmp.same_split is None and cmp.runs[0].history[0].epoch == 1
    with pytest.raises(RunDirError, match="no list of runs"):
        CompareSummary.from_doc({"runs": 3})


def test_data_file_stays_inside_the_data_root(run):
    (run / "a").mkdir()
    (run / "a" / "1.png").write_bytes(b"")
    folder = RunFolder.read(run)
    assert folder.data_file("a/1.png") == (run / "a" / "1.png").resolve()
    assert folder.data_file("../x.png") is None and folder.refused_files == ["../x.png"]
    assert folder.data_file(None) is None and folder.data_file(3) is None
