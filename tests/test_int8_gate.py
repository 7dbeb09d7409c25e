"""int8 is promoted only when it keeps the model: the gate's rule and numbers, a refused int8
file is not written (an earlier one is removed), the CLI exits 1 with one line, and engine
selection never takes an int8 file without a passed gate; calibration images are decoded batch by
batch (peak memory of one batch)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from test_export import make_run
from vistrain.cli.main import main
from vistrain.deploy.format import INT8_GATE_KEY, int8_promoted
from vistrain.deploy.quantize import LazyImages, _reader, mark_int8_gate
from vistrain.errors import VistrainError
from vistrain.predictor import Classifier
from vistrain.workflows import export as export_job
from vistrain.workflows.export import INT8_MAX_DROP, INT8_MIN_AGREEMENT, int8_gate


def test_the_gate_rule_at_its_edges():
    assert INT8_MAX_DROP == 0.01 and INT8_MIN_AGREEMENT == 0.97
    assert int8_gate(0.90, 0.89, 0.97)["passed"]                 # exactly 1 point, exactly 97 %
    assert not int8_gate(0.90, 0.885, 0.99)["passed"]            # 1.5 points lost
    assert not int8_gate(0.90, 0.90, 0.96)["passed"]             # same accuracy, other answers
    assert int8_gate(0.80, 0.85, 0.975)["passed"]                # a gain is fine
    g = int8_gate(0.9, 0.7, 0.8)
    assert g == {"max_accuracy_drop": 0.01, "min_top1_agreement": 0.97, "passed": False}


def test_promotion_is_read_from_the_file_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert not int8_promoted({})                                  # an export that did not check
    assert not int8_promoted({INT8_GATE_KEY: "not json"})
    for passed in (False, True):
        mark_int8_gate(path, {"passed": passed})
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert int8_promoted(meta) is passed and list(meta) == [INT8_GATE_KEY]  # replaced, not added


def test_calibration_images_are_decoded_only_batch_by_batch():
    decoded = []

    def decode(p):
        decoded.append(p)
        return torch.full((3, 4, 4), p, dtype=torch.uint8)
    reader = _reader(LazyImages(list(range(20)), decode), 8)
    assert len(reader) == 2 and decoded == []                     # nothing decoded up front
    reader.set_range(1, 2)                                        # as strided calibration asks
    batch = next(iter(reader.get_next().values()))
    assert batch.shape == (8, 4, 4, 3) and batch[:, 0, 0, 0].tolist() == list(range(8, 16))
    assert decoded == list(range(8, 16)) and reader.get_next() is None  # one batch held at a time


@pytest.fixture
def run(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=12)
    return make_run(tmp_path / "run", data)


def test_a_refused_int8_file_is_not_written_and_the_cli_exits_1(run, monkeypatch, capsys):
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "16"]) == 0
    capsys.readouterr()
    first = json.loads((run / "export" / "parity.json").read_text())["onnx_int8"]
    assert first["promoted"] and first["gate"]["passed"] and (run / "export" / "model.int8.onnx").is_file()
    assert Classifier.from_run(run, engine="onnxruntime-int8").engine == "onnxruntime-int8"
    monkeypatch.setattr(export_job, "INT8_MIN_AGREEMENT", 1.01)   # no int8 can pass now
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "16"]) == 1
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("int8 not promoted: on 9 test images accuracy ")
    assert "top-1 agreement with fp32" in lines[0] and "at least 101% needed" in lines[0]
    assert "Traceback" not in out.err
    q = json.loads((run / "export" / "parity.json").read_text())["onnx_int8"]
    assert q["promoted"] is False and q["gate"]["min_top1_agreement"] == 1.01
    assert [t["setting"] for t in q["tried"]] == ["per-channel", "per-channel, stem float32"]
    assert not (run / "export" / "model.int8.onnx").exists()      # the earlier one is gone too
    assert (run / "export" / "model.onnx").is_file()              # fp32 passed and is the export
    assert Classifier.from_run(run, engine="auto").engine == "onnxruntime"
    with pytest.raises(VistrainError, match="export"):
        Classifier.from_run(run, engine="onnxruntime-int8")
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "16", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["onnx_int8"]["promoted"] is False


def test_an_int8_file_without_a_passed_gate_is_refused_by_the_engine(run, capsys):
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "8"]) == 0
    path = run / "export" / "model.int8.onnx"
    mark_int8_gate(path, {"passed": False})                       # as an unchecked file would be
    with pytest.raises(VistrainError, match="did not pass the export's int8 accuracy check"):
        Classifier.from_run(run, engine="onnxruntime-int8")
    assert Classifier.from_run(run, engine="auto").engine == "onnxruntime"
    assert np.isfinite(Classifier.from_run(run, engine="auto").predict_proba(
        sorted((run.parent / "data" / "a").glob("*.png"))[:2])).all()


PEAK_SCRIPT = r"""
import resource, sys, tempfile
from pathlib import Path
import torch
from vistrain.deploy.graph import InferenceGraph
from vistrain.deploy.onnx_export import export_onnx
from vistrain.deploy.quantize import LazyImages, quantize_int8
from vistrain.models import create
from vistrain.transforms.preprocess import Preprocess
n, size = int(sys.argv[1]), 128
torch.manual_seed(0)
model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=size)
pre = Preprocess(size=size, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
tmp = Path(tempfile.mkdtemp())
src = export_onnx(InferenceGraph(model.eval(), pre), tmp / "m.onnx", size=size, channels=3, metadata={})
images = LazyImages(list(range(n)), lambda i: torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                                                             generator=torch.Generator().manual_seed(i)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
quantize_int8(src, tmp / "q.onnx", images)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow
def test_calibration_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """Peak RSS added by quantizing (a subprocess each): 48 calibration images cost no more than
    8 do, give or take 60 MB (held all at once, 128 images added 1.9 GB here, 8 added 0.14 GB)."""
    import subprocess
    import sys

    def added_kb(n: int) -> int:
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(n)], capture_output=True, text=True,
                             timeout=600, check=True).stdout
        return int(out.strip().splitlines()[-1])
    few, many = added_kb(8), added_kb(48)
    assert many < few + 60_000, (few, many)


def test_an_int8_file_changed_after_export_is_recognised(run):
    import onnx
    from onnx import numpy_helper
    from vistrain.deploy.format import graph_problem
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "8"]) == 0
    path = run / "export" / "model.int8.onnx"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert graph_problem(path, meta) is None        # the int8 graph's own hash, not the fp32 one's
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] = arr.flat[1] if arr.flat[0] != arr.flat[1] else arr.flat[0] // 2 + 1  # one weight
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))
    assert "changed after export" in graph_problem(path, meta)
