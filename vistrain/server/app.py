"""The HTTP app of ``vistrain serve``: predict, Grad-CAM, health, metadata and a web page.

Endpoints (every error is a JSON ``{"error": "..."}`` with a 4xx status naming the problem):

* ``POST /predict?top_k=5``: the image as the multipart field ``file`` or as the raw request body;
  answers ``{"image", "top": [{"class", "index", "probability"}, ...]}``, the shape of one
  :meth:`vistrain.predictor.Classifier.predict` result.  Concurrent requests are batched
  (:class:`~vistrain.server.batcher.DynamicBatcher`): each request is decoded and preprocessed in a
  thread pool, the model runs on ``model_workers`` worker threads (default 1) on up to
  ``max_batch`` images at a time.
* ``POST /explain?method=gradcam``: the Grad-CAM overlay of the image on the model input, a PNG
  (:mod:`vistrain.server.explain`); the explained class in the ``X-Vistrain-Class`` header
  (percent-encoded UTF-8).  It needs the run's torch model: a server of an ONNX export alone or
  without PyTorch answers 501 with a one-line JSON error naming why and the fix.
* ``GET /healthz``: ``{"status": "ok", "model_calls", "images"}`` while the model worker runs.
* ``GET /metadata``: classes, preprocessing, model name, versions, engine, batching settings.
* ``GET /metrics``: requests, latency, errors by status, model calls and batch sizes in the
  Prometheus text format (:mod:`vistrain.server.metrics`, which also logs one JSON line per
  request on the ``vistrain.access`` logger).
* ``GET /``: one self-contained page (``page.html``: inline CSS and JS, no external request).
* ``GET /openapi.json`` and ``GET /docs``: the OpenAPI description, generated from these routes,
  and an offline page listing the operations with a form to try ``/predict``
  (:mod:`vistrain.server.openapi`).

With ``token=...`` every route except ``/``, ``/docs`` and ``/healthz`` needs
``Authorization: Bearer TOKEN`` (401 otherwise; :mod:`vistrain.server.auth`).

Uploads are decoded by :func:`vistrain.imageio.read.load_image`, as files given to ``vistrain
predict`` are (EXIF rotation, alpha on white), so the server's answer is the answer of
``Classifier.predict`` on the same file.  What one request may cost is bounded:

* the body limit is enforced while reading: a client cannot make the server buffer more than
  ``max_body_bytes``;
* the image's size is read from its header before anything is decoded: more than
  ``max_image_pixels`` (default 40 MP) is a 413 (a 35 KB PNG can claim 17,000 x 17,000 pixels,
  seconds of CPU and a gigabyte of memory to decode);
* at most ``decode_threads`` uploads (default 2) are decoded at once, in a thread pool of that
  size; the others wait their turn, so concurrent requests cannot multiply the memory of a decode.

Example (in-process, with the test client of Starlette):
    >>> from starlette.testclient import TestClient                       # doctest: +SKIP
    >>> client = TestClient(create_app(vistrain.load("runs/demo")))         # doctest: +SKIP
    >>> client.post("/predict?top_k=1", files={"file": open("shoe.png", "rb")}).json()  # doctest: +SKIP
    {'image': 'shoe.png', 'top': [{'class': 'Sneaker', 'index': 7, 'probability': 0.93}]}
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import tempfile
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from vistrain.artifact_meta import META, DamagedModelError, installed_versions, read_meta
from vistrain.errors import ImageLoadError, VistrainError
from vistrain.prediction import BaseClassifier
from vistrain.server.auth import BearerAuth, check_token
from vistrain.server.batch_policy import BatchPolicy, batch_policy
from vistrain.server.batcher import DynamicBatcher, ModelLock
from vistrain.server.openapi import load_docs_page, schema

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
# the batch size of an engine whose batching is measured (docs/benchmarks.md, "Serving"); whether
# a server batches at all when --max-batch is not given is measured on its model at start
# (vistrain.server.batch_policy).  OpenVINO is not measured by that benchmark: it stays unbatched.
ENGINE_MAX_BATCH = {"torch": DEFAULT_MAX_BATCH, "onnxruntime": DEFAULT_MAX_BATCH,
                    "onnxruntime-int8": DEFAULT_MAX_BATCH, "openvino": 1}
DEFAULT_WAIT_MS = 5.0
# model calls at once (--model-workers): one, on all the compute threads.  Two workers of one
# thread each (inter-op) against one of two threads (intra-op) is measured in docs/benchmarks.md,
# "Serving: model workers".
DEFAULT_MODEL_WORKERS = 1
MAX_MODEL_WORKERS = 16
# /explain's ?method= values: vistrain.interpret.cam.METHODS (a test holds them equal), named here
# because that module needs torch and the OpenAPI schema is built without it
EXPLAIN_METHODS = ("gradcam", "gradcam++", "layercam")
DEFAULT_MAX_BODY_BYTES = 20 * 2**20
# 40 MP is above any phone photo (12-20 MP); such a PNG took 0.7 s and 190 MB to decode on 2 cores.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_DECODE_THREADS = 2  # concurrent decodes: each may hold an image of max_image_pixels
INSTALL_HINT = "install with pip install 'vistrain[serve]'"
# The page may run only its own inline script and talk only to this server.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'")


def require_deploy() -> types.SimpleNamespace:
    """The Starlette pieces the app needs, or a one-line :class:`VistrainError` saying how to
    install them.  Imported here, not at the top: the server's dependencies are an optional extra
    (``vistrain[serve]``) that ``import vistrain`` and the other verbs must not need."""
    if not (find_spec("python_multipart") or find_spec("multipart")):  # Starlette parses forms with it
        raise VistrainError(f"vistrain serve needs python-multipart: {INSTALL_HINT}")
    if not find_spec("prometheus_client"):  # GET /metrics (vistrain.server.metrics)
        raise VistrainError(f"vistrain serve needs prometheus-client: {INSTALL_HINT}")
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.middleware import Middleware
        from starlette.requests import ClientDisconnect, Request
        from starlette.responses import HTMLResponse, JSONResponse, Response
        from starlette.routing import Route
    except ImportError as err:
        raise VistrainError(f"vistrain serve needs {err.name or 'starlette'}: {INSTALL_HINT}") from None
    return types.SimpleNamespace(Starlette=Starlette, HTTPException=HTTPException, Request=Request,
                                 Middleware=Middleware,
                                 ClientDisconnect=ClientDisconnect,
                                 HTMLResponse=HTMLResponse, JSONResponse=JSONResponse,
                                 Response=Response, Route=Route)


class HTTPProblem(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (a declared
    Content-Length over the limit is refused before anything is read)."""
    too_large = HTTPProblem(413, f"request body over the limit of {limit:,} bytes; send a smaller "
                                 "image or start the server with a larger --max-body-mb")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(web, request, limit: int) -> tuple[str, bytes]:
    """``(name, bytes)`` of the image: the multipart field ``file``, or else the raw body."""
    body = await read_body(request, limit)
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        async def replay():  # the form parser reads the body we already hold, within the limit
            return {"type": "http.request", "body": body, "more_body": False}
        try:
            form = await web.Request(request.scope, replay).form(max_files=4, max_fields=16)
        except Exception as err:  # python-multipart / Starlette parse errors
            raise HTTPProblem(400, f"malformed multipart form ({err}); send the image as -F file=@IMAGE")
        upload = form.get("file")
        if upload is None:
            raise HTTPProblem(400, "no 'file' field in the multipart form; send the image as "
                                   "-F file=@IMAGE (or as the raw request body)")
        if isinstance(upload, str):
            raise HTTPProblem(400, "the 'file' field is text, not a file; send it as -F file=@IMAGE")
        name, body = upload.filename or "upload", await upload.read()
        await form.close()
    else:
        name = "upload"
    if not body:
        raise HTTPProblem(400, "empty image: send an image file as the multipart field 'file' or as "
                               "the request body")
    return name, body


def query_choice(request, key: str, default: str, choices) -> str:
    value = request.query_params.get(key, default)
    if value not in choices:
        raise HTTPProblem(422, f"{key}={value!r}: use one of {', '.join(choices)}")
    return value


def parse_top_k(raw: str | None, clf: BaseClassifier) -> int:
    """The ``top_k`` query value checked by :meth:`Classifier.check_top_k` (422 when bad)."""
    try:
        return clf.check_top_k(int(raw) if raw is not None else 5)
    except (ValueError, VistrainError):
        n = len(clf.classes)
        raise HTTPProblem(422, f"top_k={raw!r}: must be a whole number from 1 to {n} (the model's "
                               f"number of classes; larger values show all {n})") from None


def top_entries(probs: np.ndarray, classes: list[str], k: int) -> list[dict]:
    """The ``k`` most probable classes of one ``(K,)`` row, as ``Classifier.predict`` lists them."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class": classes[i], "index": int(i), "probability": float(probs[i])} for i in order]


def too_many_pixels(name: str, pixels: int, limit: int, dims: str = "") -> HTTPProblem:
    """The 413 of an image over the server's pixel limit: the count, the limit and the flag."""
    return HTTPProblem(413, f"{name}: {dims}{pixels:,} pixels is over this server's limit of "
                            f"{limit:,} pixels; send a smaller image, or start the server with a "
                            "larger --max-image-pixels")


def check_image_header(name: str, data: bytes, limit: int) -> None:
    """413 :class:`HTTPProblem` when the image's header claims more than ``limit`` pixels.  Only
    the header is read (``Image.open`` is lazy): nothing is decoded.  A file Pillow cannot open
    passes: decoding it then gives the precise error (415, truncated, ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own guard fires in Image.open above its limit; its message has the count
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise too_many_pixels(name, int(found.group(1)) if found else limit + 1, limit) from None
    except Exception:  # not an image, damaged header: the decode names the problem
        return
    if width * height > limit:
        raise too_many_pixels(name, width * height, limit, f"{width}x{height} = ")


def image_problem(err: ImageLoadError, name: str) -> HTTPProblem:
    """The HTTP status and message of an upload that could not be decoded."""
    if err.reason.startswith("not an image"):
        return HTTPProblem(415, f"{name}: not an image file Pillow can read; send a JPEG, PNG, BMP, "
                                "GIF, TIFF or WebP image")
    if "decompression bomb" in err.reason:
        return HTTPProblem(413, f"{name}: {err.reason} (vistrain serve --max-image-pixels)")
    return HTTPProblem(400, f"{name}: {err.reason}")


def model_info(clf: BaseClassifier) -> dict:
    """Model name and the versions it was trained with, from the run's ``model.json`` if any
    (a bare export: the model name its metadata records)."""
    meta_path = Path(clf.source) / META
    if clf.source and meta_path.is_file():
        meta = read_meta(clf.source)
        return {"model": meta["model_name"], "trained_with": meta.get("versions", {})}
    exported = getattr(clf.session, "metadata", None) or {}
    return {"model": exported.get("model_name") or clf.source or type(clf.model).__name__,
            "trained_with": {}}


def explain_problem(clf: BaseClassifier) -> str | None:
    """Why ``/explain`` cannot answer for ``clf`` (None when it can): Grad-CAM needs the run's
    torch model, which a server of an ONNX export alone, or one without PyTorch, does not hold."""
    if getattr(clf, "model", None) is not None:
        return None
    why = getattr(clf, "no_model", "") or "this server holds no PyTorch model"
    return f"POST /explain (Grad-CAM) needs the run's PyTorch model: {why}"


class Service:
    """The state behind the endpoints: the classifier, its batcher, the decode pool and limits."""

    def __init__(self, clf: BaseClassifier, *, batching: BatchPolicy, wait_ms: float, max_body_bytes: int,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 decode_threads: int = DEFAULT_DECODE_THREADS, model_workers: int = DEFAULT_MODEL_WORKERS,
                 metrics=None):
        self.clf, self.batching, self.wait_ms, self.model_workers = clf, batching, wait_ms, model_workers
        self.max_batch = batching.max_batch
        self.metrics = metrics  # a vistrain.server.metrics.Metrics, or None
        self.max_body_bytes, self.max_image_pixels = max_body_bytes, max_image_pixels
        # model calls share the model; Grad-CAM adds a forward hook no batch may see: it is alone
        self.model_lock = ModelLock()
        self.batcher = DynamicBatcher(self._infer, max_batch=self.max_batch, wait_ms=wait_ms, wait_for="announced",
                                      workers=model_workers)
        # the pool's size is the bound on decodes (and Grad-CAM images) running at once
        self.decode_threads = decode_threads
        self.pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="vistrain-decode")
        self._cam = None  # the Grad-CAM of /explain, made on its first use (torch)
        self.info = {**model_info(clf), "engine": getattr(clf, "engine", "torch"),
                     "versions": installed_versions()}

    def _infer(self, pixels: list[np.ndarray]) -> np.ndarray:
        if self.metrics is not None:
            self.metrics.model_call(len(pixels))
        with self.model_lock.shared():
            return self.clf.predict_pixels(pixels)

    def decode(self, name: str, data: bytes) -> np.ndarray:
        """``(C, S, S)`` uint8 pixels of an upload, decoded from a temporary file by the same
        code as files given to ``predict`` (so the answers agree); 4xx :class:`HTTPProblem` if bad
        (413 before any decoding when the header claims more than ``max_image_pixels``)."""
        check_image_header(name, data, self.max_image_pixels)
        with tempfile.NamedTemporaryFile(prefix="vistrain-serve-") as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                return self.clf.pixels(tmp.name)
            except ImageLoadError as err:
                raise image_problem(err, name) from None

    async def in_pool(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def predict(self, web, request) -> dict:
        k = parse_top_k(request.query_params.get("top_k"), self.clf)
        with self.batcher.incoming():  # a batch being collected waits for this request's pixels
            name, data = await read_upload(web, request, self.max_body_bytes)
            pixels = await self.in_pool(self.decode, name, data)
        probs = await self.batcher.run(pixels)
        return {"image": name, "top": top_entries(np.asarray(probs), self.clf.classes, k)}

    async def explain(self, web, request):
        problem = explain_problem(self.clf)
        if problem:
            raise HTTPProblem(501, problem)
        cam = self.grad_cam()
        method = query_choice(request, "method", "gradcam", cam.methods)
        name, data = await read_upload(web, request, self.max_body_bytes)
        pixels = await self.in_pool(self.decode, name, data)
        png, cls, p = await self.in_pool(cam.png, pixels, method)
        return web.Response(png, media_type="image/png",
                            headers={"X-Vistrain-Class": quote(cls), "X-Vistrain-Probability": f"{p:.6f}"})

    def grad_cam(self):
        """The :class:`vistrain.server.explain.GradCam` of this server's model, made once."""
        if self._cam is None:
            # imported here, not at the top: /explain is the server's one torch-backed endpoint,
            # and a server of an ONNX export runs without torch installed (it answers 501 above)
            from vistrain.server.explain import GradCam
            self._cam = GradCam(self.clf, self.model_lock)
        return self._cam

    def health(self) -> dict:
        if not self.batcher.alive():
            raise HTTPProblem(503, "the model worker stopped; restart the server")
        return {"status": "ok", "model_calls": self.batcher.calls, "images": self.batcher.items}

    def metadata(self) -> dict:
        return {"classes": self.clf.classes, "num_classes": len(self.clf.classes),
                "preprocess": self.clf.preprocess.to_dict(), "source": self.clf.source,
                **self.info, "device": str(self.clf.device),
                "tta": getattr(self.clf, "tta", "none"),
                "batching": {"max_batch": self.max_batch, "wait_ms": self.wait_ms,
                             "model_workers": self.model_workers, "decided": self.batching.reason},
                "max_body_bytes": self.max_body_bytes, "max_image_pixels": self.max_image_pixels,
                "decode_threads": self.decode_threads}

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _endpoint(web, handler):
    """Wrap ``handler(request)``: a dict becomes JSON; a refused request or a user error a 4xx
    JSON ``{"error"}``; anything unexpected a logged 500, and the server keeps serving."""
    async def endpoint(request):
        try:
            out = await handler(request)
        except HTTPProblem as err:
            return web.JSONResponse({"error": err.message}, status_code=err.status)
        except DamagedModelError as err:  # the server's model, not the request, is at fault
            return web.JSONResponse({"error": str(err)}, status_code=500)
        except VistrainError as err:
            return web.JSONResponse({"error": str(err)}, status_code=400)
        except web.ClientDisconnect:  # the client left mid-upload: nobody reads an answer
            return web.JSONResponse({"error": "client disconnected"}, status_code=400)
        except Exception as err:
            log.exception("error while answering %s %s", request.method, request.url.path)
            return web.JSONResponse({"error": f"internal error ({type(err).__name__}); see the server "
                                              "log"}, status_code=500)
        return web.JSONResponse(out) if isinstance(out, dict) else out
    return endpoint


def load_page() -> str:
    """The web page shipped as ``vistrain/server/page.html`` (package data)."""
    return resources.files("vistrain.server").joinpath("page.html").read_text(encoding="utf-8")


def probe_model(clf: BaseClassifier) -> None:
    """One prediction on a grey image before serving: a model whose probabilities are not finite
    (damaged weights or temperature) stops the server at its start with one line, rather than
    answering every request with an error."""
    pre = clf.preprocess
    clf.predict_pixels([np.full((pre.channels, pre.size, pre.size), 128, dtype=np.uint8)])


def docs_routes(web, service: Service, *, token: bool) -> list:
    """``GET /openapi.json`` (built from the app's routes at the first request, so it lists
    exactly what the app serves) and ``GET /docs`` (the offline page that reads it)."""
    page, cache = load_docs_page(), {}

    async def openapi(request):
        if "doc" not in cache:
            cache["doc"] = schema(request.app.routes, title=f"vistrain serve: {service.info['model']}",
                                  version=service.info["versions"].get("vistrain", "0"),
                                  num_classes=len(service.clf.classes), explain_methods=EXPLAIN_METHODS,
                                  token=token)
        return cache["doc"]

    async def docs(request):
        return web.HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    return [web.Route("/openapi.json", _endpoint(web, openapi), methods=["GET"]),
            web.Route("/docs", _endpoint(web, docs), methods=["GET"])]


def default_max_batch(clf: BaseClassifier) -> int:
    """The engine's batch size when it batches (:data:`ENGINE_MAX_BATCH`; 1: not measured)."""
    return ENGINE_MAX_BATCH.get(getattr(clf, "engine", "torch"), DEFAULT_MAX_BATCH)


def choose_batching(clf: BaseClassifier, max_batch: int | None) -> BatchPolicy:
    """``max_batch`` when given, else measured on ``clf``'s model (:mod:`vistrain.server.batch_policy`);
    the decision is logged once."""
    pre = clf.preprocess
    policy = batch_policy(clf, (pre.channels, pre.size, pre.size), engine_max_batch=default_max_batch(clf),
                          max_batch=max_batch)
    log.info("batching %s", policy.reason)
    return policy


def create_app(classifier: BaseClassifier, *, max_batch: int | None = None,
               wait_ms: float = DEFAULT_WAIT_MS, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               decode_threads: int | None = None, token: str | None = None,
               model_workers: int = DEFAULT_MODEL_WORKERS):
    """The Starlette app serving ``classifier`` (see the module docstring for the endpoints).

    ``max_batch``: most images per model call (1 turns batching off; None: measured on the
    model at start, :func:`choose_batching`); ``wait_ms``: how long the
    first request of a batch waits for others; ``max_body_bytes``: largest request body accepted;
    ``max_image_pixels``: largest width x height accepted (413 above, read from the header; the
    process-wide limit of :func:`vistrain.imageio.read.set_max_image_pixels` still applies on top);
    ``decode_threads``: uploads decoded at once (default 2; ``None``: the default);
    ``model_workers``: model calls run at once (default 1; the engine must allow concurrent
    calls, as ONNX Runtime, OpenVINO and torch inference do); ``token``: the
    bearer token every route but ``/``, ``/docs`` and ``/healthz`` requires (None: open).  ``app.state.service``
    holds the :class:`Service` (``service.batcher`` counts model calls, ``service.metrics`` is
    what ``/metrics`` reports); the batcher stops when the app shuts down.
    """
    web = require_deploy()
    check_token(token)
    # imported here: prometheus_client is part of the optional extra, like Starlette
    from vistrain.server.metrics import CONTENT_TYPE, Metrics, Observed
    probe_model(classifier)
    metrics = Metrics()
    service = Service(classifier, batching=choose_batching(classifier, max_batch), wait_ms=wait_ms,
                      max_body_bytes=max_body_bytes, max_image_pixels=max_image_pixels,
                      decode_threads=decode_threads or DEFAULT_DECODE_THREADS,
                      model_workers=model_workers, metrics=metrics)
    page = load_page()

    async def index(request):
        return web.HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    async def health(request):
        return service.health()

    async def metadata(request):
        return service.metadata()

    async def prometheus(request):
        return web.Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def http_error(request, exc):  # unknown paths and methods answer JSON too
        return web.JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"},
                                status_code=exc.status_code)

    routes = [web.Route("/", _endpoint(web, index), methods=["GET"]),
              web.Route("/healthz", _endpoint(web, health), methods=["GET"]),
              web.Route("/metadata", _endpoint(web, metadata), methods=["GET"]),
              web.Route("/metrics", _endpoint(web, prometheus), methods=["GET"]),
              web.Route("/predict", _endpoint(web, lambda r: service.predict(web, r)), methods=["POST"]),
              web.Route("/explain", _endpoint(web, lambda r: service.explain(web, r)), methods=["POST"])]
    routes += docs_routes(web, service, token=token is not None)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = web.Starlette(routes=routes, exception_handlers={web.HTTPException: http_error},
                        middleware=[web.Middleware(Observed, metrics=metrics)]
                        + ([web.Middleware(BearerAuth, token=token)] if token else []),
                        lifespan=lifespan)
    app.state.service = service
    return app
