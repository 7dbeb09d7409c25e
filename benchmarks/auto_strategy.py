"""The default ``--strategy auto`` against the frozen-feature head, on small grey images of another domain.

Data: a stratified sample of ``--per-class`` Fashion-MNIST images per class (default 1,000: 10,000
28x28 grey PNGs; ``python /work/shared/datasets/fetch.py fashion-mnist``) written as an image
folder, the way a user's data arrives.  Both runs train on the same folder with the same split
(vistrain's stratified hold-out, ``data.split_seed`` 0: 70 % train, 15 % val, 15 % test) and seed:

* ``auto``: ``vistrain train DATA`` with the defaults (``--strategy auto``, ``--budget 15``);
* ``feature-extraction``: ``vistrain train DATA --strategy feature-extraction`` (the default before
  ``auto`` was: frozen EfficientNet-Lite0 at 224 px, a new linear head).

Printed: what auto chose and why, test accuracy (with its 95 % bootstrap interval), wall time of
each, and the ratios.  Caches are off (``data.cache=off``) so that neither run reuses the
other's decoded pixels or features: each pays its full cost, as a first run does.

    python benchmarks/auto_strategy.py --out /tmp/auto-bench
    python benchmarks/auto_strategy.py --per-class 200 --out /tmp/auto-bench-small   # 2,000 images
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import vistrain
from _record import Record
from panel import write_npz_folder

DEFAULT_DATA = Path.home() / ".cache" / "vision-data" / "fashion-mnist.npz"


def run(data: Path, out: Path, **settings) -> dict:
    t = time.perf_counter()
    r = vistrain.train(data, out=out, overwrite=True, progress=False, data={"cache": "off"}, **settings)
    seconds = time.perf_counter() - t
    run_json = json.loads((r.run_dir / "run.json").read_text())
    test = r.metrics["test"]
    return {"accuracy": test["accuracy"], "ci": (test.get("ci95") or {}).get("accuracy"),
            "seconds": round(seconds, 1), "strategy": run_json["strategy"].get("strategy"),
            "epochs_run": len(r.history), "reasoning": run_json["strategy"].get("reasoning")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rec = Record("auto_strategy", ["vistrain/training/auto.py", "vistrain/training/similarity.py",
                                   "vistrain/training/plan.py", "vistrain/training/budget.py"])
    folder = write_npz_folder(args.data, ("x", "y"), args.per_class, args.out / f"fmnist-{args.per_class}")
    auto = run(folder, args.out / "auto")
    frozen = run(folder, args.out / "feature-extraction", strategy="feature-extraction")
    print(f"\nmachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}, vistrain {vistrain.__version__}; {time.strftime('%Y-%m-%d')}")
    for line in (auto["reasoning"] or {}).get("plain", []):
        print("  auto:", line)
    print(f"\n{'run':<20} {'strategy':<20} {'test acc':>9} {'95% CI':>16} {'epochs':>7} {'seconds':>8}")
    for name, r in (("auto (default)", auto), ("feature-extraction", frozen)):
        ci = r["ci"]
        ci_text = f"{ci['low']:.3f}-{ci['high']:.3f}" if isinstance(ci, dict) else "-"
        print(f"{name:<20} {r['strategy']:<20} {r['accuracy']:>9.4f} {ci_text:>16} {r['epochs_run']:>7} "
              f"{r['seconds']:>8.1f}")
    print(f"\naccuracy auto - frozen: {auto['accuracy'] - frozen['accuracy']:+.4f}; "
          f"time auto / frozen: {auto['seconds'] / frozen['seconds']:.2f}x")
    (args.out / "result.json").write_text(json.dumps({"auto": auto, "feature-extraction": frozen}, indent=1))
    rec.write(params=vars(args), repeats={"auto": auto, "feature-extraction": frozen},
              derived={"accuracy_difference": auto["accuracy"] - frozen["accuracy"],
                       "time_ratio": auto["seconds"] / frozen["seconds"]}, limits={})


if __name__ == "__main__":
    main()
