"""One probability for one image and run: ``predict``, ``explain`` (CLI and API) and the
server's ``/predict`` and ``/explain`` all give the calibrated ``softmax(logits / T)``."""
from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import torch

from conftest import make_image_folder
from vistrain.artifact import save_model
from vistrain.cli.main import main
from vistrain.models import create
from vistrain.predictor import Classifier
from vistrain.server import create_app
from vistrain.transforms.preprocess import Preprocess

T = 3.0  # far from 1: a raw softmax would differ from the calibrated one in the 2nd decimal


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """A saved (untrained, seeded) 3-class run whose model.json records a temperature."""
    tmp = tmp_path_factory.mktemp("oneprob")
    data = make_image_folder(tmp / "data", per_class=2, size=(40, 32))
    torch.manual_seed(0)
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32)
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
    save_model(tmp / "run", model, model_name="vistrain/resnet-tiny", classes=["a", "b", "c"],
               preprocess=pre, model_kwargs={"input_size": 32},
               extra={"calibration": {"method": "temperature", "temperature": T}})
    return tmp / "run", data / "b" / "b_001.png"


def _cli_json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _server(app, path: str, data: bytes) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post(path, content=data, headers={"content-type": "image/png"})
    return asyncio.run(go())


def test_predict_explain_and_server_give_the_same_calibrated_probability(calibrated_run, capsys, tmp_path):
    run, image = calibrated_run
    clf = Classifier.from_run(run, engine="torch")
    calibrated = clf.predict_proba([image])[0]
    with torch.no_grad():
        logits = clf.model(clf.preprocess.normalize(clf.preprocess.pixels(image)[None])).float()
    raw = logits.softmax(1)[0].numpy()
    assert np.allclose((logits / T).softmax(1)[0].numpy(), calibrated, atol=1e-5)
    assert abs(raw.max() - calibrated.max()) > 1e-3  # the test would not see a raw softmax otherwise
    want = float(calibrated.max())

    predicted = _cli_json(capsys, ["predict", str(run), str(image), "--json", "--engine", "torch"])
    top = predicted["predictions"][0]["top"][0] if "predictions" in predicted else predicted[0]["top"][0]
    explained = _cli_json(capsys, ["explain", str(run), str(image), "--json", "--out", str(tmp_path / "x")])
    record = explained["images"][0]
    app = create_app(clf, max_batch=4, wait_ms=1, max_body_bytes=1 << 20)
    try:
        served = _server(app, "/predict?top_k=1", image.read_bytes()).json()["top"][0]
        cam = _server(app, "/explain", image.read_bytes())
    finally:
        app.state.service.close()
    assert cam.status_code == 200, cam.text
    assert top["class"] == record["predicted"] == served["class"] == cam.headers["x-vistrain-class"]
    for got in (top["probability"], record["probability"], record["explained_probability"],
                served["probability"], float(cam.headers["x-vistrain-probability"])):
        assert abs(got - want) < 1e-4, (got, want, float(raw.max()))
