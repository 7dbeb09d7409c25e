"""``vistrain serve RUN_DIR|MODEL.onnx``: the run as an HTTP service (predict, Grad-CAM, a web page).

The work is :func:`vistrain.workflows.serve.serve`; this module parses the arguments and prints
the address once the server listens (``--json``: one JSON document ``{"url", ...}``; its
``max_batch`` is the flag's value, null when not given: then the server measures the model and
decides, which ``GET /metadata`` reports).
"""
from __future__ import annotations

import sys

from vistrain.cli.common import job, print_json
from vistrain.cli.evaluate import add_engine_options


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a trained run over HTTP (JSON API and a web page)",
                       description="Serve a trained run over HTTP: POST /predict and /explain "
                                   "(an image as the multipart field 'file' or as the body), GET "
                                   "/healthz, /metadata, /metrics and /openapi.json, API docs at /docs and a web page at /. An "
                                   "exported run (vistrain export) or its MODEL.onnx runs without "
                                   "PyTorch: pip install 'vistrain[serve]' (or 'vistrain[deploy]').")
    p.add_argument("run_dir", help="run directory of `vistrain train`, or a MODEL.onnx written by "
                                   "`vistrain export` (served without PyTorch)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface, reachable from other machines)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--max-batch", type=int,
                   help="most images per model call (1 turns dynamic batching off; default: "
                        "measured at start, 32 when one image's model call takes >= 2 ms, else 1; "
                        "1 with OpenVINO, not measured yet)")
    p.add_argument("--model-workers", type=int,
                   help="model calls run at once, the cores shared out among them (default 1, on "
                        "all of them; 2 runs two calls side by side: more throughput under load, "
                        "slower for a lone client; docs/serving.md)")
    p.add_argument("--wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its model call")
    p.add_argument("--max-body-mb", type=float, default=20.0,
                   help="largest request body accepted, in MiB (larger: 413)")
    # the defaults are the workflow's (vistrain.server.app): not imported here, it loads torch
    p.add_argument("--max-image-pixels", type=int,
                   help="largest width x height of an upload, read from its header before decoding "
                        "(larger: 413; default 40000000)")
    p.add_argument("--decode-threads", type=int,
                   help="uploads decoded at once; each may hold an image of --max-image-pixels "
                        "(default 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda | cuda:N")
    add_engine_options(p)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every route but /, /docs "
                   "and /healthz (default: the environment variable VISTRAIN_TOKEN, which other users "
                   "of this machine cannot read in the process list)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document with the address once listening")
    p.set_defaults(func=run)


def run(args) -> int:
    def ready(url: str) -> None:
        if args.json:
            print_json({"url": url, "run_dir": args.run_dir, "max_batch": args.max_batch,
                        "wait_ms": args.wait_ms, "tta": args.tta})
        else:
            print(f"serving {args.run_dir} on {url} (Ctrl-C to stop)")
        sys.stdout.flush()  # a pipe would hold the line back until the server stops

    limits = {key: value for key, value in (("max_image_pixels", args.max_image_pixels),
                                            ("decode_threads", args.decode_threads),
                                            ("model_workers", args.model_workers))
              if value is not None}  # not given: the workflow's defaults
    job("serve").serve(args.run_dir, host=args.host, port=args.port, max_batch=args.max_batch,
                       wait_ms=args.wait_ms, max_body_mb=args.max_body_mb, device=args.device,
                       engine=args.engine, threads=args.threads, tta=args.tta, ready=ready,
                       token=args.token, **limits)
    return 0
