"""Test-time augmentation and the calibration temperature at prediction time: the views match
torchvision's kernels, ``Classifier`` averages the views' ``softmax(logits / T)``, ``evaluate``
and ``predict`` record what they did, and the ONNX graph carries the temperature."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from conftest import cli_error, make_image_folder
from vistrain.artifact import save_model
from vistrain.artifact_meta import read_meta
from vistrain.cli.main import main
from vistrain.deploy.graph import InferenceGraph
from vistrain.models import create
from vistrain.predictor import Classifier
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.tta import corner_boxes, tta_views
from vistrain.workflows.evaluate import evaluate
from vistrain.workflows.predict import load

CLASSES = ["a", "b", "c"]
T = 2.5


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """A saved (untrained, seeded) 3-class run whose model.json records a temperature."""
    tmp = tmp_path_factory.mktemp("tta")
    data = make_image_folder(tmp / "data", per_class=4, size=(40, 32))
    torch.manual_seed(0)
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32)
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
    save_model(tmp / "run", model, model_name="vistrain/resnet-tiny", classes=CLASSES, preprocess=pre,
               model_kwargs={"input_size": 32}, extra={"calibration": {"method": "temperature", "temperature": T}})
    return tmp / "run", data


def test_views_match_torchvision():
    x = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    views = tta_views(x, "flip+crops")
    assert len(views) == 6 and torch.equal(views[0], x) and torch.equal(views[1], TF.horizontal_flip(x))
    for view, boxes in zip(views[2:], corner_boxes(40, 3)):
        top, left, h, w = boxes[0].tolist()
        ref = TF.resized_crop(x, top, left, h, w, [40, 40], antialias=True)
        assert (view.int() - ref.int()).abs().max() <= 1
    assert len(tta_views(x, "none")) == 1
    with pytest.raises(ValueError, match="tta must be"):
        tta_views(x, "rotate")


def test_classifier_applies_the_temperature_and_averages_views(calibrated_run):
    run, data = calibrated_run
    image = data / "b" / "b_001.png"
    plain, flipped = Classifier.from_run(run), Classifier.from_run(run, tta="flip")
    assert plain.temperature == T and plain.tta == "none"
    pixels = plain.preprocess.pixels(image)[None]
    with torch.no_grad():
        def probs(x):
            return torch.softmax(plain.model(plain.preprocess.normalize(x)).double() / T, 1)[0].numpy()
        ref = probs(pixels)
        ref_flip = (probs(pixels) + probs(pixels.flip(-1))) / 2
    np.testing.assert_allclose(plain.predict_proba(image)[0], ref, atol=1e-6)
    np.testing.assert_allclose(flipped.predict_proba(image)[0], ref_flip, atol=1e-6)
    assert Classifier.from_run(run, tta="flip+crops").predict_proba(image).shape == (1, 3)


def test_evaluate_and_predict_record_tta_and_temperature(calibrated_run, tmp_path, capsys):
    run, data = calibrated_run
    for tta in ("none", "flip"):
        m = evaluate(run, data, bootstrap=0, device="cpu", engine="torch", tta=tta, progress=False)
        assert m["tta"] == tta and m["temperature"] == T and m["n_samples"] == 12
        clf = load(run, tta=tta)
        probs = clf.predict_proba(sorted(data.rglob("*.png")))
        # evaluate's numbers are the classifier's: the same top-1 for every image
        assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == np.repeat([0, 1, 2], 4)))
    capsys.readouterr()
    assert main(["predict", str(run), str(data / "a"), "--tta", "flip", "--json", "--engine", "torch"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == "flip"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", str(run), str(data), "--tta", "sideways"])
    assert "invalid choice" in capsys.readouterr().err


def test_onnx_graph_carries_the_temperature(calibrated_run):
    run, _ = calibrated_run
    clf = Classifier.from_run(run, engine="torch")
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    graph = InferenceGraph(clf.model, clf.preprocess, clf.temperature).eval()
    expected = clf.predict_pixels(list(x.permute(0, 3, 1, 2)))
    np.testing.assert_allclose(graph(x).detach().numpy(), expected, atol=1e-6)


def test_a_damaged_temperature_is_refused(calibrated_run, tmp_path):
    run, _ = calibrated_run
    meta = json.loads((run / "model.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    for value in (0, -1.0, "hot", None):
        meta["calibration"] = {"temperature": value}
        (bad / "model.json").write_text(json.dumps(meta))
        with pytest.raises(Exception, match="calibration.temperature"):
            read_meta(bad)
