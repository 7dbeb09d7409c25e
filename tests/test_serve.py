"""``vistrain serve``: the dynamic batcher alone, the app in-process, and the real command.

The model is a tiny run trained here in seconds (``vistrain/resnet-tiny`` at 32 px on 3 colour
classes).  In-process requests go through ``httpx.ASGITransport`` (concurrent requests really
share the event loop, so batching can be counted); the end-to-end test starts
``vistrain serve RUN --port 0`` as a subprocess and talks HTTP to it.
"""
from __future__ import annotations

import asyncio
import re
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli_error, make_image_folder
from vistrain.errors import VistrainError
from vistrain.predictor import Classifier
from vistrain.server import DynamicBatcher, ModelLock, create_app
from vistrain.server.batch_policy import batch_policy
from vistrain.server import app as serve_app
from vistrain.workflows import serve as serve_job

CLASSES = ("cat", "dog", "eel")
LIMIT = 64 * 1024  # the in-process app's body limit


# -- fixtures and helpers shared with test_serve_browser.py ---------------------------------------

def train_tiny_run(tmp: Path) -> Path:
    """A 3-class ``vistrain/resnet-tiny`` run at 32 px: 25 Adam steps on 30 coloured images,
    saved as ``train`` saves a run (``model.safetensors`` + ``model.json``).  A few seconds; it
    does not depend on the training pipeline, whose own tests are elsewhere."""
    from vistrain.artifact import save_model
    from vistrain.models import create
    from vistrain.transforms.preprocess import Preprocess
    data = make_image_folder(tmp / "data", classes=CLASSES, per_class=10, size=(36, 32))
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
    files = sorted(data.rglob("*.png"))
    x = pre.normalize(torch.stack([pre.pixels(f) for f in files]))
    y = torch.tensor([CLASSES.index(f.parent.name) for f in files])
    torch.manual_seed(0)
    model, _ = create("vistrain/resnet-tiny", len(CLASSES), pretrained=False, input_size=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine runs these tiny steps 5x faster on one thread
    try:
        for _ in range(25):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(n)
    save_model(tmp / "run", model.eval(), model_name="vistrain/resnet-tiny", classes=list(CLASSES),
               preprocess=pre, model_kwargs={"input_size": 32})
    return tmp / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def clf(run_dir) -> Classifier:
    return Classifier.from_run(run_dir, device="cpu")


def png_bytes(seed: int = 0, size=(48, 40), fmt: str = "PNG") -> bytes:
    """A noisy colour image (noise so that cutting the file in half truncates pixel data)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    arr[..., seed % 3] = 220
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width x height`` pixels in a few bytes: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def huge_png(width: int = 17_000, height: int = 17_000) -> bytes:
    """A valid all-black 1-bit PNG of ``width x height`` (289 MP by default) in about 35 KB: the
    zlib stream is built row by row, never holding the image (decoding it would cost seconds)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row, packer = b"\0" * (1 + (width + 7) // 8), zlib.compressobj(9)  # filter byte + packed bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class Server:
    """``vistrain serve RUN --port 0 ...`` as a subprocess; ``url`` once it answers /healthz."""

    def __init__(self, run_dir: Path, *flags: str, timeout: float = 120.0):
        cmd = [sys.executable, "-m", "vistrain.cli.main", "serve", str(run_dir), "--port", "0", *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        line = self._first_line(timeout)
        assert line.startswith("serving "), line
        self.url = line.split(" on ")[1].split(" ")[0]
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, self.stop()
            time.sleep(0.1)

    def _first_line(self, timeout: float) -> str:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not out or not out[0]:
            self.proc.kill()
            raise AssertionError(f"vistrain serve did not start: {self.proc.stderr.read()[-3000:]}")
        return out[0].strip()

    def stop(self) -> tuple[int, str]:
        """Ctrl-C (SIGINT), as a user stops it; returns (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def predict_top(clf: Classifier, data: bytes, tmp_path: Path, k: int) -> list[dict]:
    path = tmp_path / "same.png"
    path.write_bytes(data)
    return clf.predict(path, top_k=k, progress=False)[0]["top"]


def assert_same_top(got: list[dict], want: list[dict]) -> None:
    assert [t["class"] for t in got] == [t["class"] for t in want]
    assert [t["index"] for t in got] == [t["index"] for t in want]
    np.testing.assert_allclose([t["probability"] for t in got], [t["probability"] for t in want],
                               rtol=0, atol=1e-5)


# -- the batcher, without HTTP ---------------------------------------------------------------------

def test_batcher_batches_concurrent_items_and_keeps_their_order():
    seen = []

    def double(items):
        seen.append(len(items))
        time.sleep(0.02)  # a model call: items arriving meanwhile wait for the next batch
        return np.asarray(items) * 2

    b = DynamicBatcher(double, max_batch=8, wait_ms=20)
    try:
        futures = [None] * 40
        def submit(i):
            futures[i] = b.submit(i)
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [int(f.result(10)) for f in futures] == [2 * i for i in range(40)]
    finally:
        b.close()
    assert b.items == 40 and sum(seen) == 40 and b.calls == len(seen)
    assert max(seen) <= 8 and b.calls <= 10, seen  # 40 items in batches, not 40 calls


def test_announced_batching_runs_a_lone_item_at_once_and_waits_for_announced_ones():
    b = DynamicBatcher(lambda items: list(items), max_batch=8, wait_ms=300, wait_for="announced")
    try:
        t = time.perf_counter()
        assert [b.submit(i).result(5) for i in range(5)] == [0, 1, 2, 3, 4]
        assert time.perf_counter() - t < 0.5  # nothing announced: no 300 ms wait per item
        assert b.batch_sizes == [1] * 5
        results = {}

        announced = threading.Barrier(4)

        def late(i):  # announced, then submitted 50 ms later (a request still decoding)
            with b.incoming():
                announced.wait()
                time.sleep(0.05)
            results[i] = b.submit(i).result(5)

        threads = [threading.Thread(target=late, args=(i,)) for i in range(3)]
        for t_ in threads:
            t_.start()
        announced.wait()  # all three on their way
        first = b.submit(10)
        for t_ in threads:
            t_.join()
        assert first.result(5) == 10 and results == {0: 0, 1: 1, 2: 2}
        assert b.batch_sizes[5:] == [4], b.batch_sizes  # the batch waited for the announced three
    finally:
        b.close()
    with pytest.raises(ValueError, match="wait_for"):
        DynamicBatcher(len, wait_for="sometimes")


def test_batcher_max_batch_1_is_one_call_per_item_and_errors_reach_every_item():
    b = DynamicBatcher(lambda items: [x + 1 for x in items], max_batch=1, wait_ms=50)
    try:
        t = time.perf_counter()
        assert [b.submit(i).result(5) for i in range(5)] == [1, 2, 3, 4, 5]
        assert time.perf_counter() - t < 0.25  # max_batch 1: no waiting for company
        assert b.calls == 5 and b.batch_sizes == [1] * 5
    finally:
        b.close()

    def broken(items):
        raise ValueError("model failed")
    b = DynamicBatcher(broken, max_batch=4, wait_ms=10)
    try:
        futures = [b.submit(i) for i in range(3)]
        for f in futures:
            with pytest.raises(ValueError, match="model failed"):
                f.result(5)
        assert b.alive()  # the worker survives a failing batch
    finally:
        b.close()
    assert not b.alive()
    with pytest.raises(ValueError):
        DynamicBatcher(len, max_batch=0)


def test_model_workers_run_batches_side_by_side_and_count_every_item():
    both_inside = threading.Barrier(2, timeout=5)  # passes only when two calls run at once

    def side_by_side(items):
        both_inside.wait()
        return [x * 10 for x in items]
    b = DynamicBatcher(side_by_side, max_batch=1, wait_ms=0, workers=2)
    try:
        futures = [b.submit(i) for i in range(6)]
        assert [f.result(10) for f in futures] == [0, 10, 20, 30, 40, 50]
        assert b.calls == 6 and b.items == 6 and sorted(b.batch_sizes) == [1] * 6
        assert b.alive()
    finally:
        b.close()
    assert not b.alive()
    with pytest.raises(ValueError, match="workers"):
        DynamicBatcher(len, workers=0)


class FakeModel:
    """A classifier whose model call takes ``seconds`` (counted in ``calls``)."""
    classes = ["a", "b"]

    def __init__(self, seconds: float, engine: str = "onnxruntime"):
        self.seconds, self.engine, self.calls = seconds, engine, 0

    def predict_pixels(self, pixels):
        self.calls += 1
        time.sleep(self.seconds)
        return np.full((len(pixels), 2), 0.5)


def test_batching_is_on_for_a_costly_model_call_and_off_for_a_cheap_one():
    slow = batch_policy(FakeModel(0.012), (3, 8, 8), engine_max_batch=32)
    assert slow.max_batch == 32 and slow.reason.startswith("on:") and slow.call_ms >= 10
    assert "--max-batch 1" in slow.reason
    fast = batch_policy(FakeModel(0.0), (3, 8, 8), engine_max_batch=32)
    assert fast.max_batch == 1 and fast.reason.startswith("off:") and "--max-batch 32" in fast.reason
    unmeasured = FakeModel(0.012, engine="openvino")
    policy = batch_policy(unmeasured, (3, 8, 8), engine_max_batch=1)
    assert policy.max_batch == 1 and "not measured" in policy.reason and unmeasured.calls == 0
    given = FakeModel(0.0)
    assert batch_policy(given, (3, 8, 8), engine_max_batch=32, max_batch=4).max_batch == 4
    assert given.calls == 0  # a given max_batch costs no measurement


def test_model_lock_lets_calls_share_and_an_exclusive_user_wait_for_them_and_go_first():
    lock, events = ModelLock(), []
    shared_in, release = threading.Event(), threading.Event()

    def call():
        with lock.shared():
            shared_in.set()
            release.wait(5)
            events.append("call done")

    def explain():
        with lock.exclusive():
            events.append("explain")

    def late_call():
        with lock.shared():
            events.append("late call")
    first = threading.Thread(target=call)
    first.start()
    assert shared_in.wait(5)
    with lock.shared():  # a second call runs beside the first
        pass
    waiting = threading.Thread(target=explain)
    waiting.start()
    time.sleep(0.05)
    late = threading.Thread(target=late_call)
    late.start()
    time.sleep(0.05)
    assert events == []  # explain waits for the running call; the late call waits behind explain
    release.set()
    for t in (first, waiting, late):
        t.join(5)
    assert events == ["call done", "explain", "late call"]


# -- the app in-process ----------------------------------------------------------------------------

def call(app, method: str, url: str, **kwargs) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.request(method, url, **kwargs)
    return asyncio.run(go())


@pytest.fixture(scope="module")
def app(clf):
    app = create_app(clf, max_batch=32, wait_ms=30, max_body_bytes=LIMIT)
    yield app
    app.state.service.close()


def test_predict_multipart_and_raw_body_equal_classifier_predict(app, clf, tmp_path):
    data = png_bytes(1)
    want = predict_top(clf, data, tmp_path, 2)
    r = call(app, "POST", "/predict?top_k=2", files={"file": ("shoe.png", data, "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["image"] == "shoe.png" and set(r.json()) == {"image", "top"}
    assert_same_top(r.json()["top"], want)
    raw = call(app, "POST", "/predict", content=data, headers={"content-type": "image/png"})
    assert raw.status_code == 200 and len(raw.json()["top"]) == 3  # default 5, capped at K
    assert_same_top(raw.json()["top"][:2], want)
    big_k = call(app, "POST", "/predict?top_k=99", content=data)
    assert [t["class"] for t in big_k.json()["top"]] == [t["class"] for t in raw.json()["top"]]


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(app, clf, tmp_path):
    images = [png_bytes(seed) for seed in range(16)]
    want = [predict_top(clf, data, tmp_path, 3) for data in images]
    batcher = app.state.service.batcher
    calls, items = batcher.calls, batcher.items

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/predict?top_k=3", files={"file": (f"{i}.png", d)})
                                          for i, d in enumerate(images)))
    responses = asyncio.run(go())
    for i, (r, w) in enumerate(zip(responses, want)):
        assert r.status_code == 200 and r.json()["image"] == f"{i}.png"
        assert_same_top(r.json()["top"], w)
    assert batcher.items - items == 16
    assert batcher.calls - calls < 16, batcher.batch_sizes  # batched: fewer model calls than requests
    assert max(batcher.batch_sizes) > 1


def test_explain_returns_the_gradcam_overlay_of_the_predicted_class(app, clf):
    data = png_bytes(2)
    r = call(app, "POST", "/explain", files={"file": ("a.png", data)})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(r.content))
    assert png.size == (clf.preprocess.size, clf.preprocess.size) and png.mode == "RGB"
    top1 = call(app, "POST", "/predict?top_k=1", content=data).json()["top"][0]
    assert r.headers["x-vistrain-class"] == top1["class"]
    assert abs(float(r.headers["x-vistrain-probability"]) - top1["probability"]) < 1e-4
    for method in ("gradcam++", "layercam"):
        assert call(app, "POST", "/explain", params={"method": method}, content=data).status_code == 200
    bad = call(app, "POST", "/explain?method=saliency", content=data)
    assert bad.status_code == 422 and "gradcam" in bad.json()["error"]


def test_healthz_metadata_and_page(app, clf):
    health = call(app, "GET", "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    meta = call(app, "GET", "/metadata").json()
    assert meta["classes"] == list(CLASSES) and meta["num_classes"] == 3
    assert meta["preprocess"] == clf.preprocess.to_dict()
    assert meta["model"] == "vistrain/resnet-tiny" and meta["engine"] == getattr(clf, "engine", "torch")
    assert {"vistrain", "torch", "python"} <= set(meta["versions"]) and meta["trained_with"]
    assert meta["batching"] == {"max_batch": 32, "wait_ms": 30, "model_workers": 1,
                                "decided": "set: --max-batch 32"}
    page = call(app, "GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    text = page.text
    assert 'id="file"' in text and 'id="top1"' in text and "<script>" in text
    assert "http://" not in text and "https://" not in text and "src=\"//" not in text


def bad_requests() -> list[tuple[str, dict, tuple[int, ...], str]]:
    """``(url, httpx arguments, accepted statuses, a word the error must contain)``."""
    good = png_bytes(3)
    return [
        ("/predict", {"content": b"just some text, not an image"}, (415,), "not an image"),
        ("/predict", {"files": {"file": ("notes.txt", b"hello")}}, (415,), "notes.txt"),
        ("/predict", {"content": good[: len(good) // 2]}, (400,), "truncated"),
        ("/predict", {"content": png_header_only(30000, 30000)}, (413,), "--max-image-pixels"),
        ("/predict", {"content": png_header_only(20000, 20000)}, (413,), "--max-image-pixels"),
        ("/predict", {"content": png_header_only(17000, 17000)}, (413,), "40,000,000 pixels"),
        ("/predict", {"content": b"\0" * (LIMIT + 1)}, (413,), "limit"),
        ("/predict", {"files": {"other": ("a.png", good)}}, (400,), "'file'"),
        ("/predict", {"data": {"file": "text"}, "files": {"x": ("a", b"1")}}, (400,), "'file'"),
        ("/predict", {"content": b""}, (400,), "empty"),
        ("/predict", {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
         (400,), "multipart"),
        ("/predict?top_k=0", {"content": good}, (422,), "top_k"),
        ("/predict?top_k=-2", {"content": good}, (422,), "top_k"),
        ("/predict?top_k=abc", {"content": good}, (422,), "top_k"),
        ("/predict?top_k=1.5", {"content": good}, (422,), "top_k"),
        ("/explain", {"content": b"GIF89a broken"}, (400, 415), "upload"),
    ]


@pytest.mark.parametrize("case", range(len(bad_requests())))
def test_bad_input_is_a_json_4xx_and_the_server_stays_healthy(app, case):
    url, kwargs, statuses, word = bad_requests()[case]
    r = call(app, "POST", url, **kwargs)
    assert r.status_code in statuses, (r.status_code, r.text)
    assert set(r.json()) == {"error"} and word in r.json()["error"], r.json()
    assert call(app, "GET", "/healthz").json()["status"] == "ok"
    assert call(app, "POST", "/predict", content=png_bytes(4)).status_code == 200


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on damaged TIFF tags
def test_damaged_files_of_every_format_are_decoded_or_refused_with_4xx(app):
    """600 seeded mutations (bytes changed, files cut) of six formats: each upload decodes or is a
    4xx :class:`HTTPProblem`, never another exception (which would be a 500)."""
    service, rng = app.state.service, np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
    outcomes = set()
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        for _ in range(100):
            data = bytearray(buf.getvalue())
            for _ in range(rng.integers(1, 8)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
            if rng.random() < 0.3:
                data = data[: rng.integers(1, len(data))]
            try:
                service.decode("x", bytes(data))
                outcomes.add("decoded")
            except serve_app.HTTPProblem as err:
                assert 400 <= err.status < 500
                outcomes.add(err.status)
    assert {"decoded", 400, 415} <= outcomes


def test_body_limit_is_enforced_while_reading(app):
    """A body without Content-Length is refused after about ``LIMIT`` bytes, not read to its end."""
    sent = []

    async def endless():
        for _ in range(10_000):  # 640 MB if it were read to the end
            sent.append(1)
            yield b"\0" * 65536

    r = call(app, "POST", "/predict", content=endless())
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert len(sent) <= 3, len(sent)
    declared = call(app, "POST", "/predict", content=b"\0" * 10, headers={"content-length": str(LIMIT + 1)})
    assert declared.status_code == 413


def test_a_huge_image_is_refused_from_its_header_before_any_decoding(app, monkeypatch):
    """A 35 KB PNG claiming 17,000 x 17,000 pixels (289 MP, seconds and over a gigabyte to
    decode): one JSON 413 naming the limit and the flag, and the decoder is never called."""
    data = huge_png()
    assert len(data) < 100_000
    decoded = []
    monkeypatch.setattr(type(app.state.service.clf.preprocess), "array",
                        lambda self, path: decoded.append(path))
    t = time.perf_counter()
    r = call(app, "POST", "/predict", files={"file": ("huge.png", data)})
    assert time.perf_counter() - t < 2
    assert r.status_code == 413 and set(r.json()) == {"error"}
    # the size is named where the header check reads it; where Pillow's own guard (its limit is
    # process-wide, set by whichever run came first) fires in Image.open, the count alone
    assert re.fullmatch(r"huge\.png: (17000x17000 = )?289,000,000 pixels is over this server's "
                        r"limit of 40,000,000 pixels; send a smaller image, or start the "
                        r"server with a larger --max-image-pixels", r.json()["error"])
    assert call(app, "POST", "/explain", content=data).status_code == 413
    assert decoded == []


def test_the_pixel_limit_is_the_servers_own_and_inclusive(clf):
    small = create_app(clf, max_image_pixels=48 * 40)  # png_bytes is 48 x 40
    try:
        assert call(small, "POST", "/predict", content=png_bytes(1)).status_code == 200
        bigger = call(small, "POST", "/predict", content=png_bytes(1, size=(48, 41)))
        assert bigger.status_code == 413 and "limit of 1,920 pixels" in bigger.json()["error"]
        assert call(small, "GET", "/metadata").json()["max_image_pixels"] == 1920
    finally:
        small.state.service.close()


def test_at_most_decode_threads_uploads_are_decoded_at_once(clf):
    bounded = create_app(clf, decode_threads=2)
    service, lock, running, most = bounded.state.service, threading.Lock(), [0], [0]
    decode = service.decode

    def slow_decode(name, data):  # a decode that takes a while: the others must wait their turn
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.15)
            return decode(name, data)
        finally:
            with lock:
                running[0] -= 1
    service.decode = slow_decode

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bounded), base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/predict", content=png_bytes(i)) for i in range(6)))
    try:
        responses = asyncio.run(go())
    finally:
        service.close()
    assert [r.status_code for r in responses] == [200] * 6
    assert most[0] == 2
    assert create_app(clf).state.service.decode_threads == serve_app.DEFAULT_DECODE_THREADS == 2


def test_a_tta_server_answers_the_tta_probabilities(run_dir, clf, tmp_path):
    flip = Classifier.from_run(run_dir, device="cpu", tta="flip")
    flip_app = create_app(flip)
    data = png_bytes(6)
    try:
        got = call(flip_app, "POST", "/predict?top_k=3", content=data).json()["top"]
        assert_same_top(got, predict_top(flip, data, tmp_path, 3))
        plain = predict_top(clf, data, tmp_path, 3)
        assert abs(got[0]["probability"] - plain[0]["probability"]) > 1e-6  # TTA changed the answer
        cam = call(flip_app, "POST", "/explain", content=data)  # explains /predict's answer
        assert cam.headers["x-vistrain-class"] == got[0]["class"]
        assert abs(float(cam.headers["x-vistrain-probability"]) - got[0]["probability"]) < 1e-5
        assert call(flip_app, "GET", "/metadata").json()["tta"] == "flip"
    finally:
        flip_app.state.service.close()


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_requests_latency_errors_batches_and_model_calls(clf):
    fresh = create_app(clf, max_batch=8, wait_ms=50)
    try:
        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fresh), base_url="http://t") as c:
                answers = await asyncio.gather(*(c.post("/predict", content=png_bytes(i)) for i in range(4)))
                answers += [await c.post("/predict", content=b"not an image"), await c.get("/nope"),
                            await c.get("/nope/../../etc")]
                return answers, await c.get("/metrics")
        answers, r = asyncio.run(go())
        assert [a.status_code for a in answers] == [200] * 4 + [415, 404, 404]
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text, batcher = r.text, fresh.state.service.batcher
        assert metric(text, "vistrain_http_requests_total", method="POST", path="/predict", status="200") == 4
        assert metric(text, "vistrain_http_errors_total", path="/predict", status="415") == 1
        assert metric(text, "vistrain_http_errors_total", path="other", status="404") == 2  # not each path
        assert metric(text, "vistrain_http_request_duration_seconds_count", path="/predict") == 5
        assert metric(text, "vistrain_model_calls_total") == batcher.calls < 4  # batched
        assert metric(text, "vistrain_model_images_total") == 4
        assert metric(text, "vistrain_batch_size_count") == batcher.calls
        assert metric(text, "vistrain_batch_size_sum") == 4
    finally:
        fresh.state.service.close()


def test_one_json_access_log_line_per_request(app, caplog):
    import json
    caplog.set_level("INFO", logger="vistrain.access")
    call(app, "POST", "/predict?top_k=1", content=png_bytes(1))
    call(app, "POST", "/predict", content=b"not an image")
    lines = [r.getMessage() for r in caplog.records if r.name == "vistrain.access"]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    first, second = (json.loads(line) for line in lines)
    assert (first["method"], first["path"], first["status"]) == ("POST", "/predict", 200)
    assert second["status"] == 415 and first["ms"] > 0 and set(first) == {"method", "path", "status",
                                                                          "ms", "client"}


def test_unknown_paths_and_methods_answer_json(app):
    assert call(app, "GET", "/nope").json() == {"error": "GET /nope: Not Found"}
    r = call(app, "GET", "/predict")
    assert r.status_code == 405 and "error" in r.json()


def test_missing_deploy_extra_is_one_line_naming_the_install(monkeypatch, clf):
    monkeypatch.setitem(sys.modules, "starlette.applications", None)  # import fails
    with pytest.raises(VistrainError, match=r"pip install 'vistrain\[serve\]'"):
        create_app(clf)


# -- the workflow and the command ------------------------------------------------------------------

def test_loopback_detection_and_the_non_loopback_warning(run_dir, monkeypatch, caplog):
    assert serve_job.is_loopback("127.0.0.1") and serve_job.is_loopback("localhost")
    assert serve_job.is_loopback("::1") and serve_job.is_loopback("127.0.0.5")
    assert not serve_job.is_loopback("0.0.0.0") and not serve_job.is_loopback("192.168.1.4")
    ran, urls = [], []
    monkeypatch.setattr(serve_job, "bind", lambda host, port: serve_job.socket.create_server(("127.0.0.1", 0)))
    import uvicorn
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append(self.config.app))
    caplog.set_level("WARNING")
    serve_job.serve(run_dir, host="0.0.0.0", port=0, ready=urls.append)
    warnings = [r.getMessage() for r in caplog.records if "reachable from other machines" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert ran and urls and urls[0].startswith("http://0.0.0.0:")
    ran[0].state.service.close()
    caplog.clear()
    serve_job.serve(run_dir, host="127.0.0.1", port=0, engine="torch", ready=urls.append)
    assert not [r for r in caplog.records if "reachable" in r.getMessage()]
    assert ran[1].state.service.metadata()["engine"] == "torch"
    ran[1].state.service.close()


def test_cli_json_prints_one_document_with_the_address(run_dir, monkeypatch, capsys):
    import json

    import uvicorn
    from vistrain.cli.main import main
    apps = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: apps.append(self.config.app))
    assert main(["serve", str(run_dir), "--port", "0", "--max-batch", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["url"].startswith("http://127.0.0.1:") and doc["max_batch"] == 4
    assert doc["tta"] == "none"
    service = apps[0].state.service
    assert service.batcher.max_batch == 4 and service.clf.tta == "none"
    assert (service.max_image_pixels, service.decode_threads) == (40_000_000, 2)  # as --help says
    service.close()


def test_cli_passes_tta_and_the_limits_to_the_server(run_dir, tmp_path, monkeypatch, capsys):
    import uvicorn
    from vistrain.cli.main import main
    from vistrain.imageio import read as image_io
    apps = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: apps.append(self.config.app))
    monkeypatch.setattr(image_io, "MAX_PIXELS", image_io.MAX_PIXELS)  # serve sets the process limit
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, str(image_io.MAX_PIXELS))
    monkeypatch.setattr(image_io.Image, "MAX_IMAGE_PIXELS", image_io.Image.MAX_IMAGE_PIXELS)
    assert main(["serve", str(run_dir), "--port", "0", "--tta", "flip", "--max-image-pixels",
                 "5000000", "--decode-threads", "3", "--model-workers", "2"]) == 0
    service = apps[0].state.service
    try:
        assert service.clf.tta == "flip" and service.metadata()["tta"] == "flip"
        assert service.max_image_pixels == 5_000_000 == image_io.max_image_pixels()
        assert service.decode_threads == 3
        assert service.metadata()["batching"]["model_workers"] == 2 and len(service.batcher._threads) == 2
        data = png_bytes(6)
        want = predict_top(Classifier.from_run(run_dir, device="cpu", tta="flip"), data, tmp_path, 2)
        assert_same_top(call(apps[0], "POST", "/predict?top_k=2", content=data).json()["top"], want)
    finally:
        service.close()


@pytest.mark.parametrize("argv, word", [
    (["--port", "70000"], "port"), (["--max-batch", "0"], "max_batch"),
    (["--max-body-mb", "0"], "max_body_mb"), (["--wait-ms", "-1"], "wait_ms"),
    (["--max-image-pixels", "0"], "max_image_pixels"), (["--decode-threads", "0"], "decode_threads"),
    (["--model-workers", "0"], "model_workers"), (["--model-workers", "17"], "model_workers")])
def test_cli_refuses_bad_options_in_one_line(capsys, run_dir, argv, word):
    assert word in cli_error(capsys, ["serve", str(run_dir), *argv])


def test_cli_refuses_a_missing_run_and_an_engine_without_export(capsys, tmp_path, run_dir):
    assert "run directory not found" in cli_error(capsys, ["serve", str(tmp_path / "nope"), "--port", "0"])
    assert "export" in cli_error(capsys, ["serve", str(run_dir), "--engine", "onnxruntime", "--port", "0"])


@pytest.mark.slow
def test_vistrain_serve_end_to_end(run_dir, clf, tmp_path):
    """The real command: every endpoint, bad input, batching and Ctrl-C, over localhost HTTP."""
    server = Server(run_dir, "--max-body-mb", "0.25", "--wait-ms", "20", "--max-batch", "32")
    try:
        url = server.url
        assert url.startswith("http://127.0.0.1:")
        data = png_bytes(5)
        r = httpx.post(f"{url}/predict?top_k=3", files={"file": ("x.png", data)}, timeout=30)
        assert r.status_code == 200
        assert_same_top(r.json()["top"], predict_top(clf, data, tmp_path, 3))
        cam = httpx.post(f"{url}/explain", content=data, timeout=30)
        assert cam.status_code == 200 and cam.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert httpx.get(f"{url}/metadata").json()["classes"] == list(CLASSES)
        assert "<script>" in httpx.get(f"{url}/").text
        for body, status in ((b"not an image", 415), (data[:200], 400), (huge_png(), 413),
                             (png_header_only(30000, 30000), 413), (b"\0" * 300_000, 413)):
            bad = httpx.post(f"{url}/predict", content=body, timeout=30)
            assert bad.status_code == status and "error" in bad.json(), bad.text
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:  # leaves mid-upload
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n\x89PNG")
        before = httpx.get(f"{url}/healthz").json()
        results = [None] * 16
        def post(i):
            results[i] = httpx.post(f"{url}/predict", content=png_bytes(i), timeout=60)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r is not None and r.status_code == 200 for r in results)
        after = httpx.get(f"{url}/healthz").json()
        assert after["status"] == "ok" and after["images"] - before["images"] == 16
        assert after["model_calls"] - before["model_calls"] < 16
        metrics = httpx.get(f"{url}/metrics").text
        assert metric(metrics, "vistrain_model_images_total") == after["images"]
        assert metric(metrics, "vistrain_http_errors_total", path="/predict", status="413") == 3
    finally:
        code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err[-3000:]
    access = [line for line in err.splitlines() if line.startswith('{"method": "POST", "path": "/predict"')]
    assert len(access) >= 16 + 6, err[-3000:]  # one line per request, on stderr


@pytest.mark.parametrize("kwargs, word", [({"tta": "mirror"}, "tta"), ({"decode_threads": 0}, "decode_threads"),
                                          ({"max_image_pixels": 2.5}, "max_image_pixels")])
def test_the_api_refuses_bad_serve_options_in_one_line_before_loading(kwargs, word, tmp_path):
    with pytest.raises(VistrainError, match=word) as err:
        serve_job.serve(tmp_path / "no-run-here", port=0, **kwargs)  # refused before the run is read
    assert "\n" not in str(err.value)
