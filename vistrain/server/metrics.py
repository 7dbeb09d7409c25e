"""What ``vistrain serve`` reports about itself: Prometheus metrics and one access-log line a request.

* :class:`Metrics`: the instruments, in a registry of their own per app (two apps in one process,
  as in tests or a notebook, do not mix their counts), written by ``GET /metrics`` in the
  Prometheus text format (``prometheus_client``, part of the extra ``vistrain[serve]``):

  - ``vistrain_http_requests_total{method, path, status}`` and
    ``vistrain_http_errors_total{path, status}`` (4xx and 5xx answers);
  - ``vistrain_http_request_duration_seconds{path}``, a histogram of the time to answer;
  - ``vistrain_model_calls_total``, ``vistrain_model_images_total`` and the histogram
    ``vistrain_batch_size`` of the images per model call.

* :class:`Observed`: ASGI middleware that times every request (unknown paths included, counted as
  ``path="other"`` so that a scanner cannot grow the label set) and logs one JSON line on the
  ``vistrain.access`` logger, e.g.
  ``{"method": "POST", "path": "/predict", "status": 200, "ms": 12.3, "client": "127.0.0.1"}``.

Example:
    >>> m = Metrics()
    >>> m.model_call(4)
    >>> b"vistrain_model_images_total 4.0" in m.exposition()
    True
"""
from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

access_log = logging.getLogger("vistrain.access")

PATHS = frozenset({"/", "/predict", "/explain", "/healthz", "/metadata", "/metrics", "/docs",
                   "/openapi.json"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The classic text format, which every Prometheus version scrapes (newer prometheus_client
# releases name version=1.0.0, which only Prometheus 3 negotiates); our metric names are all legacy.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The server's Prometheus instruments in their own ``registry``."""

    def __init__(self):
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("vistrain_http_requests", "HTTP requests answered",
                                ["method", "path", "status"], registry=reg)
        self.errors = Counter("vistrain_http_errors", "HTTP requests answered with a 4xx or 5xx",
                              ["path", "status"], registry=reg)
        self.latency = Histogram("vistrain_http_request_duration_seconds",
                                 "time from the request's arrival to the end of its answer",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=reg)
        self.model_calls = Counter("vistrain_model_calls", "calls of the model by the batcher",
                                   registry=reg)
        self.model_images = Counter("vistrain_model_images", "images the model classified",
                                    registry=reg)
        self.batch_size = Histogram("vistrain_batch_size", "images per model call",
                                    buckets=BATCH_BUCKETS, registry=reg)

    def model_call(self, images: int) -> None:
        """Count one model call on ``images`` images."""
        self.model_calls.inc()
        self.model_images.inc(images)
        self.batch_size.observe(images)

    def request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one answered request (``path`` already one of :data:`PATHS` or ``"other"``)."""
        self.requests.labels(method, path, str(status)).inc()
        if status >= 400:
            self.errors.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (the body of ``GET /metrics``)."""
        return generate_latest(self.registry)


class Observed:
    """ASGI middleware: every HTTP request to ``app`` counted, timed and logged (see the module
    docstring); ``Middleware(Observed, metrics=...)`` in a Starlette app."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]  # 500 if the app fails before answering

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - start
            path = scope["path"] if scope["path"] in PATHS else "other"
            self.metrics.request(scope["method"], path, status[0], seconds)
            client = scope.get("client") or ("", 0)
            # json.dumps escapes any newline of a hostile path: one request, one line
            access_log.info(json.dumps({"method": scope["method"], "path": scope["path"],
                                        "status": status[0], "ms": round(seconds * 1000, 1),
                                        "client": client[0]}))
