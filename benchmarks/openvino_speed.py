"""Inference speed: ONNX Runtime vs OpenVINO on the same exported graph, the same thread count.

The default model of ``vistrain train`` (EfficientNet-Lite0, ImageNet weights, a new 10-class
head, 224 px) is wrapped and exported as ``vistrain export`` does it (:func:`build` of
``benchmarks/inference.py``), then converted to an OpenVINO IR as ``vistrain export --format
openvino`` does (float32 weights, float32 inference).  Both engines get the same uint8 NCHW batch
through the engine classes ``predict`` uses (:class:`OrtEngine`, :class:`OpenVinoEngine`), with
``t`` threads each; batch-1 latency and batch-32 throughput are medians of ``--repeats-1`` and
``--repeats-32`` calls, the engines alternating call by call after two warm-up calls.  The
largest probability difference between the two is printed too.  One record,
``benchmarks/results/openvino.json`` (:mod:`_record`: every timed call, the medians, the ratios).

    python benchmarks/openvino_speed.py --threads 1 2
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import Record  # noqa: E402
from inference import build, measure  # noqa: E402  (the sibling benchmark's model and timer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats-1", type=int, default=15, help="batch-1 calls timed per engine")
    ap.add_argument("--repeats-32", type=int, default=4, help="batch-32 calls timed per engine")
    args = ap.parse_args()
    rec = Record("openvino", ["vistrain/deploy/openvino_export.py", "vistrain/deploy/runtime.py"])
    import onnxruntime
    import openvino
    from vistrain.deploy.openvino_export import OpenVinoEngine, export_openvino
    from vistrain.deploy.runtime import OrtEngine
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="vistrain-bench-") as tmp:
        t0 = time.perf_counter()
        _, files, size = build(Path(tmp), int8=False)
        xml = export_openvino(files["onnxruntime"], Path(tmp) / "model.xml", {})
        print(f"# tf_efficientnet_lite0, 10 classes, {size} px; export + conversion: "
              f"{time.perf_counter() - t0:.1f} s")
        gen = torch.Generator().manual_seed(0)
        x32 = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=gen).numpy()
        x1 = x32[:1].copy()
        rows = []
        for t in args.threads:
            engines = {"onnxruntime": OrtEngine(files["onnxruntime"], threads=t),
                       "openvino": OpenVinoEngine(xml, threads=t)}
            diff = np.abs(engines["onnxruntime"].probabilities(x32) - engines["openvino"].probabilities(x32)).max()
            res, every = measure({k: e.probabilities for k, e in engines.items()}, x1, x32,
                                 args.repeats_1, args.repeats_32)
            rows.append((t, res, diff, every))
            for name, (b1, b32) in res.items():
                print(f"threads {t}  {name:12s} batch 1: {b1 * 1e3:7.2f} ms ({1 / b1:6.1f} img/s)   "
                      f"batch 32: {32 / b32:6.1f} img/s")
            print(f"threads {t}  largest probability difference: {diff:.2g}")
        print(f"# load average at end {os.getloadavg()[0]:.1f}")
    print()
    print("| threads | engine | batch 1 (img/s) | batch-1 latency (ms) | batch 32 (img/s) | vs ONNX Runtime (1 / 32) |")
    print("|---|---|---|---|---|---|")
    derived = {}
    for t, res, diff, _ in rows:
        o1, o32 = res["onnxruntime"]
        for name, (b1, b32) in res.items():
            print(f"| {t} | {name} | {1 / b1:.1f} | {b1 * 1e3:.2f} | {32 / b32:.1f} | "
                  f"{o1 / b1:.2f}x / {o32 / b32:.2f}x |")
            derived.setdefault(str(t), {})[name] = {"batch1_img_s": 1 / b1, "batch1_ms": b1 * 1e3,
                                                   "batch32_img_s": 32 / b32, "vs_ort_batch1": o1 / b1,
                                                   "vs_ort_batch32": o32 / b32}
        derived[str(t)]["max_probability_difference"] = float(diff)
    rec.write(params=vars(args), repeats={str(t): every for t, _, _, every in rows}, derived=derived, limits={})


if __name__ == "__main__":
    main()
