"""``vistrain export --format openvino`` and ``--engine openvino``: the IR converted from the ONNX
graph passes the same parity gate as ONNX (else nothing is written), carries the graph's metadata,
is refused when stale, and predicts, evaluates and serves as the torch model does.

The runs are those of ``test_export.py`` (an untrained, seeded ``vistrain/resnet-tiny`` at 32 px).
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from conftest import cli_error
from test_export import CLASSES, SYMMETRIC, data, make_run  # noqa: F401  (data: a fixture)
from test_serve import call, png_bytes
from vistrain.artifact import save_model
from vistrain.cli.main import main
from vistrain.deploy import openvino_export
from vistrain.deploy.format import ExportError, graph_metadata, weights_sha256
from vistrain.errors import VistrainError
from vistrain.models import create
from vistrain.predictor import Classifier
from vistrain.server import create_app
from vistrain.workflows.evaluate import evaluate
from vistrain.workflows.export import export

pytest.importorskip("openvino")


@pytest.fixture
def run(tmp_path, data):  # noqa: F811
    return make_run(tmp_path / "run", data)


def test_export_writes_the_ir_with_parity_and_metadata(run, capsys):
    assert main(["export", str(run), "--format", "openvino", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"exported {run}/export/model.xml + model.bin" in out
    assert "parity on 9 test images, openvino vs torch: top-1 agreement 100.00%" in out
    assert sorted(p.name for p in (run / "export").iterdir()) == ["model.bin", "model.xml", "parity.json"]
    entry = json.loads((run / "export" / "parity.json").read_text())["openvino"]
    assert entry["passed"] and entry["max_abs_diff"] <= 1e-4 and entry["tolerance"] == 1e-4
    assert entry["threads"] == 1 and entry["precision"] == "f32"
    engine = openvino_export.OpenVinoEngine(run / "export" / "model.xml")
    meta = json.loads((run / "model.json").read_text())
    assert engine.metadata == graph_metadata(meta, weights_sha256(run))


def test_engine_predicts_evaluates_and_serves_as_torch(run, data):  # noqa: F811
    export(run, format="openvino", progress=False)
    ov, pt = Classifier.from_run(run, engine="openvino"), Classifier.from_run(run, engine="torch")
    assert ov.engine == "openvino" and Classifier.from_run(run).engine == "torch"  # auto: ONNX only
    images = sorted((data / "b").iterdir())
    a, b = ov.predict_proba(images), pt.predict_proba(images)
    assert np.abs(a - b).max() < 1e-4 and (a.argmax(1) == b.argmax(1)).all()
    m = evaluate(run, data, bootstrap=0, progress=False, engine="openvino")
    assert m["engine"] == "openvino"
    app = create_app(ov, max_batch=4, wait_ms=1)
    try:
        assert call(app, "GET", "/metadata").json()["engine"] == "openvino"
        r = call(app, "POST", "/predict?top_k=3", content=png_bytes())
        assert r.status_code == 200 and len(r.json()["top"]) == 3
    finally:
        app.state.service.close()


def test_engine_calls_from_several_threads_at_once_each_get_their_own_answer(run, data):  # noqa: F811
    """The server's model workers call one engine from several threads: each thread has its own
    infer request, so answers never mix."""
    export(run, format="openvino", progress=False)
    ov = Classifier.from_run(run, engine="openvino")
    batches = [[ov.pixels(p)] * n for n, p in zip((1, 3, 2, 4), sorted((data / "b").iterdir()))]
    want = [ov.predict_pixels(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(ov.predict_pixels, batches))
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)


def test_a_differing_ir_is_refused_and_nothing_is_written(run, monkeypatch, capsys):
    real = openvino_export.export_openvino

    def tampered(onnx_path, xml_path, metadata):  # an IR of another network than the run's
        torch.manual_seed(7)
        other, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32)
        from vistrain.deploy.graph import InferenceGraph
        from vistrain.deploy.onnx_export import export_onnx
        export_onnx(InferenceGraph(other, SYMMETRIC), onnx_path, size=32, channels=3, metadata={})
        return real(onnx_path, xml_path, metadata)
    monkeypatch.setattr("vistrain.workflows.export.export_openvino", tampered)
    with pytest.raises(ExportError, match=r"the OpenVINO IR does not reproduce the run .* nothing was "
                                          r"written: try --format onnx"):
        export(run, format="openvino", progress=False)
    assert not (run / "export" / "model.xml").exists() and not (run / "export" / "model.bin").exists()
    err = cli_error(capsys, ["export", str(run), "--format", "openvino"])
    assert "\n" not in err and "the OpenVINO IR does not reproduce the run" in err


def test_stale_or_missing_ir_and_missing_package_are_one_line(run, monkeypatch):
    with pytest.raises(VistrainError, match=r"model.xml not found; create it with `vistrain export "
                                            r".* --format openvino`"):
        Classifier.from_run(run, engine="openvino")
    export(run, format="openvino", progress=False)
    torch.manual_seed(1)  # trained again: other weights
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32)
    save_model(run, model, model_name="vistrain/resnet-tiny", classes=CLASSES, preprocess=SYMMETRIC,
               model_kwargs={"input_size": 32})
    with pytest.raises(VistrainError, match=r"is stale \(the run's weights changed.*--format openvino"):
        Classifier.from_run(run, engine="openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(VistrainError, match=r"pip install 'vistrain\[openvino\]'"):
        export(run, format="openvino", progress=False)
