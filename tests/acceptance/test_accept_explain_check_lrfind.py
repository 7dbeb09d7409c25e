"""``explain`` (every method), ``check`` and ``lr-find`` as a user runs them."""
from __future__ import annotations

import json
import re
import subprocess

import pytest
from PIL import Image

from .acceptlib import CLASSES, SCRATCH, assert_ok, vistrain

METHODS = ("gradcam", "gradcam++", "layercam")


def _two_images(data):
    return [sorted((data / c).glob("*.png"))[-1] for c in ("Bag", "Sneaker")]


def _explain_methods() -> list[str]:
    """The ``--method`` choices ``vistrain explain --help`` offers (so a new one is tested too)."""
    import sys
    text = subprocess.run([sys.executable, "-m", "vistrain.cli.main", "explain", "--help"],
                          capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"--method \{([^}]*)\}", text)
    return m.group(1).split(",") if m else list(METHODS)


def test_help_lists_the_known_methods():
    assert set(METHODS) <= set(_explain_methods())


@pytest.mark.parametrize("method", _explain_methods())
def test_explain_every_method(scratch_run, shipped, tmp_path, method):
    imgs = _two_images(shipped)
    out = tmp_path / "explain"
    res = assert_ok(vistrain("explain", scratch_run.dir, *imgs, "--method", method, "--out", out))
    for img in imgs:
        png = out / f"{img.stem}_{method}.png"
        assert png.is_file() and Image.open(png).size[0] > 100, res.describe()
        assert str(png) in res.stdout
        assert re.search(rf"{re.escape(str(img))}: predicted ({'|'.join(map(re.escape, CLASSES))}) "
                         r"\(p=0\.\d{3}\)", res.stdout), res.stdout


def test_explain_pretrained_run_with_feature_maps_and_class(fe_run, shipped, tmp_path):
    img = _two_images(shipped)[0]
    out = tmp_path / "explain"
    res = assert_ok(vistrain("explain", fe_run.dir, img, "--feature-maps", "--class", "Bag", "--out", out))
    assert (out / f"{img.stem}_gradcam.png").is_file()
    assert (out / f"{img.stem}_feature_maps.png").is_file()
    assert "for Bag" in res.stdout


def test_explain_list_layers_and_default_out(scratch_run, shipped):
    res = assert_ok(vistrain("explain", scratch_run.dir, "--list-layers"))
    assert "<- default CAM layer" in res.stdout
    img = _two_images(shipped)[1]
    assert_ok(vistrain("explain", scratch_run.dir, img))
    assert (scratch_run.dir / "explain" / f"{img.stem}_gradcam.png").is_file()


def test_explain_json(scratch_run, shipped, tmp_path):
    imgs = _two_images(shipped)
    doc = assert_ok(vistrain("explain", scratch_run.dir, *imgs, "--out", tmp_path, "--json")).json()
    text = json.dumps(doc)
    for img in imgs:
        assert str(tmp_path / f"{img.stem}_gradcam.png") in text


@pytest.fixture(scope="module")
def checked(subset, tmp_path_factory, acc_env):
    out = tmp_path_factory.mktemp("check") / "out"
    common = ["check", subset, *SCRATCH, "--steps", 60, "--lr-steps", 40]
    return (vistrain(*common, "--json", "--out", out), vistrain(*common), out)


def test_check_json_and_files(checked):
    js, _, out = checked
    assert "Traceback" not in js.stderr, js.describe()
    results = js.json()
    names = [r["name"] for r in results]
    assert {"normalization", "overfit-small-sample", "label-shuffle", "lr-finder"} <= set(names)
    failed = any(r["passed"] is False for r in results)
    assert js.rc == (1 if failed else 0)  # documented: exit 1 when a check fails
    assert json.loads((out / "checks.json").read_text())
    assert (out / "lr_finder.png").stat().st_size > 1000


def test_check_prints_each_result_once(checked):
    js, text, _ = checked
    assert text.rc == js.rc and "Traceback" not in text.stderr, text.describe()
    for r in js.json():
        line = f"[{r['status']}] {r['name']}:"
        both = text.stdout + text.stderr
        assert both.count(line) == 1, (line, both)


def _lr_find(subset, tmp_path, *extra, timeout=900):
    plot = tmp_path / "lr.png"
    res = vistrain("lr-find", subset, "--out", plot, "--json", *extra, timeout=timeout)
    return res, plot


def test_lr_find_json_and_plot(subset, tmp_path, acc_env):
    res, plot = _lr_find(subset, tmp_path, *SCRATCH, "--steps", 40)
    doc = assert_ok(res).json()
    assert 1e-7 <= doc["suggestion"] <= 10 and len(doc["lrs"]) == len(doc["losses"]) <= 40
    assert plot.stat().st_size > 1000


def test_lr_find_agrees_with_check(subset, tmp_path, checked):
    """The same range test as the one inside ``check`` (same settings and steps): same suggestion."""
    res, _ = _lr_find(subset, tmp_path, *SCRATCH, "--steps", 40)
    ours = assert_ok(res).json()["suggestion"]
    theirs = next(r for r in checked[0].json() if r["name"] == "lr-finder")["measurements"]["suggestion"]
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_lr_find_default_strategy_uses_the_feature_cache(shipped, tmp_path, fe_run):
    """With the default (frozen) strategy the range test runs on cached features: seconds, not minutes."""
    res, plot = _lr_find(shipped, tmp_path, timeout=150)
    doc = assert_ok(res).json()
    assert doc["suggestion"] > 0 and plot.is_file()
