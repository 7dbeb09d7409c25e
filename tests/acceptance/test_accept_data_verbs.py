"""``stats``, ``doctor``, ``preview``, ``augment-preview`` and ``cache`` on real folders."""
from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from .acceptlib import CLASSES, assert_ok, vistrain


def test_stats_exact_against_numpy(shipped):
    """Native-size mean/std of all 2,000 images equal NumPy's over the decoded pixels."""
    doc = assert_ok(vistrain("stats", shipped, "--size", 0, "--json", "--no-cache")).json()
    pix = np.concatenate([np.asarray(Image.open(p).convert("L"), np.float64).ravel()
                          for p in sorted(shipped.rglob("*.png"))]) / 255
    assert doc["n_images"] == 2000 and doc["bad"] in ({}, [])
    assert np.allclose(doc["mean"], pix.mean(), atol=1e-9) and np.allclose(doc["std"], pix.std(), atol=1e-9)
    text = assert_ok(vistrain("stats", shipped, "--size", 0, "--workers", 2)).stdout
    assert re.search(rf"mean:\s+{doc['mean'][0]:.6f}", text) and re.search(rf"std:\s+{doc['std'][0]:.6f}", text)


def test_stats_at_model_size(subset):
    doc = assert_ok(vistrain("stats", subset, "--json")).json()
    assert doc["n_images"] == 500 and doc["resize"]["size"] == 224
    assert all(0 < m < 1 for m in doc["mean"]) and all(0 < s < 1 for s in doc["std"])


def _finding_text(doc) -> str:
    return json.dumps(doc["findings"])


def test_doctor_finds_every_problem_of_a_messy_folder(messy):
    root = messy["root"]
    js = vistrain("doctor", root, "--json")
    text = vistrain("doctor", root)
    for res in (js, text):
        assert res.rc == 1 and "Traceback" not in res.stderr, res.describe()  # unsound: exit 1
    doc = js.json()
    assert doc["ok"] is False
    findings = _finding_text(doc)
    errors = json.dumps([f for f in doc["findings"] if f["severity"] == "error"])
    assert messy["empty_class"] in errors                                    # empty class
    assert all(str(p) in errors for p in messy["duplicate"])                 # one picture, two labels
    for key in ("corrupt", "truncated", "zero_byte", "cmyk", "sixteen_bit", "exif_rotated"):
        assert str(messy[key]) in findings, f"{key} ({messy[key]}) not reported"
    # the table and the JSON agree: counts per class, and the number of errors
    assert doc["counts"][messy["empty_class"]] == 0
    for cls, n in doc["counts"].items():
        assert re.search(rf"^\s+{re.escape(cls)}\s+{n}$", text.stdout, re.M), (cls, n, text.stdout)
    n_errors = sum(f["severity"] == "error" for f in doc["findings"])
    assert f"{n_errors} error(s)" in text.stdout


def test_doctor_on_the_shipped_set(shipped):
    js = vistrain("doctor", shipped, "--json", "--workers", 2)
    doc = js.json()
    assert js.rc == (0 if doc["ok"] else 1) and "Traceback" not in js.stderr, js.describe()
    assert doc["counts"] == {c: 200 for c in CLASSES}


def test_preview_folder_and_single_image(shipped, tmp_path):
    out = tmp_path / "preview.png"
    res = assert_ok(vistrain("preview", shipped, "--out", out, "--n", 10))
    assert str(out.resolve()) in res.stdout and Image.open(out).size[0] > 200
    one = tmp_path / "one.png"
    assert_ok(vistrain("preview", sorted((shipped / "Bag").glob("*.png"))[0], "--out", one))
    assert Image.open(one).size[0] > 100


def test_augment_preview_presets(shipped, tmp_path):
    sizes = {}
    for preset in ("light", "medium", "heavy"):
        out = tmp_path / f"aug-{preset}.png"
        res = assert_ok(vistrain("augment-preview", shipped, "--preset", preset, "--out", out,
                                 "--n", 4, "--k", 5, "--size", 64))
        assert str(out.resolve()) in res.stdout
        sizes[preset] = Image.open(out).size
    assert len(set(sizes.values())) == 1  # same grid, whatever the preset
    out = tmp_path / "aug-mix.png"
    assert_ok(vistrain("augment-preview", shipped, "--mixup", 0.4, "--cutmix", 1.0, "--out", out,
                       "--size", 64))
    assert out.stat().st_size > 1000


def test_preview_and_augment_preview_json(shipped, tmp_path):
    for verb in ("preview", "augment-preview"):
        out = tmp_path / f"{verb}.png"
        doc = assert_ok(vistrain(verb, shipped, "--out", out, "--json", "--n", 2)).json()
        assert str(out.resolve()) in json.dumps(doc) or str(out) in json.dumps(doc)


def test_cache_show_prune_clear(subset, tmp_path):
    """A private cache folder: filled by a command, listed (text and JSON agree), emptied."""
    env = {"VISTRAIN_CACHE": str(tmp_path / "cache")}
    empty = assert_ok(vistrain("cache", "--json", env=env)).json()
    assert empty["total_bytes"] == 0
    assert_ok(vistrain("stats", subset, "--size", 32, env=env))
    assert_ok(vistrain("preview", subset, "--out", tmp_path / "p.png", env=env))
    doc = assert_ok(vistrain("cache", "--json", env=env)).json()
    assert doc["root"] == env["VISTRAIN_CACHE"] and doc["total_bytes"] > 0
    assert sum(e["bytes"] for e in doc["entries"].values()) == doc["total_bytes"]
    text = assert_ok(vistrain("cache", env=env)).stdout
    n = sum(e["count"] for e in doc["entries"].values())
    assert f"in {n} entries" in text
    assert_ok(vistrain("cache", "--prune", env=env))
    cleared = assert_ok(vistrain("cache", "--clear", "--json", env=env)).json()
    assert cleared["total_bytes"] == 0 and cleared["removed"]
    assert assert_ok(vistrain("cache", "--json", env=env)).json()["total_bytes"] == 0


def test_session_cache_holds_the_features(fe_run):
    doc = assert_ok(vistrain("cache", "--json")).json()
    assert {"features", "pixels"} <= set(doc["entries"]), doc
