"""The Python API as a notebook user meets it: what ``predict`` accepts and returns, mistyped
paths, what a result prints, the last log lines of ``train``, ``print(config)``, the spelling of
fixes in error messages, and the model card of a run.

One small run is trained once for the module (a from-scratch network, one epoch, 32 px).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vistrain
from conftest import make_image_folder
from vistrain.cli.main import main
from vistrain.config.spelling import cli_spelling, option, set_option
from vistrain.errors import VistrainError
from vistrain.prediction import Prediction, array_images
from vistrain.report.model_card import MODEL_CARD

TINY = dict(model="vistrain/resnet-tiny", epochs=1, batch_size=8, preprocess={"size": 32},
            data={"num_workers": 0}, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("inputs") / "data", per_class=10, size=(40, 36))


@pytest.fixture(scope="module")
def trained(tiny_run):
    """``(RunResult, log records of the run)`` of the session's shared tiny run."""
    return tiny_run.result, tiny_run.records


@pytest.fixture(scope="module")
def clf(trained):
    return vistrain.load(trained[0].run_dir)


def pixels_of(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


def probabilities(predictions: list[Prediction]) -> np.ndarray:
    return np.array([[s.probability for s in sorted(p.top_k, key=lambda s: s.index)] for p in predictions])


# -- predict: inputs ---------------------------------------------------------------------------
def test_arrays_tensors_and_pil_images_give_the_probabilities_of_the_same_png(clf, tmp_path):
    """An array is preprocessed exactly as a PNG file of the same pixels."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(37, 45, 3), dtype=np.uint8)   # odd sizes: resize and crop act
    grey = rng.integers(0, 256, size=(30, 41), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    k = len(clf.classes)
    want_rgb = probabilities(clf.predict(tmp_path / "rgb.png", top_k=k))[0]
    want_grey = probabilities(clf.predict(tmp_path / "grey.png", top_k=k))[0]
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    given = {"HWC uint8": rgb, "HWC float": rgb / 255.0, "NHWC": rgb[None],
             "CHW uint8 tensor": chw, "CHW float tensor": chw.float() / 255,
             "NCHW tensor": chw[None], "PIL": Image.fromarray(rgb)}
    for name, images in given.items():
        got = probabilities(clf.predict(images, top_k=k))
        np.testing.assert_allclose(got, [want_rgb], atol=1e-6, err_msg=name)
    for name, images in {"HW grey": grey, "HW float": grey / 255.0,
                         "1HW tensor": torch.from_numpy(grey)[None]}.items():
        np.testing.assert_allclose(probabilities(clf.predict(images, top_k=k)), [want_grey],
                                   atol=1e-6, err_msg=name)
    np.testing.assert_allclose(clf.predict_proba([rgb, chw, tmp_path / "rgb.png"]), [want_rgb] * 3, atol=1e-6)


def test_a_list_mixing_every_kind_returns_one_prediction_each_in_order(clf, data):
    path = sorted((data / "b").glob("*.png"))[0]
    arr = pixels_of(path)
    mixed = [str(path), path, Image.open(path), arr, np.stack([arr, arr]),
             torch.from_numpy(arr).permute(2, 0, 1)]
    out = clf.predict(mixed, top_k=2)
    assert all(isinstance(p, Prediction) for p in out) and len(out) == 7
    assert [p.source for p in out] == [str(path), str(path), "<image 2>", "<array 3>", "<array 4>",
                                       "<array 5>", "<tensor 6>"]
    assert len({p.label for p in out}) == 1 and all(len(p.top_k) == 2 for p in out)
    p = out[0]
    assert p.label == p.top_k[0].label and p.probability == p.top_k[0].probability
    assert p.to_dict() == {"image": str(path), "top": [{"class": s.label, "index": s.index,
                                                        "probability": s.probability} for s in p.top_k]}


@pytest.mark.parametrize("bad, words", [
    (np.zeros((5, 5, 7), np.uint8), "shape (5, 5, 7)"),
    (np.full((5, 5, 3), 2.0), "[0, 1]"),
    (np.full((5, 5, 3), np.nan), "[0, 1]"),
    (np.full((5, 5, 3), 300, np.int32), "0..255"),
    (torch.zeros(5, 5, 3), "CHW"),
])
def test_arrays_that_are_not_images_are_one_line_errors(clf, bad, words):
    with pytest.raises(VistrainError) as err:
        clf.predict(bad)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_array_images_keeps_the_pixels():
    arr = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    images = array_images(arr)
    assert [np.asarray(im).tolist() for im in images] == arr.tolist()
    assert np.asarray(array_images(torch.from_numpy(arr[0]).permute(2, 0, 1))[0]).tolist() == arr[0].tolist()


# -- predict: mistyped paths -------------------------------------------------------------------
def test_a_missing_path_raises_file_not_found(clf, data, caplog):
    good = sorted((data / "a").glob("*.png"))[0]
    with pytest.raises(FileNotFoundError, match="no such file or folder") as err:
        clf.predict([good, data / "a" / "typo.png"])
    assert isinstance(err.value, VistrainError) and "errors='skip'" in str(err.value)
    with pytest.raises(FileNotFoundError):
        vistrain.predict(clf.source, data / "nope")
    with pytest.raises(FileNotFoundError):
        clf.predict_proba(data / "nope.png")


def test_errors_skip_lists_and_warns(clf, data, caplog):
    good = sorted((data / "a").glob("*.png"))[0]
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        out = clf.predict([good, data / "a" / "typo.png"], errors="skip")
    assert [p.error for p in out] == [None, "no such file or folder"]
    assert out[1].label is None and out[1].to_dict() == {"image": str(data / "a" / "typo.png"),
                                                          "error": "no such file or folder"}
    assert any("typo.png" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_an_unreadable_file_raises_unless_skipped(clf, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(VistrainError, match="not an image"):
        clf.predict(bad)
    assert "not an image" in clf.predict(bad, errors="skip")[0].error


def test_vistrain_predict_returns_what_classifier_predict_returns(clf, data, trained):
    folder = data / "c"
    api = vistrain.predict(trained[0].run_dir, folder, top_k=2)
    direct = clf.predict(folder, top_k=2)
    assert all(isinstance(p, Prediction) for p in api)
    assert [p.to_dict() for p in api] == [p.to_dict() for p in direct]


# -- what results print ----------------------------------------------------------------------
def test_run_result_and_classifier_print_a_few_lines(trained, clf):
    result, _ = trained
    for text in (repr(result), repr(clf)):
        lines = text.splitlines()
        assert 3 <= len(lines) <= 6 and len(text) < 600, text
        assert str(result.run_dir) in text and "classes: 3 (a, b, c)" in text
        assert "test accuracy:" in text and "95% CI" in text and "report.html" in text
    assert "object at 0x" not in repr(clf)


def test_train_logs_the_test_accuracy_with_its_interval_and_the_report(trained):
    result, records = trained
    messages = [r.getMessage() for r in records if r.levelno == logging.INFO]
    acc = result.metrics["test"]["accuracy"]
    assert any(m.startswith("test accuracy:") and f"{acc:.3f}" in m and "95% CI" in m for m in messages[-3:])
    assert any(str(result.run_dir / "report.html") in m for m in messages[-3:])


def test_print_config_is_the_yaml_that_print_config_prints(data, capsys):
    assert main(["train", str(data), "--epochs", "2", "--model", "vistrain/resnet-tiny", "--print-config"]) == 0
    cli = capsys.readouterr().out
    cfg = vistrain.make_config(data, epochs=2, model="vistrain/resnet-tiny")
    print(cfg)
    assert capsys.readouterr().out == cli + "\n" and str(cfg) == cli
    assert cli.count("\n") > 50 and "  epochs: 2\n" in cli


# -- error messages: the caller's spelling -----------------------------------------------------
def test_spelling_follows_the_caller():
    assert (option("overwrite"), option("out", "DIR"), set_option("data.doctor", False)) == \
        ("overwrite=True", "out=DIR", "data={'doctor': False}")
    with cli_spelling():
        assert (option("overwrite"), option("out", "DIR"), set_option("data.doctor", False)) == \
            ("--overwrite", "--out DIR", "--set data.doctor=false")
    assert option("overwrite") == "overwrite=True"  # the CLI's spelling ends with the verb
    with cli_spelling():
        assert set_option("preprocess.mean", [0.5, 0.5]) == "--set preprocess.mean=[0.5,0.5]"


def test_a_config_error_names_the_section_keyword_in_python(data):
    with pytest.raises(VistrainError, match=r"preprocess=\{'mean': \[0.5, 0.5, 0.5\]\}"):
        vistrain.make_config(data, preprocess={"normalize": "explicit"})


def test_an_existing_run_folder_names_the_keyword_in_python_and_the_flag_on_the_cli(trained, data, capsys):
    run_dir = trained[0].run_dir
    with pytest.raises(VistrainError) as err:
        vistrain.train(data, out=run_dir, **TINY)
    assert "overwrite=True" in str(err.value) and "--" not in str(err.value)
    assert main(["train", str(data), "--out", str(run_dir), "--epochs", "1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error:") and "--overwrite" in line and "overwrite=True" not in line


# -- the model card ----------------------------------------------------------------------------
def test_every_run_folder_has_a_model_card(trained):
    result, _ = trained
    card = (result.run_dir / MODEL_CARD).read_text()
    for heading in ("## Data", "## Recipe and why", "## Test metrics", "## Calibration",
                    "## Known weak classes", "## Intended use and limits"):
        assert heading in card
    test = result.metrics["test"]
    assert f"| accuracy | {test['accuracy']:.3f} |" in card
    fitted = json.loads((result.run_dir / "run.json").read_text())["strategy"].get("calibration") or {}
    if "temperature" in fitted:
        assert f"T = {fitted['temperature']:.3g}" in card
    else:
        assert "No temperature was fitted" in card, fitted
    assert "| a |" in card and "finetune" in card
    assert not list(result.run_dir.glob(".*.tmp"))  # written atomically, nothing left behind


# -- serve inside a running event loop (a Jupyter cell) ----------------------------------------
def test_serve_runs_where_an_event_loop_already_runs(trained, data):
    """A notebook's cell runs inside an asyncio loop, where uvicorn cannot start its own: serve
    answers there too, and the notebook's interrupt (SIGINT) stops it and returns."""
    png = sorted((data / "a").glob("*.png"))[0].read_bytes()
    answers = []

    def ready(url):
        def client():
            try:
                for _ in range(300):
                    try:
                        urllib.request.urlopen(url + "/healthz", timeout=10).read()
                        break
                    except OSError:
                        time.sleep(0.1)
                req = urllib.request.Request(url + "/predict?top_k=2", data=png, method="POST")
                answers.append(json.loads(urllib.request.urlopen(req, timeout=60).read()))
            finally:
                os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=client, daemon=True).start()

    async def cell():  # what ipykernel does: the cell's code runs while the loop runs
        vistrain.serve(trained[0].run_dir, port=0, ready=ready)

    # Python's own Ctrl-C handler, as a notebook kernel has one: a handler an earlier test left
    # installed in this process would swallow the interrupt and the server would never stop
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cell())
    finally:
        loop.close()
        signal.signal(signal.SIGINT, previous)
    assert len(answers) == 1 and len(answers[0]["top"]) == 2
