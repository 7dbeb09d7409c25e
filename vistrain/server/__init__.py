"""``vistrain serve``: a trained run behind HTTP, with dynamic batching and a web page.

* :mod:`vistrain.server.batcher`: :class:`DynamicBatcher`, concurrent single requests -> model
  batches on one or more worker threads, and :class:`ModelLock` (model calls side by side,
  Grad-CAM alone); no HTTP involved, testable alone;
* :mod:`vistrain.server.batch_policy`: whether a server batches when ``--max-batch`` is not given,
  measured on its model at start;
* :mod:`vistrain.server.app`: :func:`create_app`, the Starlette app (``/predict``, ``/explain``,
  ``/healthz``, ``/metadata``, ``/``);
* ``page.html``: the web page served at ``/`` (self-contained: inline CSS and JS).

The server itself (uvicorn on a socket) is :func:`vistrain.workflows.serve.serve`, shared by the
CLI and the API.  Starlette, python-multipart and uvicorn are the optional extra
``vistrain[serve]`` (and ``vistrain[deploy]``); they are imported only when an app is created.
"""
from vistrain.server.app import create_app
from vistrain.server.batcher import DynamicBatcher, ModelLock

__all__ = ["create_app", "DynamicBatcher", "ModelLock"]
