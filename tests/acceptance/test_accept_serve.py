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


def test_serve_with_a_token_describes_itself_and_refuses_strangers(scratch_run, monkeypatch):
    """``vistrain serve --token``: 401 without the bearer token, the answers of predict with it;
    /openapi.json lists the served routes and /docs is the offline page that reads it."""
    token = "acceptance-token-123"
    monkeypatch.delenv("VISTRAIN_TOKEN", raising=False)
    image = sorted((SHIPPED / CLASSES[0]).glob("*.png"))[-1]
    server = Server(scratch_run.dir, "--token", token)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        with open(image, "rb") as f:
            refused = httpx.post(f"{server.url}/predict", files={"file": (image.name, f)}, timeout=60)
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        assert refused.headers["www-authenticate"].startswith("Bearer")
        with open(image, "rb") as f:
            answer = httpx.post(f"{server.url}/predict?top_k=3", files={"file": (image.name, f)},
                                headers=auth, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["top"]) == 3
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200  # no token needed
        assert httpx.get(f"{server.url}/openapi.json", timeout=30).status_code == 401
        doc = httpx.get(f"{server.url}/openapi.json", headers=auth, timeout=30).json()
        assert doc["openapi"].startswith("3.") and "bearer" in doc["components"]["securitySchemes"]
        assert {"/predict", "/explain", "/healthz", "/metadata", "/metrics", "/docs"} <= set(doc["paths"])
        docs = httpx.get(f"{server.url}/docs", timeout=30)
        assert docs.status_code == 200 and "openapi.json" in docs.text
    finally:
        code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err[-3000:]
