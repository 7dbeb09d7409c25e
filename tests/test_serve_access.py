"""``vistrain serve`` access and self-description: the bearer token (``--token``,
``VISTRAIN_TOKEN``), the warning of an open server on the network, ``/openapi.json`` (its paths
derived from the app's routes) and the offline ``/docs`` page.

The model is the tiny run of ``test_serve.py``; requests go in-process through
``httpx.ASGITransport``.
"""
from __future__ import annotations

import pytest
import uvicorn

from test_serve import call, png_bytes, train_tiny_run
from vistrain.cli.main import main
from vistrain.errors import VistrainError
from vistrain.predictor import Classifier
from vistrain.server import create_app
from vistrain.server.auth import OPEN_PATHS, authorized
from vistrain.workflows import serve as serve_job

TOKEN = "s3cret-token-for-tests"
PROTECTED = [("POST", "/predict"), ("POST", "/explain"), ("GET", "/metadata"), ("GET", "/metrics"),
             ("GET", "/openapi.json"), ("GET", "/nowhere")]


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Classifier:
    return Classifier.from_run(train_tiny_run(tmp_path_factory.mktemp("access")), device="cpu")


@pytest.fixture(scope="module")
def run_dir(clf):
    return clf.source


@pytest.fixture(scope="module")
def locked(clf):
    app = create_app(clf, max_batch=4, wait_ms=1, token=TOKEN)
    yield app
    app.state.service.close()


@pytest.fixture(scope="module")
def opened(clf):
    app = create_app(clf, max_batch=4, wait_ms=1)
    yield app
    app.state.service.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize("headers", [{}, bearer("wrong-token-1234"), {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}],
                         ids=["none", "wrong", "no-scheme", "basic"])
def test_without_the_token_every_protected_route_is_401(locked, method, path, headers):
    r = call(locked, method, path, headers=headers, content=png_bytes() if method == "POST" else None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="vistrain"')
    error = r.json()["error"]
    assert "\n" not in error and "Authorization: Bearer TOKEN" in error and "VISTRAIN_TOKEN" in error
    assert TOKEN not in r.text


def test_with_the_token_the_routes_answer(locked):
    auth = bearer(TOKEN)
    r = call(locked, "POST", "/predict?top_k=2", headers=auth, files={"file": ("a.png", png_bytes())})
    assert r.status_code == 200 and len(r.json()["top"]) == 2
    for path in ("/metadata", "/metrics", "/openapi.json"):
        assert call(locked, "GET", path, headers=auth).status_code == 200, path
    assert call(locked, "GET", "/nowhere", headers=auth).status_code == 404
    metrics = call(locked, "GET", "/metrics", headers=auth).text
    assert 'vistrain_http_requests_total{method="GET",path="/metadata",status="401"}' in metrics


def test_pages_and_health_stay_open_with_a_token(locked):
    assert OPEN_PATHS == {"/", "/docs", "/healthz"}
    assert call(locked, "GET", "/healthz").json()["status"] == "ok"
    page = call(locked, "GET", "/")
    assert page.status_code == 200 and 'id="token"' in page.text and "Bearer " in page.text


def test_without_a_token_nothing_asks_for_one(opened):
    assert call(opened, "GET", "/metadata").status_code == 200
    assert call(opened, "POST", "/predict", content=png_bytes()).status_code == 200


def test_token_comparison_and_rules():
    assert authorized(b"Bearer abcdefgh", "abcdefgh") and authorized(b"bearer abcdefgh", "abcdefgh")
    assert not authorized(None, "abcdefgh") and not authorized(b"Bearer abcdefg", "abcdefgh")
    assert not authorized(b"Bearer \xff\xfe", "abcdefgh")  # bytes a client may send
    for bad in ("short", "with space in it", "caf\u00e9-token"):
        with pytest.raises(VistrainError, match="--token"):
            serve_job.resolve_token(bad)


def test_token_from_the_environment_and_the_network_warning(run_dir, monkeypatch, caplog):
    apps = []
    monkeypatch.setattr(serve_job, "bind", lambda host, port: serve_job.socket.create_server(("127.0.0.1", 0)))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: apps.append(self.config.app))
    caplog.set_level("WARNING")
    monkeypatch.delenv("VISTRAIN_TOKEN", raising=False)
    serve_job.serve(run_dir, host="0.0.0.0", port=0, engine="torch", ready=lambda url: None)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [("warning: listening on 0.0.0.0 makes the model reachable from other machines "
                         "without a token: anyone on the network can call it; set one with --token "
                         "TOKEN or the environment variable VISTRAIN_TOKEN (clients then send "
                         "'Authorization: Bearer TOKEN'), or use --host 127.0.0.1 to keep it local")]
    caplog.clear()
    monkeypatch.setenv("VISTRAIN_TOKEN", TOKEN)
    serve_job.serve(run_dir, host="0.0.0.0", port=0, engine="torch", ready=lambda url: None)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert call(apps[1], "GET", "/metadata").status_code == 401
    assert call(apps[1], "GET", "/metadata", headers=bearer(TOKEN)).status_code == 200
    for app in apps:
        app.state.service.close()


def test_cli_token_flag_reaches_the_app(run_dir, monkeypatch, capsys):
    apps = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: apps.append(self.config.app))
    monkeypatch.delenv("VISTRAIN_TOKEN", raising=False)
    assert main(["serve", str(run_dir), "--port", "0", "--engine", "torch", "--token", TOKEN]) == 0
    assert call(apps[0], "GET", "/metrics").status_code == 401
    assert call(apps[0], "GET", "/metrics", headers=bearer(TOKEN)).status_code == 200
    apps[0].state.service.close()
    assert main(["serve", str(run_dir), "--port", "0", "--token", "short"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --token: must be at least 8 characters")


# -- /openapi.json and /docs -----------------------------------------------------------------------

def app_operations(app) -> set[tuple[str, str]]:
    """(method, path) of every route of the Starlette app (HEAD is Starlette's addition to GET)."""
    return {(m.lower(), r.path) for r in app.routes for m in r.methods if m != "HEAD"}


@pytest.mark.parametrize("which", ["opened", "locked"])
def test_openapi_describes_exactly_the_apps_routes(which, request):
    app = request.getfixturevalue(which)
    r = call(app, "GET", "/openapi.json", headers=bearer(TOKEN))
    doc = r.json()
    assert r.status_code == 200 and doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    described = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert described == app_operations(app)
    assert {"/predict", "/explain", "/healthz", "/metadata", "/metrics", "/openapi.json", "/docs"} <= set(doc["paths"])
    for path, item in doc["paths"].items():
        for op in item.values():
            assert op["summary"] and "200" in op["responses"], path
            for code, resp in op["responses"].items():
                assert resp["description"]
                if code != "200":
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "application/octet-stream" in body
    refs = {"Error", "Prediction", "Health", "Metadata"}
    assert refs <= set(doc["components"]["schemas"])
    if which == "locked":
        assert doc["components"]["securitySchemes"]["bearer"] == {
            "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
        assert doc["security"] == [{"bearer": []}]
        assert doc["paths"]["/healthz"]["get"]["security"] == []
        assert "401" in doc["paths"]["/predict"]["post"]["responses"]
    else:
        assert "security" not in doc and "securitySchemes" not in doc["components"]


def test_a_route_without_a_description_is_an_error():
    from types import SimpleNamespace

    from vistrain.server.openapi import schema
    with pytest.raises(ValueError, match="GET /new has no OpenAPI description"):
        schema([SimpleNamespace(path="/new", methods={"GET"})], title="t", version="1",
               num_classes=2, explain_methods=("gradcam",), token=False)


def test_docs_page_is_offline_and_reads_the_schema(locked):
    r = call(locked, "GET", "/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'fetch("openapi.json"' in r.text and 'fetch("predict?top_k="' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN
    assert "connect-src 'self'" in r.headers["content-security-policy"]
