"""``Classifier.predict`` and ``vistrain predict``: one path, lists, folders, unreadable files, top-k.

The probabilities are cross-checked against the model run by hand on the same preprocessing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_folder
from vistrain.artifact import save_model
from vistrain.cli.main import main
from vistrain.errors import VistrainError
from vistrain.models import create
from vistrain.predictor import Classifier
from vistrain.transforms.preprocess import Preprocess

CLASSES = ["cat", "dog", "eel"]


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    """A saved (untrained, seeded) 3-class run and a folder of 3 x 3 images, one in a sub-folder."""
    tmp = tmp_path_factory.mktemp("predict")
    data = make_image_folder(tmp / "data", classes=tuple(CLASSES), per_class=3, size=(40, 32))
    nested = data / "eel" / "more"
    nested.mkdir()
    (data / "eel" / "eel_002.png").rename(nested / "eel_002.png")
    (data / "cat" / ".hidden.png").write_bytes((data / "cat" / "cat_000.png").read_bytes())
    (data / "cat" / "notes.txt").write_text("not an image")
    torch.manual_seed(0)
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, input_size=32)
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
    save_model(tmp / "run", model, model_name="vistrain/resnet-tiny", classes=CLASSES,
               preprocess=pre, model_kwargs={"input_size": 32})
    return tmp / "run", data


@pytest.fixture(scope="module")
def clf(run_and_data):
    return Classifier.from_run(run_and_data[0])


def reference_probs(clf: Classifier, path) -> np.ndarray:
    """The model's softmax on one image, computed here step by step."""
    with torch.no_grad():
        x = clf.preprocess.normalize(clf.preprocess.pixels(path)[None])
        return torch.softmax(clf.model(x).double(), 1)[0].numpy()


def test_one_path_is_one_image_not_its_characters(clf, run_and_data):
    _, data = run_and_data
    path = data / "dog" / "dog_001.png"
    for given in (str(path), path):
        results = clf.predict(given, top_k=3)
        assert len(results) == 1 and results[0]["image"] == str(path)
        ref = reference_probs(clf, path)
        got = {t["index"]: t["probability"] for t in results[0]["top"]}
        np.testing.assert_allclose([got[i] for i in range(3)], ref, atol=1e-6)
        assert [t["index"] for t in results[0]["top"]] == list(np.argsort(-ref))
        assert [t["class"] for t in results[0]["top"]] == [CLASSES[i] for i in np.argsort(-ref)]


def test_folder_is_its_images_recursively_sorted(clf, run_and_data):
    _, data = run_and_data
    results = clf.predict(data)
    expected = sorted(p for p in data.rglob("*.png") if not p.name.startswith("."))
    assert [r["image"] for r in results] == [str(p) for p in expected]
    assert len(results) == 9 and str(data / "eel" / "more" / "eel_002.png") in [r["image"] for r in results]
    assert all("top" in r and "error" not in r for r in results)


def test_list_of_paths_and_pil_images(clf, run_and_data):
    _, data = run_and_data
    path = data / "cat" / "cat_001.png"
    pil = Image.open(path).convert("RGB")
    results = clf.predict([path, pil, str(data / "dog")], top_k=1)
    assert [r["image"] for r in results][:2] == [str(path), "<image 1>"]
    assert len(results) == 2 + 3
    # the same pixels, file or PIL image: the same class; the probability to float32 rounding (two
    # rows of one batch may take different oneDNN code paths)
    (top_file,), (top_pil,) = results[0]["top"], results[1]["top"]
    assert top_file["class"] == top_pil["class"] and top_file["index"] == top_pil["index"]
    assert top_file["probability"] == pytest.approx(top_pil["probability"], abs=1e-6)
    np.testing.assert_allclose(clf.predict_proba([path, pil]), [reference_probs(clf, path)] * 2, atol=1e-6)


def test_unreadable_and_missing_files_do_not_stop_the_batch(clf, run_and_data, tmp_path):
    _, data = run_and_data
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    no_images = tmp_path / "no-images"
    no_images.mkdir()
    good = data / "dog" / "dog_000.png"
    results = clf.predict([bad, good, tmp_path / "missing.png", empty, no_images], top_k=2, errors="skip")
    assert [r["image"] for r in results] == [str(bad), str(good), str(tmp_path / "missing.png"),
                                              str(empty), str(no_images)]
    errors = {r["image"]: r["error"] for r in results if "error" in r}
    assert set(errors) == {str(bad), str(tmp_path / "missing.png"), str(empty), str(no_images)}
    assert "not an image" in errors[str(bad)] and "no such file" in errors[str(tmp_path / "missing.png")]
    assert "empty" in errors[str(empty)] and "no image files" in errors[str(no_images)]
    assert all("top" not in r for r in results if "error" in r)
    assert results[1]["top"] == clf.predict(good, top_k=2)[0]["top"]


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True])
def test_top_k_below_one_or_not_whole_is_an_error(clf, run_and_data, top_k):
    _, data = run_and_data
    with pytest.raises(VistrainError, match="top_k must be a whole number from 1 to 3"):
        clf.predict(data / "dog" / "dog_000.png", top_k=top_k)


def test_top_k_above_the_classes_shows_them_all(clf, run_and_data):
    _, data = run_and_data
    result = clf.predict(data / "dog" / "dog_000.png", top_k=50)[0]
    assert sorted(t["index"] for t in result["top"]) == [0, 1, 2]
    assert sum(t["probability"] for t in result["top"]) == pytest.approx(1, abs=1e-6)


def test_cli_predicts_a_folder(run_and_data, capsys):
    run, data = run_and_data
    assert main(["predict", str(run), str(data), "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    for p in sorted(p for p in data.rglob("*.png") if not p.name.startswith(".")):
        assert f"{p}  " in out  # a folder: one line per image, its class and probability after it
    assert out.count("%") == 9 * 2 and len(out.splitlines()) == 9


def test_cli_mixes_files_folders_and_unreadable_files(run_and_data, tmp_path, capsys):
    run, data = run_and_data
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    missing = tmp_path / "missing.png"
    capsys.readouterr()
    assert main(["predict", str(run), str(bad), str(data / "dog"), str(missing),
                 str(data / "cat" / "cat_000.png"), "--json", "--top-k", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)  # one JSON document and nothing else
    assert doc["n_predicted"] == 4 and doc["n_failed"] == 2
    assert [p["image"] for p in doc["predictions"]][0] == str(bad)
    assert "error" in doc["predictions"][0] and "top" not in doc["predictions"][0]
    assert all(len(p["top"]) == 1 for p in doc["predictions"] if "error" not in p)
    assert main(["predict", str(run), str(bad), str(data / "dog" / "dog_000.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{bad}: error: not an image file PIL can read; remove it from the data folder"
    assert lines[1] == str(data / "dog" / "dog_000.png")


def test_cli_exit_2_with_one_line_when_nothing_could_be_predicted(run_and_data, tmp_path, capsys):
    run, _ = run_and_data
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    capsys.readouterr()
    assert main(["predict", str(run), str(bad), str(tmp_path / "missing.png"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: none of the 2 images") and str(bad) in err[0]
    assert main(["predict", str(run), str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "missing.png") in err[0] and "no such file" in err[0]


@pytest.mark.parametrize("top_k", ["-1", "0"])
def test_cli_top_k_below_one_is_a_one_line_error(run_and_data, capsys, top_k):
    run, data = run_and_data
    capsys.readouterr()
    assert main(["predict", str(run), str(data / "dog" / "dog_000.png"), "--top-k", top_k]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (f"error: --top-k {top_k}: must be at least 1 (values above the "
                                    "number of classes show them all)")


def test_cli_predict_no_images_and_no_run(run_and_data, capsys):
    run, _ = run_and_data
    assert main(["predict", str(run)]) == 2
    assert "no images given" in capsys.readouterr().err
    assert main(["predict"]) == 2
    assert "give a run directory" in capsys.readouterr().err
