"""Feature extraction speed: PyTorch eager vs ONNX Runtime, the engines of ``vistrain train``'s
frozen forward pass (EfficientNet-Lite0, offline ImageNet weights, 224 px, pooled features).

Both sides run :func:`vistrain.training.features.extract_features` (the function a run calls) on
the same uint8 pixels of shipped images, decoded once before timing:

* eager: ``VISTRAIN_FEATURE_ENGINE=eager`` (channels_last, float32, ``torch.set_num_threads(t)``);
* onnxruntime: the exported backbone (cached in a temporary ``VISTRAIN_CACHE``) with ``t``
  intra-op threads (the probe is pinned to ``t`` here, so each thread count is measured).

For each thread count the sides alternate, ``--repeats`` times each after one warm-up pass, and
the median img/s counts; a change of load on the machine hits both alike.  The load average is
printed at start and end: on a shared machine it says how far to trust the numbers.  Last line:
the ratio at the thread count a run's probe would choose (the faster ONNX Runtime count here).

    python benchmarks/feature_engine.py                      # 128 images, threads 1 and 2, ~3 min
    python benchmarks/feature_engine.py --images 64 --repeats 3 --threads 1

Limit: ONNX Runtime on the same model.  In the same alternation a bare ``onnxruntime`` session of
the backbone graph that the onnxruntime side exported (same threads) runs on the normalized
float batch made once, in the same chunks: the model's own cost with no vistrain code around it.
The record (``benchmarks/results/feature_engine.json``) gives both sides as fractions of it.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _record import Record, limit

MODULES = ["vistrain/training/features.py", "vistrain/training/feature_engine.py",
           "vistrain/models/factory.py", "vistrain/device.py", "vistrain/transforms/preprocess.py"]
SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "fashion-mnist-small"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else "?"


def setup(n_images: int):
    """The model, its preprocessing and ``n_images`` shipped images' uint8 pixels (N, 3, 224, 224)."""
    from vistrain.models import create
    from vistrain.transforms.preprocess import Preprocess
    model, cfg = create("tf_efficientnet_lite0", 10, pretrained=True)
    pre = Preprocess(size=cfg.input_size[-1], interpolation=cfg.interpolation, crop_pct=cfg.crop_pct,
                     normalize_mode="model", mean=cfg.mean, std=cfg.std)
    files = sorted(SHIPPED.rglob("*.png"))
    files = files[::max(1, len(files) // n_images)][:n_images]
    return model.eval(), pre, torch.stack([pre.pixels(f) for f in files])


def one_pass(engine: str, threads: int, model, pre, pixels, batch: int) -> float:
    """img/s of one :func:`extract_features` pass over ``pixels`` with ``engine`` at ``threads``."""
    from vistrain.device import Runtime
    from vistrain.training import feature_engine
    from vistrain.training.features import extract_features
    os.environ[feature_engine.ENGINE_ENV] = engine
    torch.set_num_threads(threads)
    batches = [(pixels[i:i + batch], None) for i in range(0, len(pixels), batch)]
    record: dict = {}
    t = time.perf_counter()
    extract_features(model, batches, pre.normalize, Runtime.create("cpu"), progress=False, record=record)
    if record.get("engine") != engine:
        raise SystemExit(f"{engine} was not used: {record}")
    return len(pixels) / (time.perf_counter() - t)


def raw_pass(sess, x, chunk: int) -> float:
    """The limit: img/s of a bare session over the normalized float batch ``x``, in chunks."""
    import numpy as np
    parts = [np.ascontiguousarray(p.numpy()) for p in x.split(chunk)]
    name = sess.get_inputs()[0].name
    t = time.perf_counter()
    for p in parts:
        sess.run(None, {name: p})
    return len(x) / (time.perf_counter() - t)


def main() -> None:
    rec = Record("feature_engine", MODULES)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64, help="batch size (a run uses 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    import onnxruntime
    import timm
    os.environ.setdefault("VISTRAIN_CACHE", tempfile.mkdtemp(prefix="vistrain-bench-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"timm {timm.__version__}; load average at start: {load()}")
    model, pre, pixels = setup(args.images)
    print(f"{len(pixels)} shipped images at {pixels.shape[-1]} px, batch {args.batch}, "
          f"{args.repeats} interleaved passes per side after one warm-up; median img/s")
    results, every = {}, {}
    from vistrain.training import feature_engine
    normalized = pre.normalize(pixels).float().contiguous()
    chunk = getattr(feature_engine, "CPU_CHUNK", 8)
    for threads in args.threads:
        feature_engine._THREADS.clear()  # a run measures once per process; here once per count
        feature_engine.thread_choices = lambda t=threads: [t]  # this count, not the probe's pick
        times: dict[str, list[float]] = {"eager": [], "onnxruntime": [], "raw": []}
        sess = None
        for rep in range(args.repeats + 1):
            for engine in times:
                if engine == "raw":
                    if sess is None:  # the graph the onnxruntime side exported in its first pass
                        path = feature_engine.graph_path(model, 3, pixels.shape[-1])
                        sess = feature_engine.ort_session(path, threads)
                    ips = raw_pass(sess, normalized, chunk)
                else:
                    ips = one_pass(engine, threads, model, pre, pixels, args.batch)
                if rep:  # the first pass of each side warms up (and exports the graph once)
                    times[engine].append(ips)
        every[threads] = times
        med = {e: statistics.median(v) for e, v in times.items()}
        results[threads] = med
        print(f"threads {threads}: eager {med['eager']:6.1f} img/s   onnxruntime {med['onnxruntime']:6.1f} img/s"
              f"   ratio {med['onnxruntime'] / med['eager']:.2f}x   limit (bare session) {med['raw']:6.1f} img/s")
    best = max(results, key=lambda t: results[t]["onnxruntime"])
    r = results[best]
    print(f"at the faster ONNX Runtime thread count ({best}): {r['onnxruntime']:.1f} vs eager "
          f"{r['eager']:.1f} img/s = {r['onnxruntime'] / r['eager']:.2f}x; load average at end: {load()}")
    how = "bare onnxruntime session of the exported backbone, same threads and chunks"
    rec.write(params=vars(args) | {"chunk": chunk, "images": len(pixels)},
              repeats={str(t): v for t, v in every.items()},
              derived={"threads": {str(t): m | {"ratio": m["onnxruntime"] / m["eager"]}
                                   for t, m in results.items()}, "best_threads": best},
              limits={f"t{t}.{e}": limit(m[e], m["raw"], "img/s", how)
                      for t, m in results.items() for e in ("eager", "onnxruntime")})


if __name__ == "__main__":
    main()
