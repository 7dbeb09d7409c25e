"""The OpenAPI 3.1 description of ``vistrain serve`` (``GET /openapi.json``) and its docs page
(``GET /docs``: ``docs.html``, self-contained like the main page: no CDN, so it works offline).

The ``paths`` are generated from the app's own routes (:func:`schema` walks ``app.routes``): a route
without an entry in :data:`OPERATIONS` is an error when the schema is built, and an entry without
a route is not described, so the document cannot drift from what the server answers.  When the
server has a token, the ``bearer`` security scheme is declared and required everywhere except the
open paths of :mod:`vistrain.server.auth`.

Example:
    >>> from types import SimpleNamespace as R
    >>> doc = schema([R(path="/healthz", methods={"GET", "HEAD"})], title="t", version="1",
    ...              num_classes=3, explain_methods=("gradcam",), token=False)
    >>> doc["openapi"], list(doc["paths"]), list(doc["paths"]["/healthz"])
    ('3.1.0', ['/healthz'], ['get'])
"""
from __future__ import annotations

from importlib import resources

from vistrain.server.auth import OPEN_PATHS

OPENAPI_VERSION = "3.1.0"


def _json(ref: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes: int) -> dict:
    why = {400: "bad request (malformed form, damaged image)", 401: "missing or wrong bearer token",
           413: "body or image over the server's limits", 415: "not an image",
           422: "bad query value", 500: "the model failed; see the server log",
           501: "not possible with this engine", 503: "the model worker stopped"}
    return {str(c): {"description": why[c], **_json("Error")} for c in codes}


def _html(summary: str) -> dict:
    return {"get": {"summary": summary, "responses": {"200": {
        "description": "a self-contained HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}}}


def _image_body() -> dict:
    binary = {"type": "string", "format": "binary"}
    return {"required": True, "description": "the image: the multipart field 'file', or the raw body",
            "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                           "properties": {"file": binary}}},
                        "application/octet-stream": {"schema": binary},
                        "image/*": {"schema": binary}}}


def operations(num_classes: int, explain_methods) -> dict:
    """``{path: {method: operation}}`` of every route the app has."""
    top_k = {"name": "top_k", "in": "query", "required": False,
             "description": f"classes in the answer (1-{num_classes})",
             "schema": {"type": "integer", "minimum": 1, "maximum": num_classes, "default": 5}}
    method = {"name": "method", "in": "query", "required": False, "description": "the CAM method",
              "schema": {"type": "string", "enum": list(explain_methods), "default": "gradcam"}}
    return {
        "/": _html("the web page: choose an image, see the top classes and the Grad-CAM map"),
        "/docs": _html("this API's operations, and a form to try /predict"),
        "/openapi.json": {"get": {"summary": "this document", "responses": {
            "200": {"description": "the OpenAPI description", "content": {
                "application/json": {"schema": {"type": "object"}}}}}}},
        "/predict": {"post": {"summary": "classify one image", "parameters": [top_k],
                              "requestBody": _image_body(),
                              "responses": {"200": {"description": "the top classes", **_json("Prediction")},
                                            **_errors(400, 413, 415, 422, 500)}}},
        "/explain": {"post": {"summary": "the Grad-CAM overlay of the predicted class, a PNG",
                              "parameters": [method], "requestBody": _image_body(),
                              "responses": {"200": {
                                  "description": "PNG; the class in the header X-Vistrain-Class "
                                                 "(percent-encoded UTF-8), its probability in "
                                                 "X-Vistrain-Probability",
                                  "content": {"image/png": {"schema": {"type": "string",
                                                                       "format": "binary"}}}},
                                  **_errors(400, 413, 415, 422, 500, 501)}}},
        "/healthz": {"get": {"summary": "liveness of the model worker", "responses": {
            "200": {"description": "serving", **_json("Health")}, **_errors(503)}}},
        "/metadata": {"get": {"summary": "classes, preprocessing, model, engine, limits", "responses": {
            "200": {"description": "the model's record", **_json("Metadata")}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "responses": {
            "200": {"description": "requests, latency, errors, model calls, batch sizes",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }


COMPONENTS = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string", "description": "one line: the problem and the fix"}}},
    "Prediction": {"type": "object", "required": ["image", "top"], "properties": {
        "image": {"type": "string", "description": "the uploaded file's name ('upload' for a raw body)"},
        "top": {"type": "array", "items": {"type": "object", "required": ["class", "index", "probability"],
                                           "properties": {"class": {"type": "string"},
                                                          "index": {"type": "integer"},
                                                          "probability": {"type": "number"}}}}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["ok"]}, "model_calls": {"type": "integer"},
        "images": {"type": "integer"}}},
    "Metadata": {"type": "object", "required": ["classes", "num_classes", "preprocess"], "properties": {
        "classes": {"type": "array", "items": {"type": "string"}}, "num_classes": {"type": "integer"},
        "preprocess": {"type": "object"}, "model": {"type": "string"}, "engine": {"type": "string"}},
        "additionalProperties": True},
}


def schema(routes, *, title: str, version: str, num_classes: int, explain_methods,
           token: bool) -> dict:
    """The OpenAPI document of ``routes`` (a Starlette app's ``app.routes``: ``path`` and
    ``methods``); ``token``: the server requires a bearer token.  ``ValueError`` for a route that
    :func:`operations` does not describe."""
    known = operations(num_classes, explain_methods)
    paths: dict[str, dict] = {}
    for route in routes:
        for method in sorted(m for m in (route.methods or ()) if m != "HEAD"):  # Starlette adds HEAD
            op = known.get(route.path, {}).get(method.lower())
            if op is None:
                raise ValueError(f"{method} {route.path} has no OpenAPI description; add it to "
                                 "vistrain.server.openapi.operations")
            if token and route.path in OPEN_PATHS:
                op = {**op, "security": []}  # open even when the server has a token
            elif token:
                op = {**op, "responses": {**op["responses"], **_errors(401)}}
            paths.setdefault(route.path, {})[method.lower()] = op
    doc = {"openapi": OPENAPI_VERSION,
           "info": {"title": title, "version": version,
                    "description": "vistrain serve: a trained image classifier over HTTP"},
           "paths": paths, "components": {"schemas": COMPONENTS}}
    if token:
        doc["components"] = {**doc["components"], "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "the token given to vistrain serve --token (or VISTRAIN_TOKEN)"}}}
        doc["security"] = [{"bearer": []}]
    return doc


def load_docs_page() -> str:
    """The docs page shipped as ``vistrain/server/docs.html`` (package data)."""
    return resources.files("vistrain.server").joinpath("docs.html").read_text(encoding="utf-8")
