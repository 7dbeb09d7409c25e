"""Batch augmentation throughput: vistrain's batch pipeline vs torchvision v2 per sample.

Both sides do random resized crop + horizontal flip + colour jitter (brightness, contrast,
saturation, hue) on a uint8 batch of ``--batch`` images ``--size`` x ``--size`` (CPU):

* vistrain: one ``AugmentPipeline`` call on the whole (N, C, H, W) batch (crop and flip fused
  into one ``grid_sample``, jitter as batched float arithmetic);
* torchvision: ``v2.Compose`` applied to each (C, H, W) tensor in a Python loop, then stacked
  (what a Dataset-side transform costs per batch).

Prints the median of ``--repeats`` timed runs (after one warm-up; the two sides alternate within
each repeat) and the speed ratio.
torchvision's brightness is multiplicative and ours additive; the cost is the same kind.

    python benchmarks/augment_ops.py                 # 64 x 224 x 224, 5 repeats
    python benchmarks/augment_ops.py --batch 16      # quicker
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torchvision
from torchvision.transforms import v2

from _record import Record
from vistrain.transforms.ops import ColorJitter, RandomHorizontalFlip, RandomResizedCrop
from vistrain.transforms.pipeline import AugmentPipeline

JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)


def median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each callable, alternating them within each repeat so that both see
    the same background load (this matters on shared machines)."""
    for fn in fns.values():
        fn()  # warm-up: first-call allocations and kernel selection are not steady state
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median_seconds.times = times  # every repeat, for the record
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    rec = Record("augment_ops", ["vistrain/transforms/pipeline.py", "vistrain/transforms/ops/base.py",
                                 "vistrain/transforms/ops/colour.py", "vistrain/transforms/ops/geometry.py",
                                 "vistrain/transforms/ops/sampling.py",
                                 "vistrain/transforms/functional/resample.py",
                                 "vistrain/transforms/functional/colour.py"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8,
                      generator=g)
    ours = AugmentPipeline([RandomResizedCrop(args.size), RandomHorizontalFlip(0.5),
                            ColorJitter(**JITTER)])
    theirs = v2.Compose([v2.RandomResizedCrop(args.size), v2.RandomHorizontalFlip(0.5),
                         v2.ColorJitter(**JITTER)])

    medians = median_seconds({"ours": lambda: ours(x, generator=g),
                              "tv": lambda: torch.stack([theirs(img) for img in x])},
                             args.repeats)
    t_ours, t_tv = medians["ours"], medians["tv"]

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, {torch.get_num_threads()} threads")
    print(f"batch {args.batch} x 3 x {args.size} x {args.size} uint8, rrc + hflip + jitter, "
          f"median of {args.repeats}")
    for name, t in (("vistrain batch pipeline", t_ours), ("torchvision v2 per sample", t_tv)):
        print(f"{name:29s}: {t * 1e3:8.1f} ms  {args.batch / t:8.0f} img/s")
    print(f"ratio (vistrain / torchvision): {t_tv / t_ours:.2f}x")
    rec.write(params=vars(args), repeats=median_seconds.times,
              derived={"ours_s": t_ours, "torchvision_s": t_tv, "ratio": t_tv / t_ours}, limits={})


if __name__ == "__main__":
    main()
