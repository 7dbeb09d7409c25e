"""Temperature scaling on a CIFAR-10 linear probe: test ECE and NLL before and after, one run.

Data: ``--per-class`` training and ``--test-per-class`` test images of each CIFAR-10 class
(``python /work/shared/datasets/fetch.py cifar10``: ``~/.cache/vision-data/cifar10/{train,test}/
<class>/*.png``), linked into ``OUT/data/{train,test}/<class>/`` (the first N files of each class in
sorted order), so the run uses the official test images as its test part; the validation part
(15 % of train/, stratified, seed 0) fits the temperature.

The run is ``vistrain train OUT/data --strategy feature-extraction`` (frozen ImageNet
EfficientNet-Lite0 at 224 px, a new linear head; ``--epochs``), with calibration on (the default).
Printed: the fitted T and, on the test part, ECE (15 bins) and NLL of the raw softmax and of
softmax(logits / T), with the ratios, and the accuracy (unchanged by T).

    python benchmarks/calibration_probe.py --out /tmp/calib-probe
    python benchmarks/calibration_probe.py --scratch --out /tmp/calib-probe-scratch

``--scratch`` trains ``vistrain/resnet20`` from scratch at the images' 32 px instead (30 epochs,
AdamW, cosine, the light augmentation preset): a network trained to low training loss, the kind
whose softmax is over-confident.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import vistrain
from _record import Record

DEFAULT_ROOT = Path.home() / ".cache" / "vision-data" / "cifar10"


def link_subset(root: Path, out: Path, per_class: dict[str, int]) -> Path:
    """``out/{part}/<class>/`` symlinks to the first ``per_class[part]`` files of each class."""
    for part, n in per_class.items():
        if not (root / part).is_dir():
            raise SystemExit(f"{root / part}: not found; run `python /work/shared/datasets/fetch.py cifar10`")
        for cls in sorted(p.name for p in (root / part).iterdir() if p.is_dir()):
            dst = out / part / cls
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted((root / part / cls).iterdir())[:n]:
                if not (dst / f.name).exists():
                    os.symlink(f, dst / f.name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--scratch", action="store_true",
                    help="train vistrain/resnet20 from scratch at 32 px (bf16 autocast where native) "
                         "instead of the linear probe")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rec = Record("calibration_probe_scratch" if args.scratch else "calibration_probe",
                 ["vistrain/evaluation/calibration.py"])
    data = link_subset(args.root, args.out / "data", {"train": args.per_class, "test": args.test_per_class})
    t = time.perf_counter()
    recipe = (dict(model="vistrain/resnet20", cpu_amp="auto", preprocess={"size": 32}) if args.scratch
              else dict(strategy="feature-extraction"))
    r = vistrain.train(data, out=args.out / "run", overwrite=True, progress=False,
                       epochs=args.epochs, **recipe)
    seconds = time.perf_counter() - t
    test = r.metrics["test"]
    cal = test["calibration"]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}, vistrain {vistrain.__version__}; {time.strftime('%Y-%m-%d')}; "
          f"{seconds:.0f} s")
    print(json.dumps({k: v for k, v in cal.items() if not isinstance(v, dict)}, indent=1))
    print(f"ECE after / before {cal['ece_after'] / cal['ece_before']:.2f}x, "
          f"NLL after / before {cal['nll_after'] / cal['nll_before']:.3f}x")
    print(f"test accuracy {test['accuracy']:.4f} on {test['n_samples']} images; temperature "
          f"{cal['temperature']:.3f} fitted on the validation part")
    rec.write(params=vars(args), repeats=[test], derived={"calibration": cal, "seconds": seconds},
              limits={})


if __name__ == "__main__":
    main()
