"""``serve``: a trained run as an HTTP service (``vistrain serve``), on uvicorn.

The app (endpoints, dynamic batching, bad-input handling) is :func:`vistrain.server.create_app`;
this module loads the run, checks the options, binds the socket and runs uvicorn until Ctrl-C.
A run folder with an up-to-date export, or an exported ``model.onnx`` alone, is served by ONNX
Runtime; that path imports no torch (``pip install 'vistrain[serve]'`` is all it needs), and
``/explain``, which needs the torch model, answers 501 there.
It binds 127.0.0.1 unless told otherwise: exposing the server to other machines is a choice the
user makes with ``host=``, and doing so without a bearer token (``token=`` or the environment
variable ``VISTRAIN_TOKEN``; :mod:`vistrain.server.auth`) is warned about.

Example:
    >>> from vistrain.workflows.serve import serve
    >>> serve("runs/demo", port=8000)          # doctest: +SKIP
    serving runs/demo on http://127.0.0.1:8000 (Ctrl-C to stop)
    $ curl -F file=@shoe.png 'http://127.0.0.1:8000/predict?top_k=2'
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable

from vistrain.imageio.read import set_max_image_pixels
from vistrain.errors import VistrainError
from vistrain.prediction import check_tta
from vistrain.server.auth import TOKEN_ENV, check_token
from vistrain.server.app import (DEFAULT_DECODE_THREADS, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MODEL_WORKERS,
                                DEFAULT_WAIT_MS, INSTALL_HINT, MAX_MODEL_WORKERS, create_app,
                                require_deploy)
from vistrain.workflows.logs import show_log_lines
from vistrain.workflows.predict import load

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_MB = 20.0


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_options(port: int, max_batch: int | None, wait_ms: float, max_body_mb: float,
                  max_image_pixels: int, decode_threads: int = DEFAULT_DECODE_THREADS,
                  model_workers: int = DEFAULT_MODEL_WORKERS) -> None:
    """One-line :class:`VistrainError` for an option out of range (before the model loads)."""
    problems = [(not isinstance(port, int) or not 0 <= port <= 65535,
                 f"port {port!r}: must be 0-65535 (0: any free port)"),
                (max_batch is not None and (not isinstance(max_batch, int) or isinstance(max_batch, bool)
                                            or max_batch < 1),
                 f"max_batch {max_batch!r}: must be a whole number >= 1 (1 turns batching off)"),
                (not isinstance(wait_ms, (int, float)) or not 0 <= wait_ms <= 1000,
                 f"wait_ms {wait_ms!r}: must be 0-1000 milliseconds"),
                (not isinstance(max_body_mb, (int, float)) or not 0 < max_body_mb <= 4096,
                 f"max_body_mb {max_body_mb!r}: must be above 0 and at most 4096"),
                (not isinstance(max_image_pixels, int) or isinstance(max_image_pixels, bool)
                 or max_image_pixels < 1,
                 f"max_image_pixels {max_image_pixels!r}: must be a whole number of pixels >= 1"),
                (not isinstance(decode_threads, int) or isinstance(decode_threads, bool)
                 or not 1 <= decode_threads <= 64,
                 f"decode_threads {decode_threads!r}: must be a whole number from 1 to 64"),
                (not isinstance(model_workers, int) or isinstance(model_workers, bool)
                 or not 1 <= model_workers <= MAX_MODEL_WORKERS,
                 f"model_workers {model_workers!r}: must be a whole number from 1 to {MAX_MODEL_WORKERS}")]
    for bad, message in problems:
        if bad:
            raise VistrainError(message)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def resolve_token(token: str | None) -> str | None:
    """``token``, else the environment variable ``VISTRAIN_TOKEN`` (empty: none), checked."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    check_token(token)
    return token


def open_network_warning(host: str) -> str:
    """The one line logged when a server without a token listens beyond this machine."""
    return (f"warning: listening on {host} makes the model reachable from other machines without "
            f"a token: anyone on the network can call it; set one with --token TOKEN or the "
            f"environment variable {TOKEN_ENV} (clients then send 'Authorization: Bearer TOKEN'), "
            "or use --host 127.0.0.1 to keep it local")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise VistrainError(f"--host {host}: cannot resolve it ({err.strerror}); give an address "
                            "such as 127.0.0.1 or 0.0.0.0") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise VistrainError(f"cannot listen on {host}:{port} ({err.strerror}); choose another "
                            "--port (or stop the program using it)") from None
    return sock


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          max_batch: int | None = None, wait_ms: float = DEFAULT_WAIT_MS,
          max_body_mb: float = DEFAULT_MAX_BODY_MB,
          max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, device: str = "cpu",
          engine: str = "auto", threads: int | None = None, tta: str = "none",
          decode_threads: int = DEFAULT_DECODE_THREADS, model_workers: int = DEFAULT_MODEL_WORKERS,
          ready: Callable[[str], None] | None = None, token: str | None = None) -> None:
    """Serve the run ``run_dir`` over HTTP until interrupted (Ctrl-C: returns after a graceful
    shutdown; SIGTERM: the same shutdown, then the process ends by that signal).

    ``max_batch``: most images per model call (1: no batching; None: measured on the model at
    start, :mod:`vistrain.server.batch_policy`: 32 when one image's call takes >= 2 ms, else 1;
    1 for OpenVINO, not measured yet); ``wait_ms``: how long a request
    waits for others to share its batch; ``max_body_mb``: largest request accepted (413 above);
    ``max_image_pixels``: largest width x height of an upload, read from its header before any
    decoding (413 above; default 40 MP); ``decode_threads``: uploads decoded at once (default 2:
    each may hold an image of ``max_image_pixels``); ``model_workers``: model calls run at once
    (default 1; with more, ONNX Runtime and OpenVINO get ``threads`` each, by default the cores
    shared out among them); ``engine`` / ``threads`` / ``tta``: as for
    :func:`vistrain.workflows.predict.load` (Grad-CAM always uses the torch model, and explains
    the class ``/predict`` answers); ``token``: the bearer token every route but ``/``, ``/docs``
    and ``/healthz`` requires (default: the environment variable ``VISTRAIN_TOKEN``, else none);
    ``port=0`` takes a free port.  ``ready(url)`` is
    called once the socket listens (default: a log line).  Endpoints: see :mod:`vistrain.server.app`.

    Example:
        >>> import vistrain.workflows.serve as s
        >>> s.serve("runs/demo", port=0, ready=print)   # doctest: +SKIP
        http://127.0.0.1:40123
    """
    show_log_lines()
    check_options(port, max_batch, wait_ms, max_body_mb, max_image_pixels, decode_threads, model_workers)
    check_tta(tta)
    token = resolve_token(token)
    require_deploy()
    try:  # imported here: uvicorn is part of the optional extra vistrain[serve]
        import uvicorn

        from vistrain.server.protocol import JsonErrorH11Protocol
    except ImportError:
        raise VistrainError(f"vistrain serve needs uvicorn: {INSTALL_HINT}") from None
    set_max_image_pixels(max_image_pixels)  # one limit in this process: the decoder's agrees
    if model_workers > 1 and threads is None:  # the workers share the cores, not oversubscribe them
        threads = max(1, available_cores() // model_workers)
        log.info("%d model workers, %d compute thread(s) each (--threads)", model_workers, threads)
    clf = load(run_dir, device=device, engine=engine, threads=threads, tta=tta)
    app = create_app(clf, max_batch=max_batch, wait_ms=wait_ms,
                     max_body_bytes=int(max_body_mb * 2**20), max_image_pixels=max_image_pixels,
                     decode_threads=decode_threads, token=token, model_workers=model_workers)
    sock = bind(host, port)
    if not is_loopback(host) and token is None:
        log.warning(open_network_warning(host))
    bound = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    (ready or (lambda u: log.info("serving %s on %s (Ctrl-C to stop)", run_dir, u)))(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, http=JsonErrorH11Protocol)
    try:
        run_server(uvicorn.Server(config), sock)
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then re-raised the Ctrl-C: done
        log.info("stopped")
    finally:
        sock.close()


def run_server(server, sock: socket.socket) -> None:
    """``server.run`` (a uvicorn Server) until it stops, also where an event loop already runs in
    this thread (a Jupyter notebook: uvicorn cannot start its own loop there).  Then the server
    runs in a thread of its own and a Ctrl-C (the notebook's interrupt) stops it gracefully
    before the KeyboardInterrupt goes on, as uvicorn does in a plain process."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here: uvicorn's own, with its signal handling
        server.run(sockets=[sock])
        return
    stopped = threading.Event()  # not Thread.is_alive: a join interrupted by Ctrl-C can misreport it

    def run() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            stopped.set()

    thread = threading.Thread(target=run, name="vistrain-serve", daemon=True)
    thread.start()
    try:
        while not stopped.wait(0.2):
            if not thread.is_alive():  # ended without reaching its finally: nothing to wait for
                break
    except KeyboardInterrupt:
        server.should_exit = True
        stopped.wait()
        raise
