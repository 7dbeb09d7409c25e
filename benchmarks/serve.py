"""``vistrain serve`` under load: throughput and latency with dynamic batching and without.

The server runs as a subprocess (``vistrain serve RUN --port 0``) on localhost; ``--clients``
(32) concurrent clients (asyncio + httpx, one keep-alive connection each) send ``--requests``
(4,000) POST /predict requests, each a shipped Fashion-MNIST PNG as the raw body, to each of
two servers of the same run: one with dynamic batching (``--max-batch 32 --wait-ms 5``, the
defaults) and one without (``--max-batch 1``: one model call per request).  Both run at once
(an idle server costs no CPU) after a warm-up of two requests per client, and are driven in
``--rounds`` (8) alternating rounds, so that a change of the machine's load hits both alike.
Printed per setting: requests answered, errors (must be 0), p50 / p99 latency over all rounds,
the median over rounds of requests/s, model calls and mean batch size; then the ratios.  A
round stops issuing requests after its share of ``--max-seconds`` (throughput is then that of
the requests answered).  *Limit* of each row: the model call alone, in this process, on the same
run, engine and threads (no HTTP, no decode): images/s at batch 1 for a server without batching,
at its best batch up to ``--max-batch`` (1, 4, 8, 16, 32) for a batched one; the median of the
calls that fit in 2 s (at least 5) per batch size, before and after each engine's rounds, the
better kept.  A server of W model workers gets the rate of W such calls side by side, each on a
W-th of the cores, over 2 s.

The model: ``--run RUN`` (any trained run), else a run written here into a temporary folder with
``--model`` (tf_efficientnet_lite0, the default of ``vistrain train``) at ``--size`` px, 10
classes, freshly initialised: serving cost does not depend on the weights' values.  ``--engine
onnxruntime`` serves the run's ONNX export (written here, as ``vistrain export`` writes it, when
the run has none) instead of the torch model; ``--engine torch onnxruntime`` measures both, and
``--clients 1 32`` each client count, in turn; ``--threads N`` sets the servers' compute
threads (a record of its own), and ``--wait-ms W`` other than the default 5 ms the batch's
wait (a record ``<name>_w<W>``).  ``--model-workers W`` (above 1) adds two servers of W model
workers with one W-th of the cores each (inter-op: W model calls side by side, against one call
on every core, intra-op), batched and not, driven in the same alternating rounds (a record
``<name>_m<W>``).  The record says, per engine, what a server started without ``--max-batch``
decided on this model (``vistrain.server.batch_policy``: batching on when one image's model call
takes >= 2 ms) and whether that decision paid, and with W workers their throughput over one
worker's.

    python benchmarks/serve.py                         # ~11 minutes on 2 CPU cores
    python benchmarks/serve.py --run runs/demo --requests 2000 --clients 64
    python benchmarks/serve.py --model vistrain/resnet20 --size 32 --engine torch onnxruntime --clients 1 32
    python benchmarks/serve.py --engine onnxruntime --clients 1 32 --model-workers 2
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

import vistrain
from vistrain.artifact import save_model
from vistrain.artifact_meta import read_meta
from vistrain.deploy.format import EXPORT_DIR, ONNX_FILE, graph_metadata, weights_sha256
from vistrain.deploy.graph import InferenceGraph
from vistrain.deploy.onnx_export import export_onnx
from vistrain.models import create
from vistrain.transforms.normalize import resolve_normalization
from vistrain.transforms.preprocess import Preprocess
from _record import Record, limit

SHIPPED = Path(__file__).resolve().parent.parent / "examples" / "fashion-mnist-small"


def make_run(out: Path, model_name: str, size: int) -> Path:
    """A 10-class run of ``model_name`` at ``size`` px with the model's own normalization."""
    torch.manual_seed(0)
    scratch = {"input_size": size} if model_name.startswith("vistrain/") else {}
    model, cfg = create(model_name, 10, pretrained=False, **scratch)
    norm = resolve_normalization("model", model_mean=cfg.mean, model_std=cfg.std)
    pre = Preprocess(size=size, interpolation=cfg.interpolation, crop_pct=cfg.crop_pct,
                     normalize_mode=norm.mode, scale=norm.scale, mean=norm.mean, std=norm.std)
    classes = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir())
    save_model(out, model.eval(), model_name=model_name, classes=classes, preprocess=pre,
               model_kwargs=scratch)
    return out


def export_graph(run: Path) -> Path:
    """``RUN/export/model.onnx`` as ``vistrain export`` writes it (graph and metadata), without the
    parity check on test images that a run made here has not got."""
    path = run / EXPORT_DIR / ONNX_FILE
    if path.is_file():
        return path
    clf = vistrain.load(run, engine="torch")
    meta = read_meta(run)
    path.parent.mkdir(exist_ok=True)
    return export_onnx(InferenceGraph(clf.model, clf.preprocess, clf.temperature), path,
                       size=clf.preprocess.size, channels=clf.preprocess.channels,
                       metadata=graph_metadata(meta, weights_sha256(run)))


class Server:
    """``vistrain serve RUN --port 0 FLAGS`` in a subprocess; ``url`` once /healthz answers.  Its
    output goes to a file, never to an unread pipe: the access log writes a line per request, and
    a full pipe would block the server mid-benchmark."""

    def __init__(self, run: Path, *flags: str, env: dict | None = None):
        cmd = [sys.executable, "-m", "vistrain.cli.main", "serve", str(run), "--port", "0", *flags]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="vistrain-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        line = self._serving_line()
        if not line:
            self.stop()
            raise SystemExit(f"vistrain serve did not start: {Path(self.log.name).read_text()[-2000:]}")
        self.url = line.split(" on ")[1].split(" ")[0]
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit("vistrain serve never answered /healthz")

    def _serving_line(self, timeout: float = 180) -> str:
        """The ``serving ... on URL`` line, once the server prints it ('' if it exits or never does)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            for line in Path(self.log.name).read_text().splitlines():
                if line.startswith("serving "):
                    return line.strip()
            time.sleep(0.1)
        return ""

    def health(self) -> dict:
        return httpx.get(f"{self.url}/healthz", timeout=30).json()

    def batching(self) -> dict:
        return httpx.get(f"{self.url}/metadata", timeout=30).json()["batching"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


async def drive(url: str, bodies: list[bytes], n_requests: int, clients: int,
                max_seconds: float) -> dict:
    """``n_requests`` POST /predict from ``clients`` concurrent clients; latencies in seconds."""
    latencies: list[float] = []
    errors: list[str] = []
    next_index = iter(range(n_requests))
    deadline = time.perf_counter() + max_seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            for i in next_index:
                if time.perf_counter() > deadline:
                    return
                t = time.perf_counter()
                try:
                    r = await c.post("/predict?top_k=1", content=bodies[i % len(bodies)])
                    ok = r.status_code == 200 and "top" in r.json()
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                if ok:
                    latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"latencies": latencies, "errors": errors, "seconds": time.perf_counter() - start}


def summarize(setting: tuple[int, int], phases: list[dict], calls: int, images: int) -> dict:
    lat = np.concatenate([np.asarray(p["latencies"]) for p in phases]) * 1000
    errors = [e for p in phases for e in p["errors"]]
    return {"max_batch": setting[0], "workers": setting[1], "answered": len(lat), "errors": len(errors),
            "first_error": errors[0] if errors else "",
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p95_ms": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "rps": statistics.median(len(p["latencies"]) / p["seconds"] for p in phases),
            "calls": calls, "batch": images / max(calls, 1)}


LIMIT_BATCHES = (1, 4, 8, 16, 32)
LIMIT_REPEATS = 5      # timed calls per batch size at least ...
LIMIT_SECONDS = 2.0    # ... and until this long: 5 calls alone read low against a server's sustained rate


def engine_rate(clf, batch: int, repeats: int = LIMIT_REPEATS, seconds: float = LIMIT_SECONDS) -> float:
    """Images/s of ``clf.predict_pixels`` on ``batch`` grey images alone: the median of at least
    ``repeats`` timed calls, and of as many as fit in ``seconds``, after one untimed call."""
    pre = clf.preprocess
    pixels = [np.full((pre.channels, pre.size, pre.size), 128, dtype=np.uint8)] * batch
    clf.predict_pixels(pixels)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < repeats or time.perf_counter() < end:
        start = time.perf_counter()
        clf.predict_pixels(pixels)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def side_by_side_rate(clf, batch: int, workers: int, seconds: float = LIMIT_SECONDS) -> float:
    """Images/s of ``workers`` threads calling ``clf.predict_pixels`` on ``batch`` grey images at
    once for ``seconds`` (after one untimed call): what W model workers can do with nothing else."""
    pre = clf.preprocess
    pixels = [np.full((pre.channels, pre.size, pre.size), 128, dtype=np.uint8)] * batch
    clf.predict_pixels(pixels)
    done = [0] * workers
    start = threading.Barrier(workers + 1)

    def work(i: int) -> None:
        start.wait()
        while time.perf_counter() < end:
            clf.predict_pixels(pixels)
            done[i] += batch
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def engine_limits(run: Path, args, engine: str, workers: int = 1) -> dict[str, float]:
    """``{str(batch): img/s}`` of the model call alone on ``engine`` with the threads a server of
    ``workers`` model workers gets (``--threads``, else the engines' defaults for one worker and
    a ``workers``-th of the cores each for more, as :func:`start_server` gives them); with more
    than one worker, that many calls side by side."""
    threads = args.threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None)
    kept = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        clf = vistrain.load(run, engine=engine, threads=threads)
        return {str(b): (engine_rate(clf, b) if workers == 1 else side_by_side_rate(clf, b, workers))
                for b in LIMIT_BATCHES if b <= args.max_batch}
    finally:
        torch.set_num_threads(kept)


def engine_limits_by_workers(run: Path, args, engine: str) -> dict[str, dict[str, float]]:
    """``{str(workers): {str(batch): img/s}}`` for one worker and, with ``--model-workers W``, W."""
    counts = (1, args.model_workers) if args.model_workers > 1 else (1,)
    return {str(w): engine_limits(run, args, engine, w) for w in counts}


def row_limit(r: dict, rates: dict[str, float]) -> float:
    """A row's limit: the model call alone at batch 1 without batching, at its best batch with."""
    return rates["1"] if r["max_batch"] == 1 else max(v for b, v in rates.items() if int(b) <= r["max_batch"])


def server_settings(args) -> list[tuple[int, int]]:
    """``(max_batch, model_workers)`` of each server: batched and not, with one model worker and,
    with ``--model-workers W`` above 1, with W."""
    workers = (1, args.model_workers) if args.model_workers > 1 else (1,)
    return [(mb, w) for w in workers for mb in (args.max_batch, 1)]


def start_server(run: Path, args, engine: str, max_batch: int, workers: int) -> Server:
    """One server; W model workers get one W-th of the cores each (OMP_NUM_THREADS, which both
    engines read; the server shares the cores out the same way for ONNX Runtime)."""
    threads = args.threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None)
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    return Server(run, "--max-batch", str(max_batch), "--wait-ms", str(args.wait_ms), "--engine", engine,
                  "--model-workers", str(workers), env=env)


def default_batching(run: Path, args, engine: str) -> dict:
    """What a server started without ``--max-batch`` decides on this model (its /metadata)."""
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    server = Server(run, "--wait-ms", str(args.wait_ms), "--engine", engine, env=threads)
    try:
        return server.batching()
    finally:
        server.stop()


def measure(run: Path, args, bodies: list[bytes], clients: int, engine: str) -> list[dict]:
    """Every setting, served at once (an idle server costs no CPU) and driven in alternating
    rounds, so that a change in the machine's load hits them alike."""
    settings = server_settings(args)
    servers = [start_server(run, args, engine, mb, w) for mb, w in settings]
    try:
        for server in servers:  # warm-up: first calls allocate, first batches are smaller
            asyncio.run(drive(server.url, bodies, 2 * clients, clients, 120))
        before = [s.health() for s in servers]
        phases: list[list[dict]] = [[] for _ in servers]
        per_round = -(-args.requests // args.rounds)
        for _ in range(args.rounds):
            for i, server in enumerate(servers):
                phases[i].append(asyncio.run(drive(server.url, bodies, per_round, clients,
                                                   args.max_seconds / args.rounds)))
        after = [s.health() for s in servers]
    finally:
        for server in servers:
            server.stop()
    return [summarize(st, ph, a["model_calls"] - b["model_calls"], a["images"] - b["images"])
            for st, ph, a, b in zip(settings, phases, after, before)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run (default: a fresh --model run in a temporary folder)")
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=4000, help="per setting, over all rounds")
    parser.add_argument("--clients", type=int, nargs="+", default=[32],
                        help="concurrent clients; several values are measured in turn")
    parser.add_argument("--engine", choices=("torch", "onnxruntime"), nargs="+", default=["torch"],
                        help="the servers' --engine (onnxruntime: the run's ONNX export); several "
                             "values are measured in turn, on the same run")
    parser.add_argument("--max-batch", type=int, default=32, help="the batched setting's --max-batch")
    parser.add_argument("--wait-ms", type=float, default=5.0,
                        help="the batched setting's --wait-ms; other than 5, the record is <name>_w<W>")
    parser.add_argument("--threads", type=int,
                        help="the servers' compute threads (OMP_NUM_THREADS: ONNX Runtime's intra-op "
                             "threads and torch's); default theirs; the record is then <name>_t<N>")
    parser.add_argument("--model-workers", type=int, default=1,
                        help="above 1: also measure servers of this many model workers, one W-th of "
                             "the cores each (inter-op); the record is then <name>_m<W>")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds of each setting")
    parser.add_argument("--max-seconds", type=float, default=80.0,
                        help="per setting (all rounds); a round stops issuing requests after its share")
    args = parser.parse_args()
    name = "serve" if args.model == "tf_efficientnet_lite0" else "serve_small"
    name += (f"_t{args.threads}" if args.threads else "") + (f"_w{args.wait_ms:g}" if args.wait_ms != 5.0 else "")
    name += f"_m{args.model_workers}" if args.model_workers > 1 else ""
    rec = Record(name,
                 ["vistrain/server/app.py", "vistrain/server/batcher.py", "vistrain/server/batch_policy.py",
                  "vistrain/predictor.py",
                  "vistrain/deploy/classifier.py", "vistrain/deploy/runtime.py"])
    bodies = [p.read_bytes() for p in sorted(SHIPPED.rglob("*.png"))[::20]]
    import fastapi
    import onnxruntime
    import starlette
    import uvicorn
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; Python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), vistrain {vistrain.__version__}, "
          f"starlette {starlette.__version__} (fastapi {fastapi.__version__}), uvicorn {uvicorn.__version__}, "
          f"httpx {httpx.__version__}, onnxruntime {onnxruntime.__version__}")
    with tempfile.TemporaryDirectory(prefix="vistrain-serve-bench-") as tmp:
        run = Path(args.run) if args.run else make_run(Path(tmp) / "run", args.model, args.size)
        if "onnxruntime" in args.engine:
            export_graph(run)
        print(f"# run {args.run or f'{args.model} at {args.size} px (fresh weights)'}, engines "
              f"{', '.join(args.engine)}; {args.requests} requests per setting in {args.rounds} alternating "
              f"rounds (at most {args.max_seconds:.0f} s per setting), {len(bodies)} distinct 28x28 PNGs")
        errors, all_rows, decided, rates = [], [], {}, {}
        for engine in args.engine:
            decided[engine] = default_batching(run, args, engine)
            print(f"# {engine}, no --max-batch given: batching {decided[engine]['decided']}")
            before = engine_limits_by_workers(run, args, engine)
            engine_rows = []
            for clients in args.clients:
                rows = measure(run, args, bodies, clients, engine)
                errors += [r["first_error"] for r in rows if r["errors"]]
                report(rows, clients, args.wait_ms, engine)
                engine_rows += [dict(r, clients=clients, engine=engine) for r in rows]
            after = engine_limits_by_workers(run, args, engine)
            rates[engine] = {w: {b: max(before[w][b], after[w][b]) for b in before[w]} for w in before}
            for w, by_batch in rates[engine].items():
                print(f"# {engine}, the model call alone, {w} at once (img/s by batch): "
                      + ", ".join(f"{b}: {v:.1f}" for b, v in by_batch.items()))
            all_rows += engine_rows
        limits = {f"{r['engine']}/{r['clients']}/{setting_name(r, args.wait_ms)}":
                  limit(r["rps"], row_limit(r, rates[r["engine"]][str(r.get("workers", 1))]), "req/s",
                        "the model call alone (same run, engine, threads; no HTTP, no decode; W model "
                        "workers: W calls side by side) at batch 1 without batching, at its best batch "
                        "up to --max-batch with")
                  for r in all_rows}
        rec.write(params={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  repeats=all_rows, derived={**derive(all_rows, decided), "engine_img_s_by_workers": rates},
                  limits=limits)
    if errors:
        raise SystemExit(f"errors: {errors}")


CLEAR_GAIN = 1.1  # batching off is wrong only where it would have gained beyond run-to-run noise


def ratio_at_most_clients(by_clients: dict[str, float]) -> float:
    return by_clients[max(by_clients, key=int)]


def derive(rows: list[dict], decided: dict[str, dict]) -> dict:
    """Per engine and client count, batching's throughput over no batching's (one model worker);
    per engine the default's decision on this model (``decided``: a server's /metadata batching)
    and whether it was right at the most concurrent clients measured (where a batch can fill):
    on and >= 1.0x, or off and below :data:`CLEAR_GAIN` (no gain beyond this machine's noise).  With more model workers measured,
    ``inter_op_ratio``: their throughput over one worker's, per engine, client count and setting
    (``batching`` / ``no batching``)."""
    def twin(r: dict, **changes) -> dict:
        want = {**{k: r[k] for k in ("engine", "clients", "max_batch")}, "workers": 1, **changes}
        return next(o for o in rows if all(o.get(k, 1) == v for k, v in want.items()))
    ratios: dict[str, dict[str, float]] = {}
    inter_op: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r["max_batch"] > 1 and r.get("workers", 1) == 1:
            ratios.setdefault(r["engine"], {})[str(r["clients"])] = r["rps"] / twin(r, max_batch=1)["rps"]
        if r.get("workers", 1) > 1:
            setting = "batching" if r["max_batch"] > 1 else "no batching"
            inter_op.setdefault(r["engine"], {}).setdefault(str(r["clients"]), {})[setting] = \
                r["rps"] / twin(r)["rps"]
    defaults = {e: decided[e]["max_batch"] for e in ratios}
    out = {"throughput_ratio": ratios, "default_max_batch": defaults,
           "default_decided": {e: decided[e]["decided"] for e in ratios},
           "default_right": {e: (ratio_at_most_clients(ratios[e]) >= (1.0 if defaults[e] > 1 else CLEAR_GAIN))
                             == (defaults[e] > 1) for e in ratios}}
    return {**out, "inter_op_ratio": inter_op} if inter_op else out


def setting_name(r: dict, wait_ms: float) -> str:
    name = f"batching (max {r['max_batch']}, {wait_ms:g} ms)" if r["max_batch"] > 1 else "no batching"
    workers = r.get("workers", 1)
    return name + (f", {workers} model workers" if workers > 1 else "")


def report(rows: list[dict], clients: int, wait_ms: float, engine: str) -> None:
    print(f"\n{engine}, {clients} clients")
    print(f"{'setting':44s} {'answered':>8s} {'errors':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} "
          f"{'req/s':>7s} {'calls':>6s} {'batch':>6s}")
    for r in rows:
        print(f"{setting_name(r, wait_ms):44s} {r['answered']:8d} {r['errors']:6d} {r['p50_ms']:8.1f} "
              f"{r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['rps']:7.1f} {r['calls']:6d} {r['batch']:6.1f}")
    print(f"throughput ratio, batching / no batching: {rows[0]['rps'] / rows[1]['rps']:.2f}x; "
          f"p50 latency ratio: {rows[1]['p50_ms'] / rows[0]['p50_ms']:.2f}x lower with batching")
    for many in rows[2:]:
        print(f"{setting_name(many, wait_ms)} / one worker: "
              f"{many['rps'] / rows[rows.index(many) - 2]['rps']:.2f}x throughput")


if __name__ == "__main__":
    main()
