"""Inference speed: PyTorch eager vs the ONNX export run by ONNX Runtime (fp32 and int8).

The default model of ``vistrain train`` (EfficientNet-Lite0, ImageNet weights, a new 10-class
head, 224 px) is created here, wrapped as ``vistrain export`` wraps it (uint8 NHWC pixels in,
normalization and softmax inside) and exported to ONNX in a temporary folder; int8 is the static
QDQ quantization of ``vistrain export --quantize int8``, calibrated on shipped images.  Each side
computes the same thing from the same uint8 batch:

* eager: ``Classifier`` with the torch engine (normalize, model, softmax; ``torch.inference_mode``);
* onnxruntime / int8: ``Classifier`` with the ONNX Runtime engine (NCHW -> NHWC, ``session.run``).

Measured in one process, for each thread count (``torch.set_num_threads(t)`` and ONNX Runtime's
intra-op threads = ``t``): batch-1 latency (median of ``--repeats-1`` calls) and batch-32
throughput (median of ``--repeats-32`` calls); the sides alternate call by call after two
warm-up calls, so a change of load on the machine hits all of them alike.  The load average is
printed at start and end: on a shared machine it says how far to trust the numbers.

    python benchmarks/inference.py                      # threads 1 and 2, ~2-3 minutes on 2 cores
    python benchmarks/inference.py --threads 2 --no-int8

Limit: ONNX Runtime on the same model.  In the same alternation, each ONNX file also runs as a
bare ``onnxruntime.InferenceSession`` (same intra-op threads) on the NHWC uint8 batch prepared
once (``raw:<engine>``): what the model costs with no vistrain code around it.  The record
(``benchmarks/results/inference.json``) gives each engine's throughput as a fraction of the raw
session of its graph (eager: of the fp32 graph).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _record import Record, limit

MODULES = ["vistrain/predictor.py", "vistrain/deploy/engine.py", "vistrain/deploy/graph.py",
           "vistrain/deploy/onnx_export.py", "vistrain/deploy/quantize.py",
           "vistrain/models/factory.py", "vistrain/transforms/preprocess.py",
           "vistrain/transforms/normalize.py"]
SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "fashion-mnist-small"


def build(tmp: Path, int8: bool):
    """The torch classifier, and the ONNX (and int8) files of the same model."""
    from vistrain.deploy.graph import InferenceGraph
    from vistrain.deploy.onnx_export import export_onnx
    from vistrain.deploy.quantize import quantize_int8
    from vistrain.models import create
    from vistrain.predictor import Classifier
    from vistrain.transforms.preprocess import Preprocess
    torch.manual_seed(0)
    model, cfg = create("tf_efficientnet_lite0", 10, pretrained=True)
    pre = Preprocess(size=cfg.input_size[-1], interpolation=cfg.interpolation, crop_pct=cfg.crop_pct,
                     normalize_mode="model", mean=cfg.mean, std=cfg.std)
    clf = Classifier(model, [str(i) for i in range(10)], pre)
    size = pre.size
    files = {"onnxruntime": export_onnx(InferenceGraph(model, pre), tmp / "model.onnx", size=size,
                                        channels=3, metadata={})}
    if int8:
        calib = sorted(SHIPPED.rglob("*.png"))[::40][:48]
        pixels = np.stack([pre.pixels(p).numpy() for p in calib])
        quantize_int8(files["onnxruntime"], tmp / "model.int8.onnx", pixels)
        files["onnxruntime-int8"] = tmp / "model.int8.onnx"
    return clf, files, size


def timed(fn, x) -> float:
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def measure(sides: dict, x1, x32, repeats1: int, repeats32: int) -> dict[str, tuple[float, float]]:
    """``side -> (batch-1 median seconds, batch-32 median seconds)``, the sides alternating."""
    out, every = {}, {}
    for x, repeats in ((x1, repeats1), (x32, repeats32)):
        times = {name: [] for name in sides}
        for _ in range(2):  # warm-up: first-call allocations, thread pools, kernel choice
            for name, fn in sides.items():
                fn(x)
        for _ in range(repeats):
            for name, fn in sides.items():
                times[name].append(timed(fn, x))
        for name in sides:
            out.setdefault(name, []).append(statistics.median(times[name]))
            every.setdefault(name, []).append(times[name])
    return {k: tuple(v) for k, v in out.items()}, every


def raw_session(path, threads: int, x1, x32):
    """The limit: a bare ONNX Runtime session of ``path`` on NHWC uint8 arrays made once."""
    import onnxruntime
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    nhwc = {len(x): np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)) for x in (x1, x32)}
    return lambda x: sess.run(None, {name: nhwc[len(x)]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats-1", type=int, default=15, help="batch-1 calls timed per side")
    ap.add_argument("--repeats-32", type=int, default=4, help="batch-32 calls timed per side")
    ap.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 graph")
    args = ap.parse_args()
    rec = Record("inference", MODULES if args.int8 else [m for m in MODULES if "quantize" not in m])
    import onnxruntime
    from vistrain.deploy.runtime import OrtEngine
    from vistrain.predictor import Classifier
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="vistrain-bench-") as tmp:
        t0 = time.perf_counter()
        clf, files, size = build(Path(tmp), args.int8)
        print(f"# tf_efficientnet_lite0, 10 classes, {size} px; export"
              f"{' + int8 quantization' if args.int8 else ''}: {time.perf_counter() - t0:.1f} s")
        gen = torch.Generator().manual_seed(0)
        x32 = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=gen)
        x1 = x32[:1].clone()
        rows = []
        for t in args.threads:
            torch.set_num_threads(t)
            sides = {"eager": clf}
            for name, path in files.items():
                sides[name] = Classifier(clf.model, clf.classes, clf.preprocess,
                                         session=OrtEngine(path, name=name, threads=t))
            fns = {name: (lambda x, c=c: c.predict_pixels(list(x))) for name, c in sides.items()}
            fns.update({f"raw:{name}": raw_session(path, t, x1, x32) for name, path in files.items()})
            with torch.inference_mode():
                res, every = measure(fns, x1, x32, args.repeats_1, args.repeats_32)
            raw = {k: res.pop(k) for k in list(res) if k.startswith("raw:")}
            rows.append((t, res, raw, every))
            for name, (b1, b32) in res.items():
                print(f"threads {t}  {name:17s} batch 1: {b1 * 1e3:7.1f} ms   batch 32: "
                      f"{32 / b32:6.1f} img/s")
        print(f"# load average at end {os.getloadavg()[0]:.1f}")
    print()
    print("| threads | engine | batch-1 latency (ms) | vs eager | batch-32 throughput (img/s) | vs eager |")
    print("|---|---|---|---|---|---|")
    for t, res, _raw, _every in rows:
        e1, e32 = res["eager"]
        for name, (b1, b32) in res.items():
            print(f"| {t} | {name} | {b1 * 1e3:.1f} | {e1 / b1:.2f}x | {32 / b32:.1f} | {e32 / b32:.2f}x |")
    write_record(rec, args, rows, size)


def write_record(rec, args, rows, size) -> None:
    """Every call's seconds, the medians and ratios, and each engine beside the bare session."""
    derived, limits, repeats = [], {}, []
    for t, res, raw, every in rows:
        repeats.append({"threads": t, "seconds": every})
        e1, e32 = res["eager"]
        for name, (b1, b32) in res.items():
            r1, r32 = raw[f"raw:{'onnxruntime' if name == 'eager' else name}"]
            derived.append({"threads": t, "engine": name, "batch1_ms": b1 * 1e3,
                            "batch1_vs_eager": e1 / b1, "batch32_img_s": 32 / b32,
                            "batch32_vs_eager": e32 / b32, "raw_batch1_ms": r1 * 1e3,
                            "raw_batch32_img_s": 32 / r32})
            how = f"bare onnxruntime session of the {'int8' if 'int8' in name else 'fp32'} graph, {t} threads"
            limits[f"t{t}.{name}.batch32"] = limit(32 / b32, 32 / r32, "img/s", how)
            limits[f"t{t}.{name}.batch1"] = limit(1 / b1, 1 / r1, "calls/s", how)
    rec.write(params=vars(args) | {"size": size}, repeats=repeats, derived={"rows": derived},
              limits=limits)


if __name__ == "__main__":
    main()
