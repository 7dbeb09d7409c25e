"""``vistrain serve`` on a run trained from the shipped data: the HTTP answers are ``predict``'s."""
from __future__ import annotations

import threading

import httpx

from test_serve import Server

from .acceptlib import CLASSES, SHIPPED, assert_ok, vistrain


def test_serve_answers_as_predict_does_for_concurrent_clients(scratch_run):
    images = [sorted((SHIPPED / c).glob("*.png"))[-1] for c in CLASSES]  # one per class
    expected = assert_ok(vistrain("predict", scratch_run.dir, *images, "--json", "--top-k", 3)).json()
    server = Server(scratch_run.dir, "--wait-ms", "20")
    try:
        meta = httpx.get(f"{server.url}/metadata", timeout=30).json()
        assert meta["classes"] == CLASSES and meta["model"] == "vistrain/vgg-tiny"
        answers: list = [None] * len(images)

        def post(i: int) -> None:
            with open(images[i], "rb") as f:
                answers[i] = httpx.post(f"{server.url}/predict?top_k=3",
                                        files={"file": (images[i].name, f)}, timeout=120)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for got, want in zip(answers, expected["predictions"]):
            assert got.status_code == 200, got.text
            assert [t["class"] for t in got.json()["top"]] == [t["class"] for t in want["top"]]
            for a, b in zip(got.json()["top"], want["top"]):
                assert abs(a["probability"] - b["probability"]) < 1e-5
        page = httpx.get(f"{server.url}/", timeout=30)
        assert page.status_code == 200 and 'id="file"' in page.text
    finally:
        code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err[-3000:]
