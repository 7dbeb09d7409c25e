"""``vistrain export`` on a trained run, and predicting/evaluating with the exported graph.

The run is a copy of ``scratch_run`` (``vistrain/vgg-tiny`` at the images' own 28 px, trained on
the shipped data), so that its export cannot change what the other tests of that run see.  The
exported ``model.onnx`` is also used from a script that cannot import vistrain, with nothing
but onnxruntime, Pillow, NumPy and the graph's metadata.
"""
from __future__ import annotations

import json
import shutil

import pytest

from .acceptlib import CLASSES, SHIPPED, assert_ok, assert_user_error, python_script, table_value, vistrain


@pytest.fixture(scope="module")
def exported(scratch_run, tmp_path_factory):
    """A copy of the scratch run (checkpoints left out) and the output of its export."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(scratch_run.dir, run, ignore=shutil.ignore_patterns("checkpoints"))
    res = vistrain("export", run, "--quantize", "int8")
    # exit 1 when int8 does not keep the model (the fp32 export is written either way)
    return run, assert_ok(res, rc=1 if "int8 not promoted" in res.stderr else 0)


def _top1(doc: dict) -> dict[str, str]:
    return {p["image"]: p["top"][0]["class"] for p in doc["predictions"]}


def test_export_prints_parity_and_writes_the_graph(exported):
    run, res = exported
    parity = json.loads((run / "export" / "parity.json").read_text())
    n = parity["images"]["n"]
    assert parity["images"]["part"] == "test" and n == 300  # 15 % of the 2,000 shipped images
    assert f"parity on {n} test images, onnxruntime vs torch: top-1 agreement 100.00%" in res.stdout
    assert parity["onnx"]["passed"] and parity["onnx"]["max_abs_diff"] <= 1e-4
    q = parity["onnx_int8"]
    kept = q["accuracy_change"] >= -0.01 and q["top1_agreement_with_fp32"] >= 0.97
    assert q["promoted"] == q["gate"]["passed"] == kept and (res.rc == 0) == kept
    if kept:
        assert f"int8 accuracy on {n} test images: {q['accuracy_fp32']:.2%} -> {q['accuracy_int8']:.2%}" in res.stdout
    else:
        assert res.stderr.strip().splitlines()[-1].startswith(
            f"int8 not promoted: on {n} test images accuracy {q['accuracy_fp32']:.2%} -> {q['accuracy_int8']:.2%}")
    assert sorted(p.name for p in (run / "export").iterdir()) == (["model.int8.onnx"] if kept else []) + [
        "model.onnx", "parity.json"]


def test_export_json_is_one_document(exported):
    run, _ = exported
    doc = assert_ok(vistrain("export", run, "--format", "torchscript", "--json")).json()
    assert doc["format"] == "torchscript" and doc["torchscript"]["passed"]
    assert doc["files"] == [str(run / "export" / "model.pt")]


def test_predict_and_evaluate_with_onnxruntime_give_torchs_answers(exported, shipped, eval_data):
    run, _ = exported
    folder = shipped / "Bag"
    ort = assert_ok(vistrain("predict", run, folder, "--engine", "onnxruntime", "--json")).json()
    pt = assert_ok(vistrain("predict", run, folder, "--engine", "torch", "--json")).json()
    auto = assert_ok(vistrain("predict", run, folder, "--json")).json()
    assert (ort["engine"], pt["engine"], auto["engine"]) == ("onnxruntime", "torch", "onnxruntime")
    assert _top1(ort) == _top1(pt) and len(_top1(pt)) == 200
    m_ort = assert_ok(vistrain("evaluate", run, eval_data, "--engine", "onnxruntime", "--json")).json()
    m_pt = assert_ok(vistrain("evaluate", run, eval_data, "--engine", "torch", "--json")).json()
    assert (m_ort["engine"], m_pt["engine"]) == ("onnxruntime", "torch")
    assert m_ort["accuracy"] == m_pt["accuracy"]
    if not (run / "export" / "model.int8.onnx").is_file():  # int8 did not keep the model
        assert "not found" in assert_user_error(vistrain("evaluate", run, eval_data, "--engine", "onnxruntime-int8"))
        return
    text = assert_ok(vistrain("evaluate", run, eval_data, "--engine", "onnxruntime-int8"))
    assert "engine: onnxruntime-int8" in text.stdout and 0 < table_value(text.stdout, "accuracy") <= 1


STANDALONE = """
import sys
sys.modules["vistrain"] = None  # this program cannot use vistrain: only the exported file
import json
from pathlib import Path
import numpy as np
import onnxruntime as ort
from PIL import Image

sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta().custom_metadata_map
classes, rule = json.loads(meta["classes"]), json.loads(meta["resize"])
assert meta["input_layout"] == "NHWC" and rule["mode"] == "crop"
size, pil = rule["size"], {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[rule["interpolation"]]

def pixels(path):
    img = Image.open(path).convert(rule["colour"])
    short = int(size / rule["crop_pct"])
    w, h = img.size
    img = img.resize((max(short, round(w * short / min(w, h))), max(short, round(h * short / min(w, h)))), pil)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)

files = sorted(Path(sys.argv[2]).glob("*.png"))
probs = sess.run(None, {sess.get_inputs()[0].name: np.stack([pixels(f) for f in files])})[0]
print(json.dumps({str(f): classes[int(p.argmax())] for f, p in zip(files, probs)}))
"""


def test_model_onnx_runs_without_vistrain(exported, shipped, tmp_path):
    run, _ = exported
    folder = shipped / "Sneaker"
    res = assert_ok(python_script(STANDALONE.replace("sys.argv[1]", repr(str(run / "export" / "model.onnx")))
                                  .replace("sys.argv[2]", repr(str(folder))), cwd=tmp_path))
    standalone = json.loads(res.stdout)
    torch_top1 = _top1(assert_ok(vistrain("predict", run, folder, "--engine", "torch", "--json")).json())
    assert len(standalone) == 200 and standalone == torch_top1
    assert set(standalone.values()) <= set(CLASSES)


def test_user_errors_are_one_line(exported, tmp_path):
    run, _ = exported
    line = assert_user_error(vistrain("export", tmp_path))
    assert "not a run folder" in line
    line = assert_user_error(vistrain("export", run, "--format", "coreml"))
    assert "unknown export format 'coreml'; choose one of onnx, torchscript" in line
    moved = tmp_path / "moved-run"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("export"))
    record = json.loads((moved / "run.json").read_text())
    record["data_root"] = str(tmp_path / "data-moved-away")
    (moved / "run.json").write_text(json.dumps(record))
    line = assert_user_error(vistrain("export", moved))
    assert "test images are not reachable" in line and "give --data DIR" in line
    assert not (moved / "export" / "model.onnx").exists()
    line = assert_user_error(vistrain("predict", moved, shipped_image(run), "--engine", "onnxruntime"))
    assert "model.onnx not found; create it with `vistrain export" in line


def shipped_image(run):
    """Any one image of the run's data (its first test file)."""
    splits = json.loads((run / "splits.json").read_text())
    root = json.loads((run / "run.json").read_text())["data_root"]
    return f"{root}/{splits['parts']['test']['files'][0]}"


def test_openvino_export_and_engine_give_torchs_answers(scratch_run, tmp_path):
    """``vistrain export --format openvino``, then ``predict --engine openvino`` on the IR."""
    pytest.importorskip("openvino")
    run = tmp_path / "run"
    shutil.copytree(scratch_run.dir, run, ignore=shutil.ignore_patterns("checkpoints", "export"))
    res = assert_ok(vistrain("export", run, "--format", "openvino"))
    assert f"exported {run}/export/model.xml + model.bin" in res.stdout
    assert "openvino vs torch: top-1 agreement 100.00%" in res.stdout
    entry = json.loads((run / "export" / "parity.json").read_text())["openvino"]
    assert entry["passed"] and entry["max_abs_diff"] <= 1e-4
    images = sorted((SHIPPED / CLASSES[1]).glob("*.png"))[:6]
    ov = assert_ok(vistrain("predict", run, *images, "--json", "--engine", "openvino")).json()
    pt = assert_ok(vistrain("predict", run, *images, "--json", "--engine", "torch")).json()
    assert _top1(ov) == _top1(pt)
