"""``vistrain predict`` and ``vistrain evaluate`` with trained runs on real images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from .acceptlib import CLASSES, assert_ok, python_script, table_value, vistrain


def _images(data, per_class=1, classes=CLASSES):
    return [sorted((data / c).glob("*.png"))[-1 - i] for c in classes for i in range(per_class)]


def _parse_predict_text(text: str) -> dict[str, list[tuple[float, str]]]:
    """``image`` lines followed by ``  12.34%  class  [k]`` lines -> {image: [(p, class), ...]}."""
    out: dict[str, list[tuple[float, str]]] = {}
    current = None
    for line in text.splitlines():
        if not line.startswith(" "):
            current = line.strip()
            out[current] = []
        else:
            pct, rest = line.strip().split("%", 1)
            out[current].append((float(pct) / 100, rest.strip().rsplit(" [", 1)[0].strip()))
    return out


def test_predict_files_text_and_json_agree(fe_run, shipped):
    imgs = _images(shipped, classes=CLASSES[:4])
    text = assert_ok(vistrain("predict", fe_run.dir, *imgs))
    doc = assert_ok(vistrain("predict", fe_run.dir, *imgs, "--json")).json()
    table = _parse_predict_text(text.stdout)
    assert len(doc["predictions"]) == len(imgs) == len(table)
    for img, pred in zip(imgs, doc["predictions"]):
        assert pred["image"] == str(img)
        top = pred["top"]
        assert len(top) == 5 and all(t["class"] in CLASSES for t in top)
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert [c for _, c in table[str(img)]] == [t["class"] for t in top]
        assert np.allclose([p for p, _ in table[str(img)]], probs, atol=6e-5)


def test_predict_top_k_all_classes_sum_to_one(scratch_run, shipped):
    doc = assert_ok(vistrain("predict", scratch_run.dir, *_images(shipped, classes=CLASSES[:2]),
                             "--top-k", 10, "--json")).json()
    for pred in doc["predictions"]:
        assert sorted(t["class"] for t in pred["top"]) == CLASSES
        assert abs(sum(t["probability"] for t in pred["top"]) - 1) < 1e-5


def test_predict_a_folder(scratch_run, shipped):
    folder = shipped / "Bag"
    doc = assert_ok(vistrain("predict", scratch_run.dir, folder, "--json", "--top-k", 1)).json()
    images = sorted(p["image"] for p in doc["predictions"])
    assert len(images) == 200
    assert images == sorted(str(p) for p in folder.glob("*.png"))


def test_predict_folder_and_files_mixed_with_unreadable(scratch_run, shipped, messy):
    """Unreadable files are named and skipped; the readable ones are still classified."""
    good = _images(shipped, classes=CLASSES[:3])
    bad = messy["unreadable"]
    res = vistrain("predict", scratch_run.dir, good[0], bad[0], good[1], bad[1], bad[2], good[2], "--json")
    assert "Traceback" not in res.stderr, res.describe()
    doc = res.json()
    ok = [p for p in doc["predictions"] if p.get("top")]
    assert [p["image"] for p in ok] == [str(g) for g in good]
    named = json.dumps(doc) + res.stderr
    for b in bad:
        assert str(b) in named, f"{b} not reported\n{res.describe()}"


def test_predict_python_api_string_is_one_image(scratch_run, shipped, tmp_path):
    """Covered in the API suite too; here as a user's one-liner in a fresh interpreter."""
    img = _images(shipped, classes=CLASSES[:1])[0]
    res = assert_ok(python_script(f"""
        import json, vistrain
        r = vistrain.load({str(scratch_run.dir)!r}).predict({str(img)!r}, top_k=2)
        print(json.dumps([p.to_dict() for p in r]))
    """, cwd=tmp_path))
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(out) == 1 and out[0]["image"] == str(img) and len(out[0]["top"]) == 2


@pytest.fixture(scope="module")
def evaluated(fe_run, eval_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "eval"
    text = vistrain("evaluate", fe_run.dir, eval_data, "--out", out)
    js = vistrain("evaluate", fe_run.dir, eval_data, "--json", "--bootstrap", 200)
    return text, js, out


def test_evaluate_120_images_table(evaluated):
    text, _, out = evaluated
    assert_ok(text)
    for name in ("metrics.json", "predictions.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("*.png")), "no figures written"
    metrics = json.loads((out / "metrics.json").read_text())
    metrics = metrics.get("test", metrics)
    assert metrics["n_samples"] == 120
    assert abs(table_value(text.stdout, "accuracy") - metrics["accuracy"]) < 1e-4


def test_evaluate_json_matches_table_and_predict(evaluated, fe_run, eval_data):
    """--json agrees with the table, and with the argmax of ``predict`` on the same files."""
    text, js, _ = evaluated
    m = assert_ok(js).json()
    assert m["n_samples"] == 120 and m["skipped_files"] == []
    assert abs(table_value(text.stdout, "accuracy") - m["accuracy"]) < 1e-4
    files = sorted(eval_data.rglob("*.png"))
    doc = assert_ok(vistrain("predict", fe_run.dir, *files, "--json", "--top-k", 1)).json()
    top1 = {p["image"]: p["top"][0]["class"] for p in doc["predictions"]}
    acc = np.mean([top1[str(f)] == f.parent.name for f in files])
    assert abs(acc - m["accuracy"]) < 1e-9, (acc, m["accuracy"])
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == 120 and abs(np.trace(cm) / 120 - m["accuracy"]) < 1e-9
