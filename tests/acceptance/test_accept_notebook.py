"""The Python API in a real Jupyter notebook: every function of ``vistrain.__all__`` called twice in
one kernel, on paths, PIL images, NumPy arrays and torch tensors.

The test writes an ``.ipynb`` with nbformat and executes it with nbclient in an IPython kernel of
the running interpreter (the ``python3`` kernelspec's ``python`` is replaced by
``sys.executable``; PYTHONPATH and the cache folder are inherited).  A cell that raises fails
the test with the cell's traceback; the last cell prints one JSON line of what the notebook saw.
The data are a 150-image copy of the shipped set; the model is the smallest from-scratch network
at 28 px, one epoch, so two rounds take a few minutes on a CPU.
"""
from __future__ import annotations

import json
import sys
import textwrap

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import vistrain

from .acceptlib import CLASSES, copy_subset

PER_CLASS = 15

SETUP = """
import json, os, signal, threading, time, urllib.request
from pathlib import Path
import numpy as np, torch
from PIL import Image
import vistrain

DATA, EVAL, OUT = Path({data!r}), Path({eval!r}), Path({out!r})
SMALL = dict(model="vistrain/vgg-tiny", preprocess={{"size": 28}}, data={{"num_workers": 0}})
seen = {{"rounds": []}}
"""

TOUR = '''
def post_and_stop(url, png, answers):
    """``serve``'s ready callback: from another thread, wait until the server answers (the socket
    listens before uvicorn accepts), post one image, then Ctrl-C as a user would."""
    def client():
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=10).read()
                    break
                except OSError:
                    time.sleep(0.1)
            req = urllib.request.Request(url + "/predict?top_k=2", data=png, method="POST",
                                         headers={"Content-Type": "image/png"})
            answers.append(json.loads(urllib.request.urlopen(req, timeout=60).read()))
        finally:
            os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=client, daemon=True).start()


def tour_steps(n):
    """Every public function once, one step each (the notebook runs each step in a cell of its
    own, so that a failure or a hang names its step); returns ``{step name: function}``."""
    out, got, ctx = OUT / f"round{n}", {}, {}
    seen["rounds"].append(got)
    path = sorted((DATA / "Bag").glob("*.png"))[0]
    arr = np.array(Image.open(path).convert("RGB"))

    def make_config():
        cfg = vistrain.make_config(DATA, epochs=1, **SMALL)
        got["config_is_yaml"] = str(cfg).startswith("data:\\n") and "  epochs: 1\\n" in str(cfg)

    def train():
        result = vistrain.train(DATA, out=out / "run", epochs=1, progress=False, **SMALL)
        ctx["run"], got["run_repr"] = result.run_dir, repr(result)
        got["model_card"] = (result.run_dir / "MODEL_CARD.md").is_file()

    def load():
        clf = ctx["clf"] = vistrain.load(ctx["run"])
        got["clf_repr"] = repr(clf)
        inputs = {"str": str(path), "path": path, "folder": DATA / "Bag", "pil": Image.open(path),
                  "array": arr, "array_batch": np.stack([arr, arr]), "grey": arr[:, :, 0],
                  "tensor": torch.from_numpy(arr).permute(2, 0, 1),
                  "float_tensor": torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
                  "mixed": [path, arr, Image.open(path), torch.from_numpy(arr).permute(2, 0, 1)]}
        got["predict"] = {k: [p.to_dict() for p in clf.predict(v, top_k=2)] for k, v in inputs.items()}
        ctx["inputs"] = inputs
        try:
            clf.predict(DATA / "Bag" / "typo.png")
            got["missing"] = "no error"
        except FileNotFoundError as err:
            got["missing"] = str(err)
        got["skipped"] = [p.error for p in clf.predict([path, DATA / "typo.png"], errors="skip")]
        got["proba_shape"] = list(clf.predict_proba([arr, path]).shape)

    def predict():
        got["predict_types"] = sorted({type(p).__name__ for v in ctx["inputs"].values()
                                       for p in vistrain.predict(ctx["run"], v)})

    def evaluate():
        got["evaluate"] = vistrain.evaluate(ctx["run"], EVAL, bootstrap=20, out=out / "eval", progress=False)["accuracy"]

    def explain():
        got["explain"] = len(vistrain.explain(ctx["run"], [path, arr], out=out / "explain")["images"])

    def check():
        got["check"] = len(vistrain.check(DATA, steps=5, lr_steps=5, progress=False, **SMALL))

    def lr_find():
        got["lr_find"] = vistrain.lr_find(DATA, steps=5, progress=False, **SMALL)["suggestion"]

    def cv():
        got["cv"] = vistrain.cv(DATA, folds=2, out=out / "cv", epochs=1, progress=False, **SMALL)["n_folds"]

    def compare():
        got["compare"] = len(vistrain.compare(DATA, {"optim.lr": [1e-3, 3e-3]}, out=out / "cmp", epochs=1,
                                              progress=False, **SMALL)["runs"])

    def export():
        got["export"] = sorted(vistrain.export(ctx["run"], progress=False))

    def serve():
        answers = got["serve"] = []
        vistrain.serve(ctx["run"], port=0, ready=lambda url: post_and_stop(url, path.read_bytes(), answers))

    # one worker, no forked pool: a kernel runs threads of its own (a fork copies their held
    # locks), and one run of this notebook hung in a forked worker; the pools have their own tests
    def stats():
        got["stats"] = sorted(vistrain.stats(DATA, size=28, workers=1))

    def preview():
        got["preview"] = sorted(vistrain.preview(DATA, out=out / "preview.png", size=28))

    def augment_preview():
        got["augment_preview"] = sorted(vistrain.augment_preview(DATA, out=out / "augment.png", size=28))

    def cache_info():
        got["cache_info"] = sorted(vistrain.cache_info())

    def build_report():
        got["build_report"] = str(vistrain.build_report(ctx["run"]))

    def doctor():
        got["doctor"] = type(vistrain.doctor(DATA, workers=1)).__name__

    def pack():
        got["pack"] = sorted(vistrain.pack(DATA, out=out / "shards", size=28, workers=1, progress=False))
        got["version"] = vistrain.__version__

    return {f.__name__: f for f in (make_config, train, load, predict, evaluate, explain, check, lr_find,
                                    cv, compare, export, serve, stats, preview, augment_preview,
                                    cache_info, build_report, doctor, pack)}
'''


STEPS = ["make_config", "train", "load", "predict", "evaluate", "explain", "check", "lr_find", "cv",
         "compare", "export", "serve", "stats", "preview", "augment_preview", "cache_info",
         "build_report", "doctor", "pack"]


def notebook(data, eval_data, out) -> nbformat.NotebookNode:
    cells = [SETUP.format(data=str(data), eval=str(eval_data), out=str(out)), TOUR]
    for n in (1, 2):
        cells += [f"tour = tour_steps({n})"] + [f"tour[{name!r}]()" for name in STEPS]
    cells.append('print("SEEN " + json.dumps(seen, default=str))')
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip())
                                           for c in cells])


@pytest.fixture(scope="module")
def executed(eval_data, tmp_path_factory, acc_env):
    work = tmp_path_factory.mktemp("notebook")
    data = copy_subset(work / "fmnist150", PER_CLASS)
    nb = notebook(data, eval_data, work / "out")
    nbformat.write(nb, work / "tour.ipynb")
    nb = nbformat.read(work / "tour.ipynb", as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"a notebook cell failed:\n{str(err)[-6000:]}")
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    line = next(ln for ln in text.splitlines() if ln.startswith("SEEN "))
    return nb, json.loads(line[len("SEEN "):])["rounds"]


def test_the_kernel_is_this_interpreter(executed, tmp_path):
    nb, _ = executed
    client = NotebookClient(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, vistrain; print(sys.executable); print(vistrain.__file__)")]), kernel_name="python3")
    client.execute()
    printed = client.nb.cells[0].outputs[0]["text"].split()
    assert printed == [sys.executable, vistrain.__file__]


def test_every_public_function_runs_twice_in_one_kernel(executed):
    _, rounds = executed
    assert len(rounds) == 2
    called = {"make_config": "config_is_yaml", "train": "run_repr", "load": "clf_repr",
              "predict": "predict_types"}
    assert set(vistrain.__all__) - {"__version__"} <= set(STEPS)
    for name in STEPS:
        assert called.get(name, name) in rounds[0] and called.get(name, name) in rounds[1], name
    for got in rounds:
        assert got["config_is_yaml"] and got["model_card"]
        assert got["cv"] == 2 and got["compare"] == 2 and got["explain"] == 2
        assert got["serve"] and len(got["serve"][0]["top"]) == 2


def test_predict_takes_paths_pil_arrays_and_tensors_alike(executed):
    _, rounds = executed
    for got in rounds:
        pred = got["predict"]
        top = pred["str"][0]["top"]
        for kind in ("path", "pil", "array", "tensor", "float_tensor"):
            assert [t["class"] for t in pred[kind][0]["top"]] == [t["class"] for t in top], kind
            assert abs(pred[kind][0]["top"][0]["probability"] - top[0]["probability"]) < 1e-6, kind
        assert len(pred["array_batch"]) == 2 and len(pred["mixed"]) == 4 and len(pred["grey"]) == 1
        assert len(pred["folder"]) == PER_CLASS
        assert got["predict_types"] == ["Prediction"] and got["proba_shape"] == [2, len(CLASSES)]
        assert "typo.png" in got["missing"] and got["skipped"] == [None, "no such file or folder"]


def test_results_print_a_few_lines_in_the_notebook(executed):
    _, rounds = executed
    for got in rounds:
        for text in (got["run_repr"], got["clf_repr"]):
            assert len(text.splitlines()) <= 6 and "95% CI" in text and "report.html" in text
