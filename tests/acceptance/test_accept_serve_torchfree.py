"""Serving and predicting an export where PyTorch cannot be imported, at the shipped scale.

``vistrain/resnet20`` is trained on the 2,000 shipped images and exported with the command line;
then ``vistrain serve RUN`` and ``vistrain serve MODEL.onnx``, ``vistrain predict MODEL.onnx`` and
a script calling ``vistrain.load("model.onnx")`` run in processes whose ``sitecustomize`` makes
``import torch``, ``timm`` and ``torchvision`` fail (and records at exit that none was loaded).
Their answers must be those of ``vistrain predict RUN --engine onnxruntime`` in a normal process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from .acceptlib import CLASSES, SHIPPED, assert_ok, vistrain

SITECUSTOMIZE = textwrap.dedent("""
    import atexit, os, sys
    BLOCKED = ("torch", "timm", "torchvision")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())

    @atexit.register
    def record():
        with open(os.environ["TORCHFREE_REPORT"], "a") as f:
            f.write(repr(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)) + "\\n")
""")


@pytest.fixture(scope="module")
def exported_run(acc_env, shipped, runs) -> Path:
    out = runs / "resnet20"
    assert_ok(vistrain("train", shipped, "--out", out, "--model", "vistrain/resnet20", "--epochs", 1,
                       "--set", "preprocess.size=28", "--set", "data.num_workers=2"))
    assert_ok(vistrain("export", out))
    return out


@pytest.fixture
def blocked_env(tmp_path) -> dict:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "TORCHFREE_REPORT": str(tmp_path / "loaded.txt")}


def loaded_lines(env: dict) -> list[str]:
    return Path(env["TORCHFREE_REPORT"]).read_text().splitlines()


def assert_same_tops(got: list[dict], want: list[dict]) -> None:
    """The same images, classes and order; probabilities within 1e-6 (ONNX Runtime's thread
    count may differ between the processes, and with it the order of its sums)."""
    assert [p["image"] for p in got] == [p["image"] for p in want]
    for g, w in zip(got, want):
        assert [t["class"] for t in g["top"]] == [t["class"] for t in w["top"]]
        assert max(abs(a["probability"] - b["probability"]) for a, b in zip(g["top"], w["top"])) < 1e-6


def images() -> list[Path]:
    return [sorted((SHIPPED / c).glob("*.png"))[-1] for c in CLASSES]  # one per class


class BlockedServer:
    """``vistrain serve TARGET --port 0`` with torch blocked; ``url`` once it listens."""

    def __init__(self, target: Path, env: dict):
        cmd = [sys.executable, "-m", "vistrain.cli.main", "serve", str(target), "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **env})
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(180)
        line = out[0].strip() if out else ""
        assert line.startswith("serving "), (line, self.proc.poll())
        self.url = line.split(" on ")[1].split(" ")[0]

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(2)  # Ctrl-C: uvicorn's graceful shutdown
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.mark.parametrize("what", ["run", "file"])
def test_serve_without_torch_answers_as_the_onnx_engine(exported_run, blocked_env, what):
    target = exported_run if what == "run" else exported_run / "export" / "model.onnx"
    files = images()
    want = assert_ok(vistrain("predict", exported_run, *files, "--engine", "onnxruntime", "--json",
                              "--top-k", 3)).json()
    server = BlockedServer(target, blocked_env)
    try:
        answers: list = [None] * len(files)

        def post(i: int) -> None:
            answers[i] = httpx.post(f"{server.url}/predict?top_k=3", content=files[i].read_bytes(),
                                    timeout=120)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(files))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for got, expected in zip(answers, want["predictions"]):
            assert got.status_code == 200, got.text
            assert [t["class"] for t in got.json()["top"]] == [t["class"] for t in expected["top"]]
            for a, b in zip(got.json()["top"], expected["top"]):
                assert abs(a["probability"] - b["probability"]) < 1e-6
        meta = httpx.get(f"{server.url}/metadata", timeout=30).json()
        assert meta["engine"] == "onnxruntime" and meta["classes"] == CLASSES
        assert meta["model"] == "vistrain/resnet20"
        explain = httpx.post(f"{server.url}/explain", content=files[0].read_bytes(), timeout=30)
        assert explain.status_code == 501 and len(explain.text.splitlines()) == 1
        assert "PyTorch" in explain.json()["error"]
        time.sleep(0.2)
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert f'vistrain_http_requests_total{{method="POST",path="/predict",status="200"}} {len(files)}.0' in metrics
        assert 'vistrain_http_errors_total{path="/explain",status="501"} 1.0' in metrics
        assert f"vistrain_model_images_total {len(files)}.0" in metrics
    finally:
        code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert loaded_lines(blocked_env) == ["[]"]


def test_predict_and_load_an_onnx_file_without_torch(exported_run, blocked_env, tmp_path):
    onnx_file = exported_run / "export" / "model.onnx"
    files = images()
    want = assert_ok(vistrain("predict", exported_run, *files, "--engine", "onnxruntime", "--json")).json()
    got = assert_ok(vistrain("predict", onnx_file, *files, "--json", env=blocked_env)).json()
    assert got["engine"] == "onnxruntime"
    assert_same_tops(got["predictions"], want["predictions"])
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(f"""
        import json, vistrain
        clf = vistrain.load({str(onnx_file)!r})
        preds = clf.predict({[str(f) for f in files]!r}, progress=False)
        print(json.dumps([p.to_dict() for p in preds]))
        print(repr(clf).splitlines()[0])
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **blocked_env}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert_same_tops(json.loads(lines[0]), want["predictions"])
    assert lines[1].startswith("OnnxClassifier")
    refused = vistrain("train", SHIPPED, "--out", tmp_path / "nope", env=blocked_env)
    assert refused.rc == 2 and refused.stderr.strip().splitlines() == [
        "error: vistrain train needs torch, which is not installed; install it with pip install "
        "'vistrain[train]'"], refused.describe()
    assert loaded_lines(blocked_env) == ["[]"] * 3
