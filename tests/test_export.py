"""``vistrain export``: the ONNX/TorchScript graph equals the PyTorch model, its metadata, parity
checked (and failing when the graph is tampered with), stale exports, int8, engine choice.

The runs here are saved by hand (an untrained, seeded ``vistrain/resnet-tiny`` at 32 px, a
``splits.json`` and a ``run.json`` naming the data folder): export only needs those files.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import cli_error, make_image_folder
from vistrain.artifact import save_model
from vistrain.artifact_meta import WEIGHTS
from vistrain.cli.main import main
from vistrain.data.scan import scan_folder
from vistrain.data.splits import splits_doc, stratified_holdout
from vistrain.deploy.format import ExportError, graph_metadata, weights_sha256
from vistrain.deploy.graph import InferenceGraph
from vistrain.deploy.onnx_export import export_onnx
from vistrain.deploy.parity import compare
from vistrain.deploy.runtime import OrtEngine
from vistrain.errors import VistrainError
from vistrain.models import create
from vistrain.predictor import Classifier
from vistrain.rundir import write_run_file
from vistrain.transforms.preprocess import Preprocess
from vistrain.workflows import export as export_job
from vistrain.workflows.evaluate import evaluate
from vistrain.workflows.export import export

CLASSES = ["a", "b", "c"]
SYMMETRIC = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)


def make_run(root: Path, data: Path, pre: Preprocess = SYMMETRIC, seed: int = 0) -> Path:
    """A finished-looking run on ``data``: weights, model.json, splits.json, run.json."""
    torch.manual_seed(seed)
    model, _ = create("vistrain/resnet-tiny", len(CLASSES), pretrained=False, input_size=32)
    save_model(root, model, model_name="vistrain/resnet-tiny", classes=CLASSES, preprocess=pre,
               model_kwargs={"input_size": 32})
    index = scan_folder(data)
    parts = stratified_holdout(index.labels, val_fraction=0.25, test_fraction=0.25, seed=0,
                               classes=index.classes)
    write_run_file(root / "splits.json", splits_doc(index, parts, seed=0, source="test"))
    (root / "run.json").write_text(json.dumps({"data_root": str(data)}))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("export") / "data", per_class=12)


@pytest.fixture
def run(tmp_path, data) -> Path:
    return make_run(tmp_path / "run", data)


def files_outside_export(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")
            if p.is_file() and "export" not in p.relative_to(run).parts}


def torch_probs(clf: Classifier, pixels: torch.Tensor) -> np.ndarray:
    """What ``predict`` computes with the PyTorch engine, for uint8 ``(N, C, S, S)`` pixels."""
    assert clf.engine == "torch"
    return clf.predict_pixels(list(pixels))


# -- the graph -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pre", [SYMMETRIC, Preprocess(size=32, normalize_mode="minmax", mean=(0.0,),
                                                       std=(1.0,)),
                                 Preprocess(size=32, normalize_mode="dataset", mean=(0.2, 0.3, 0.4),
                                            std=(0.1, 0.2, 0.3))],
                         ids=["symmetric", "minmax", "dataset"])
def test_onnx_graph_equals_torch_on_random_uint8_batches(tmp_path, data, pre):
    run = make_run(tmp_path / "run", data, pre)
    clf = Classifier.from_run(run, engine="torch")
    path = export_onnx(InferenceGraph(clf.model, clf.preprocess), tmp_path / "m.onnx", size=32,
                       channels=3, metadata={})
    engine = OrtEngine(path)
    for n in (1, 5):  # the batch axis is dynamic
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
        got, want = engine.probabilities(x), torch_probs(clf, x)
        assert got.shape == (n, len(CLASSES))
        assert np.abs(got - want).max() < 1e-5 and (got.argmax(1) == want.argmax(1)).all()


def test_default_model_graph_equals_torch(tmp_path):
    """The default model of ``vistrain train`` (EfficientNet-Lite0 at 224 px, ImageNet weights)."""
    model, cfg = create("tf_efficientnet_lite0", 10, pretrained=True)
    pre = Preprocess(size=224, normalize_mode="model", mean=cfg.mean, std=cfg.std)
    clf = Classifier(model, [str(i) for i in range(10)], pre)
    path = export_onnx(InferenceGraph(clf.model, pre), tmp_path / "lite0.onnx", size=224, channels=3,
                       metadata={})
    x = torch.randint(0, 256, (5, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    engine = OrtEngine(path)
    for batch in (x[:1], x):
        got, want = engine.probabilities(batch), torch_probs(clf, batch)
        assert np.abs(got - want).max() < 1e-5 and (got.argmax(1) == want.argmax(1)).all()


def test_metadata_says_how_to_use_the_graph_without_vistrain(run):
    report = export(run, progress=False)
    model = onnx.load(str(run / "export" / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    run_meta = json.loads((run / "model.json").read_text())
    assert json.loads(meta["classes"]) == CLASSES
    assert meta["input_layout"] == "NHWC" and meta["input_dtype"] == "uint8"
    assert json.loads(meta["input_shape"]) == ["N", 32, 32, 3]
    resize = json.loads(meta["resize"])
    assert resize.pop("rounding").startswith("shorter side to floor(size / crop_pct)")
    assert resize == {"size": 32, "interpolation": "bicubic", "crop_pct": 0.875, "mode": "crop",
                      "colour": "RGB"}
    assert json.loads(meta["preprocess"]) == run_meta["preprocess"]
    assert meta["vistrain_version"] and meta["model_name"] == "vistrain/resnet-tiny"
    assert meta["weights_sha256"] == weights_sha256(run) == report["weights_sha256"]
    inputs = model.graph.input[0].type.tensor_type
    assert inputs.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inputs.shape.dim] == ["batch", 32, 32, 3]


# -- the export job ---------------------------------------------------------------------------------

def test_export_writes_only_into_export_and_reports_parity(run):
    before = files_outside_export(run)
    report = export(run, progress=False)
    assert files_outside_export(run) == before
    assert sorted(p.name for p in (run / "export").iterdir()) == ["model.onnx", "parity.json"]
    saved = json.loads((run / "export" / "parity.json").read_text())
    assert saved["onnx"] == report["onnx"] and report["files"] == [str(run / "export" / "model.onnx")]
    onnx_entry = report["onnx"]
    assert onnx_entry["passed"] and onnx_entry["top1_agreement"] == 1.0
    assert onnx_entry["max_abs_diff"] <= 1e-4 and onnx_entry["threads"] == torch.get_num_threads()
    assert report["images"]["part"] == "test" and report["images"]["n"] == 9  # 25 % of 36
    assert onnx_entry["accuracy"]["torch"] == onnx_entry["accuracy"]["onnxruntime"]


def test_tampered_graph_fails_parity_and_nothing_is_promoted(run, monkeypatch):
    export(run, progress=False)
    good = (run / "export" / "model.onnx").read_bytes()
    parity = (run / "export" / "parity.json").read_text()
    real = export_job.export_onnx

    def tampered(graph, path, **kw):  # the exported graph's head differs from the run's
        head = graph.model.get_classifier()
        with torch.no_grad():
            head.bias.add_(torch.tensor([3.0, 0.0, -3.0]))
        try:
            return real(graph, path, **kw)
        finally:
            with torch.no_grad():
                head.bias.sub_(torch.tensor([3.0, 0.0, -3.0]))

    monkeypatch.setattr(export_job, "export_onnx", tampered)
    with pytest.raises(ExportError, match=r"does not reproduce the run on its 9 test images \(top-1 "
                                          r"agreement .*largest probability difference"):
        export(run, progress=False)
    assert (run / "export" / "model.onnx").read_bytes() == good
    assert (run / "export" / "parity.json").read_text() == parity
    assert sorted(p.name for p in (run / "export").iterdir()) == ["model.onnx", "parity.json"]


def test_parity_numbers():
    ref = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert compare(ref, ref) == {"n": 2, "top1_agreement": 1.0, "max_abs_diff": 0.0}
    assert compare(ref, ref[::-1])["top1_agreement"] == 0.0


def test_torchscript_export_equals_torch_at_any_batch_size(run):
    from vistrain.deploy.torchscript import load_torchscript
    report = export(run, format="torchscript", progress=False)
    assert report["torchscript"]["passed"]
    module, meta = load_torchscript(run / "export" / "model.pt")
    assert json.loads(meta["classes"]) == CLASSES
    clf = Classifier.from_run(run, engine="torch")
    for n in (1, 5):
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
        with torch.no_grad():
            got = module(x.permute(0, 2, 3, 1).contiguous()).numpy()
        assert np.abs(got - torch_probs(clf, x)).max() < 1e-5


def test_int8_accuracy_change_is_reported_and_its_engine_runs(run, data, capsys):
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "12"]) == 0
    out = capsys.readouterr()
    assert "int8 accuracy on 9 test images:" in out.out and "points), top-1 agreement with fp32" in out.out
    assert "Collecting" not in out.out + out.err and "Increased scale" not in out.out + out.err
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "12", "--json"]) == 0
    q = json.loads(capsys.readouterr().out)["onnx_int8"]  # the quantizer's chatter is not on stdout
    assert q == json.loads((run / "export" / "parity.json").read_text())["onnx_int8"]
    assert q["calibration"] == {"part": "train", "n": 12}
    assert q["accuracy_change"] == pytest.approx(q["accuracy_int8"] - q["accuracy_fp32"])
    assert 0 <= q["top1_agreement_with_fp32"] <= 1 and "static QDQ" in q["quantization"]
    clf = Classifier.from_run(run, engine="onnxruntime-int8")
    assert clf.engine == "onnxruntime-int8"
    probs = clf.predict_proba(data / "a")
    assert probs.shape == (12, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


# -- engines ----------------------------------------------------------------------------------------

def test_auto_engine_uses_a_fresh_export_and_agrees_with_torch(run, data):
    assert Classifier.from_run(run).engine == "torch"  # nothing exported yet
    export(run, progress=False)
    ort, pt = Classifier.from_run(run), Classifier.from_run(run, engine="torch")
    assert ort.engine == "onnxruntime" and pt.engine == "torch"
    images = sorted((data / "b").iterdir())
    a, b = ort.predict_proba(images), pt.predict_proba(images)
    assert np.abs(a - b).max() < 1e-5 and (a.argmax(1) == b.argmax(1)).all()
    pixels = [ort.preprocess.pixels(p) for p in images[:4]]  # the batching callers' entry point
    assert np.abs(ort.predict_pixels(pixels) - pt.predict_pixels(pixels)).max() < 1e-5
    m_ort = evaluate(run, data, bootstrap=0, progress=False)
    m_pt = evaluate(run, data, bootstrap=0, progress=False, engine="torch")
    assert (m_ort["engine"], m_pt["engine"]) == ("onnxruntime", "torch")
    assert m_ort["accuracy"] == m_pt["accuracy"]


def test_stale_export_is_not_used(run, caplog):
    export(run, progress=False)
    torch.manual_seed(1)  # the run is trained again: other weights, same files
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32)
    save_model(run, model, model_name="vistrain/resnet-tiny", classes=CLASSES, preprocess=SYMMETRIC,
               model_kwargs={"input_size": 32})
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        assert Classifier.from_run(run).engine == "torch"
    assert "stale (the run's weights changed" in caplog.text
    with pytest.raises(VistrainError, match=r"is stale .*run `vistrain export .*` again"):
        Classifier.from_run(run, engine="onnxruntime")
    export(run, progress=False)
    assert Classifier.from_run(run).engine == "onnxruntime"


def test_engine_errors(run):
    with pytest.raises(VistrainError, match=r"model.onnx not found; create it with `vistrain export"):
        Classifier.from_run(run, engine="onnxruntime")
    with pytest.raises(VistrainError, match="unknown engine 'tensorrt'"):
        Classifier.from_run(run, engine="tensorrt")


def test_metadata_record_is_strings_only(run):
    meta = json.loads((run / "model.json").read_text())
    md = graph_metadata(meta, "0" * 64)
    assert all(isinstance(v, str) for v in md.values())  # ONNX metadata_props hold strings


# -- user errors ------------------------------------------------------------------------------------

def test_moved_data_is_one_line_and_data_overrides(run, data, tmp_path, capsys):
    (run / "run.json").write_text(json.dumps({"data_root": str(tmp_path / "gone")}))
    line = cli_error(capsys, ["export", str(run)])
    assert "test images are not reachable: the data folder does not exist" in line
    assert "give --data DIR" in line and not (run / "export" / "model.onnx").exists()
    assert main(["export", str(run), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["onnx"]["passed"]


@pytest.mark.parametrize("argv, says", [
    (["--format", "tflite"], "unknown export format 'tflite'; choose one of onnx, torchscript"),
    (["--format", "torchscript", "--quantize", "int8"], "--quantize int8 needs --format onnx"),
    (["--quantize", "int4"], "--quantize 'int4': only int8 is supported"),
    (["--threads", "0"], "--threads 0: must be a whole number >= 1"),
])
def test_bad_options_are_one_line_before_anything_is_written(run, capsys, argv, says):
    assert says in cli_error(capsys, ["export", str(run), *argv])
    assert not (run / "export").exists()


def test_not_a_run_folder(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert "not a run folder" in cli_error(capsys, ["export", str(tmp_path / "x")])


def test_weights_hash_is_of_the_weights_file(run):
    import hashlib
    assert weights_sha256(run) == hashlib.sha256((run / WEIGHTS).read_bytes()).hexdigest()


def test_int8_dynamic_method_needs_no_calibration(run):
    q = export(run, quantize="int8", quantize_method="dynamic", progress=False)["onnx_int8"]
    assert q["calibration"] is None and q["quantization"].startswith("int8 dynamic")
    assert Classifier.from_run(run, engine="onnxruntime-int8").engine == "onnxruntime-int8"


def test_leftovers_of_a_killed_export_are_removed(run):
    import os
    old, young = run / "export" / ".staging-old", run / "export" / ".staging-young"
    for d in (old, young):
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"half")
    os.utime(old, (0, 0))
    export(run, progress=False)
    assert not old.exists() and young.exists()  # young: possibly another export running now


def test_grey_model_takes_one_channel(tmp_path):
    torch.manual_seed(0)
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32, in_chans=1)
    pre = Preprocess(size=32, channels=1, normalize_mode="dataset", mean=(0.3,), std=(0.2,))
    clf = Classifier(model, CLASSES, pre)
    path = export_onnx(InferenceGraph(model, pre), tmp_path / "grey.onnx", size=32, channels=1, metadata={})
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    got = OrtEngine(path).probabilities(x)
    assert np.abs(got - torch_probs(clf, x)).max() < 1e-5
