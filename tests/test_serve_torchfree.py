"""Serving and predicting without PyTorch: an exported run behind ``vistrain serve`` and
``vistrain.load(model.onnx)`` in a process where ``import torch`` (and timm, torchvision) fails.

The run is a ``vistrain/resnet20`` trained here with the public API (one epoch at 32 px on 45
coloured images) and exported with ``vistrain.export``.  The proof runs in a subprocess whose
first act is to put an import blocker on ``sys.meta_path``: the libraries cannot load there, by
any path, so every line that passes proves the path is torch-free.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vistrain
from conftest import make_image_folder
from vistrain.deploy.classifier import OnnxClassifier
from vistrain.errors import VistrainError
from vistrain.predictor import Classifier

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("a", "b", "c")
TINY = dict(model="vistrain/resnet20", epochs=1, batch_size=16, preprocess={"size": 32},
            data={"num_workers": 0})

# put first in every torch-free subprocess: torch, timm and torchvision cannot be imported there
BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = ("torch", "timm", "torchvision")
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: a torch-free process)",
                                          name=name)
            return None
    sys.meta_path.insert(0, Blocker())
""")

PROOF = BLOCKER + textwrap.dedent("""
    import json, threading, time
    from pathlib import Path
    import httpx, numpy as np
    from PIL import Image
    import vistrain
    from vistrain.workflows import serve as serve_job

    onnx_file, run_dir, image = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    out = {"api": {}}
    for name, source in (("file", onnx_file), ("run", run_dir)):
        clf = vistrain.load(source)
        pred = clf.predict(image, top_k=3, progress=False)[0]
        out["api"][name] = {"engine": clf.engine, "top": pred.to_dict()["top"],
                            "kind": type(clf).__name__}
    out["predict_fn"] = vistrain.predict(onnx_file, [image], progress=False)[0].label
    arr = np.asarray(Image.open(image).convert("RGB"))
    out["array"] = vistrain.load(onnx_file).predict(arr, top_k=3, progress=False)[0].to_dict()["top"]

    urls = []
    threading.Thread(target=serve_job.serve, args=(onnx_file,),
                     kwargs=dict(port=0, ready=urls.append), daemon=True).start()
    for _ in range(600):
        if urls:
            break
        time.sleep(0.05)
    url = urls[0]
    with open(image, "rb") as f:
        data = f.read()
    r = httpx.post(f"{url}/predict?top_k=3", files={"file": (image.name, data)}, timeout=60)
    out["http"] = {"status": r.status_code, "body": r.json()}
    ex = httpx.post(f"{url}/explain", content=data, timeout=60)
    out["explain"] = {"status": ex.status_code, "body": ex.json(), "lines": len(ex.text.splitlines())}
    out["metadata"] = httpx.get(f"{url}/metadata", timeout=60).json()
    out["metrics"] = httpx.get(f"{url}/metrics", timeout=60).text
    out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision"))
    print(json.dumps(out))
""")

@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A 3-class resnet20 run (public API, one epoch) with its ONNX export."""
    tmp = tmp_path_factory.mktemp("torchfree")
    data = make_image_folder(tmp / "data", classes=CLASSES, per_class=15, size=(36, 32))
    run = vistrain.train(data, out=tmp / "run", **TINY).run_dir
    vistrain.export(run, progress=False)
    assert (run / "export" / "model.onnx").is_file()
    return run

@pytest.fixture(scope="module")
def image(exported) -> Path:
    return sorted((exported.parent / "data" / "b").glob("*.png"))[0]

def run_blocked(code: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)

def test_serving_and_predicting_an_export_never_import_torch(exported, image):
    onnx_file = exported / "export" / "model.onnx"
    res = run_blocked(PROOF, onnx_file, exported, image)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    want = Classifier.from_run(exported, engine="onnxruntime").predict(image, top_k=3, progress=False)[0]
    for name in ("file", "run"):
        got = out["api"][name]
        assert got["kind"] == "OnnxClassifier" and got["engine"] == "onnxruntime"
        assert [t["class"] for t in got["top"]] == [s.label for s in want.top_k]
        np.testing.assert_allclose([t["probability"] for t in got["top"]],
                                   [s.probability for s in want.top_k], rtol=0, atol=1e-6)
    assert out["array"] == out["api"]["file"]["top"]  # an array is predicted as its PNG is
    assert out["predict_fn"] == want.label
    assert out["http"]["status"] == 200 and out["http"]["body"]["top"] == out["api"]["file"]["top"]
    assert out["explain"]["status"] == 501 and out["explain"]["lines"] == 1
    assert "PyTorch" in out["explain"]["body"]["error"] and "serve the run folder" in out["explain"]["body"]["error"]
    assert out["metadata"]["engine"] == "onnxruntime" and out["metadata"]["classes"] == list(CLASSES)
    assert 'vistrain_http_requests_total{method="POST",path="/predict",status="200"} 1.0' in out["metrics"]
    assert 'vistrain_http_errors_total{path="/explain",status="501"} 1.0' in out["metrics"]
    assert "vistrain_model_images_total" in out["metrics"]

def test_onnx_file_predicts_as_the_run_folders_onnx_engine(exported, image, tmp_path):
    """Same probabilities, same Prediction type, in-process (torch present but not used)."""
    onnx_file = exported / "export" / "model.onnx"
    bare = vistrain.load(onnx_file)
    run = Classifier.from_run(exported, engine="onnxruntime")
    assert isinstance(bare, OnnxClassifier) and bare.classes == run.classes
    images = sorted((exported.parent / "data").rglob("*.png"))[:12]
    np.testing.assert_allclose(bare.predict_proba(images), run.predict_proba(images), rtol=0, atol=1e-6)
    assert [p.label for p in bare.predict(images, progress=False)] == \
           [p.label for p in run.predict(images, progress=False)]
    flip = vistrain.load(onnx_file, tta="flip").predict_proba(images[:3])
    np.testing.assert_allclose(flip, Classifier.from_run(exported, engine="onnxruntime", tta="flip")
                               .predict_proba(images[:3]), rtol=0, atol=1e-6)
    copy = tmp_path / "model.onnx"
    copy.write_bytes(onnx_file.read_bytes())  # a file moved away from its run still works alone
    assert vistrain.predict(copy, images[:2], progress=False)[0].label == run.predict(images[0])[0].label

def test_what_needs_torch_is_refused_in_one_line_for_an_onnx_file(exported, tmp_path):
    onnx_file = exported / "export" / "model.onnx"
    for kwargs, word in (({"engine": "torch"}, "PyTorch"), ({"device": "cuda"}, "CPU"),
                         ({"tta": "flip+crops"}, "PyTorch")):
        with pytest.raises(VistrainError, match=word) as err:
            vistrain.load(onnx_file, **kwargs)
        assert "\n" not in str(err.value)
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(b"not a graph")
    with pytest.raises(VistrainError, match="damaged"):
        vistrain.load(plain)
    with pytest.raises(VistrainError, match="no such file"):
        vistrain.load(tmp_path / "gone.onnx")

def test_a_run_without_export_and_without_torch_says_to_export(exported, tmp_path):
    """Where torch is missing, a run folder needs its export (one line naming `vistrain export`)
    and a training job says which extra to install (one line, also an ImportError)."""
    bare_run = tmp_path / "run"
    bare_run.mkdir()
    for name in ("model.json", "model.safetensors"):
        (bare_run / name).write_bytes((exported / name).read_bytes())
    code = BLOCKER + textwrap.dedent("""
        import vistrain
        from vistrain.errors import VistrainError
        try:
            vistrain.load(sys.argv[1])
        except VistrainError as err:
            print(err)
        try:
            vistrain.train
        except ImportError as err:
            print(isinstance(err, VistrainError), err)
    """)
    res = run_blocked(code, bare_run)
    assert res.returncode == 0, res.stderr[-2000:]
    line, train = res.stdout.strip().splitlines()
    assert "vistrain export" in line and "not found" in line, line
    assert train == ("True vistrain.train needs torch, which is not installed; install it with pip "
                     "install 'vistrain[train]'")


def test_batching_is_decided_on_the_served_model_and_a_given_max_batch_is_kept(exported, monkeypatch):
    """Not given, ``max_batch`` follows the model call's measured time (vistrain.server.batch_policy:
    a call of >= 2 ms batches, a cheaper one does not), for every engine that batches; the
    decision is in /metadata.  ``max_batch`` given is kept."""
    from vistrain.server import batch_policy, create_app
    onnx_file = exported / "export" / "model.onnx"
    for clf in (vistrain.load(onnx_file), Classifier.from_run(exported, engine="onnxruntime"),
                Classifier.from_run(exported, engine="torch")):
        for ms, want in ((20.0, 32), (1.0, 1)):
            monkeypatch.setattr(batch_policy, "call_ms", lambda *args, **kwargs: ms)
            service = create_app(clf).state.service
            batching = service.metadata()["batching"]
            assert service.batcher.max_batch == want == batching["max_batch"]
            assert batching["decided"].startswith("on:" if want > 1 else "off:"), batching
            service.close()
    service = create_app(vistrain.load(onnx_file), max_batch=8).state.service
    assert service.batcher.max_batch == 8
    service.close()


def test_the_servers_explain_methods_are_the_cam_methods():
    from vistrain.interpret.cam import METHODS
    from vistrain.server.app import EXPLAIN_METHODS
    assert EXPLAIN_METHODS == METHODS
