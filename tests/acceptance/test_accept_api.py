"""The Python API in one fresh interpreter, as a notebook uses it: train, tweak, train again, ...

One script calls every public function in turn (each step guarded, so one failure does not hide
the others) and records what it got; the tests below check one step each.
"""
from __future__ import annotations

import json

import pytest

from .acceptlib import CLASSES, assert_ok, python_script

SCRIPT = r'''
import json, sys, traceback
from pathlib import Path
import vistrain

DATA, EVAL, OUT, BAD = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
SMALL = dict(model="vistrain/vgg-tiny", strategy="finetune", preprocess={"size": 28},
             data={"num_workers": 2})
results = {}

def step(name):
    def wrap(fn):
        try:
            results[name] = {"ok": True, "value": fn()}
        except BaseException as err:  # record, keep going
            results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                             "traceback": traceback.format_exc()[-3000:]}
    return wrap

def summary(r):
    return {"run_dir": str(r.run_dir), "classes": r.classes, "test_accuracy": r.metrics["test"]["accuracy"],
            "epochs": len(r.history), "report": (r.run_dir / "report.html").is_file()}

@step("train_first")
def _():
    return summary(vistrain.train(DATA, out=OUT / "api1", epochs=2, progress=False, **SMALL))

@step("train_second")
def _():  # the notebook loop: tweak a setting, train again in the same process
    return summary(vistrain.train(DATA, out=OUT / "api2", epochs=1, lr=3e-3, progress=False, **SMALL))

clf = None
@step("load")
def _():
    global clf
    clf = vistrain.load(OUT / "api1")
    return {"classes": clf.classes}

one_file = sorted((DATA / "Bag").glob("*.png"))[0]

@step("predict_one_path")
def _():
    return [p.to_dict() for p in clf.predict(str(one_file), top_k=3)]

@step("predict_one_pathlib")
def _():
    return [p.to_dict() for p in clf.predict(one_file, top_k=3)]

@step("predict_list")
def _():
    return [p.to_dict() for p in clf.predict([str(p) for p in sorted((DATA / "Coat").glob("*.png"))[:4]], top_k=2)]

@step("predict_folder")
def _():
    return [p.to_dict() for p in clf.predict(DATA / "Sneaker", top_k=1)]

@step("predict_with_unreadable")
def _():
    return [p.to_dict() for p in clf.predict([one_file, BAD], top_k=1, errors="skip")]

@step("evaluate")
def _():
    m = vistrain.evaluate(OUT / "api1", EVAL)
    return {"accuracy": m["accuracy"], "n_samples": m["n_samples"]}

@step("cv")
def _():
    r = vistrain.cv(DATA, folds=2, out=OUT / "cv", epochs=1, progress=False, **SMALL)
    return {"n_folds": r["n_folds"], "mean": r["summary"]["metrics"]["accuracy"]["mean"],
            "out_exists": (OUT / "cv" / "cv_metrics.json").is_file()}

@step("compare")
def _():
    r = vistrain.compare(DATA, {"model": ["vistrain/vgg-tiny", "vistrain/resnet-tiny"]}, out=OUT / "cmp",
                         epochs=1, progress=False, preprocess={"size": 28})
    return {"runs": len(r["runs"]), "same_split": r["same_split"],
            "html": (OUT / "cmp" / "compare.html").is_file()}

@step("explain")
def _():
    r = vistrain.explain(OUT / "api1", [one_file], method="layercam", out=OUT / "explain")
    return {"files": [str(p) for i in r["images"] for p in i["files"].values()]}

@step("check")
def _():
    rs = vistrain.check(DATA, steps=30, lr_steps=30, **SMALL)
    return [{"name": r.name, "passed": r.passed} for r in rs]

@step("lr_find")
def _():
    r = vistrain.lr_find(DATA, steps=30, **SMALL)
    return {"suggestion": r["suggestion"], "n": len(r["lrs"])}

@step("train_third_after_everything")
def _():
    return summary(vistrain.train(DATA, out=OUT / "api3", epochs=1, progress=False, **SMALL))

print("RESULTS " + json.dumps(results, default=str))
'''


@pytest.fixture(scope="module")
def api(subset, eval_data, messy, tmp_path_factory, acc_env):
    work = tmp_path_factory.mktemp("api")
    (work / "runner.py").write_text(SCRIPT)
    res = python_script(f"""
        import runpy, sys
        sys.argv = ["runner", {str(subset)!r}, {str(eval_data)!r}, {str(work / 'out')!r},
                    {str(messy['corrupt'])!r}]
        runpy.run_path("runner.py", run_name="__main__")
    """, cwd=work)
    assert_ok(res)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):]), work / "out"


def _ok(api, name):
    results, _ = api
    r = results[name]
    assert r["ok"], f"{name}: {r['error']}\n{r['traceback']}"
    return r["value"]


def test_train_twice_in_one_process(api):
    first, second = _ok(api, "train_first"), _ok(api, "train_second")
    for r, epochs in ((first, 2), (second, 1)):
        assert r["classes"] == CLASSES and r["epochs"] == epochs and r["report"]
        assert 0 <= r["test_accuracy"] <= 1
    assert _ok(api, "train_third_after_everything")["epochs"] == 1


def test_load(api):
    assert _ok(api, "load")["classes"] == CLASSES


def test_predict_one_path_is_one_image(api):
    for name in ("predict_one_path", "predict_one_pathlib"):
        out = _ok(api, name)
        assert len(out) == 1 and out[0]["image"].endswith(".png") and len(out[0]["top"]) == 3


def test_predict_list(api):
    out = _ok(api, "predict_list")
    assert len(out) == 4 and all(len(r["top"]) == 2 for r in out)


def test_predict_folder(api):
    out = _ok(api, "predict_folder")
    assert len(out) == 50 and all(r["image"].endswith(".png") for r in out)


def test_predict_unreadable_does_not_stop_the_others(api):
    out = _ok(api, "predict_with_unreadable")
    assert len(out) == 2 and out[0]["top"] and "error" in out[1] and not out[1].get("top")


def test_evaluate(api):
    out = _ok(api, "evaluate")
    assert out["n_samples"] == 120 and 0 <= out["accuracy"] <= 1


def test_cv(api):
    out = _ok(api, "cv")
    assert out["n_folds"] == 2 and out["out_exists"] and 0 <= out["mean"] <= 1


def test_compare(api):
    out = _ok(api, "compare")
    assert out["runs"] == 2 and out["same_split"] and out["html"]


def test_explain(api):
    files = _ok(api, "explain")["files"]
    assert files and all(f.endswith(".png") for f in files)
    assert any("layercam" in f for f in files)


def test_check(api):
    names = {r["name"] for r in _ok(api, "check")}
    assert {"normalization", "overfit-small-sample", "label-shuffle", "lr-finder"} <= names


def test_lr_find(api):
    out = _ok(api, "lr_find")
    assert 1e-7 <= out["suggestion"] <= 10 and 0 < out["n"] <= 30


def test_nothing_written_outside_the_given_folders(api):
    """Every output went where the calls said: no stray runs/ or explain-*/ in the working folder."""
    _, out = api
    work = out.parent
    assert sorted(p.name for p in work.iterdir()) == ["out", "runner.py", "script.py"]
