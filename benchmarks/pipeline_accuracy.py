"""Same accuracy with the fast input pipeline as with the torchvision recipe.

One training loop, one model, one optimizer, one schedule; only the input pipeline differs:

* ``torchvision``: a Dataset that decodes each PNG with PIL every epoch and applies
  ``v2.RandomResizedCrop(S, scale) + RandomHorizontalFlip + ColorJitter + ToImage + ToDtype +
  Normalize`` per sample, ``DataLoader(num_workers=2, persistent_workers=True)``; test images go
  through ``v2.Resize(S) + CenterCrop(S)`` and the same normalization;
* ``vistrain``: the pixel cache of data/cache/__init__.py (one decode per file; eval crop and train square)
  + ``ArrayBatches`` + one batch ``AugmentPipeline([RandomResizedCrop, RandomHorizontalFlip,
  ColorJitter]).normalized`` call on uint8 (augmentation and normalization, as the training loop
  calls it); test images are the cached eval crops (``Preprocess.normalize``);
  ``ColorJitter`` is the default one-colour-matrix jitter (``vistrain-hsv`` in ``--sides``: the
  exact sequential HSV jitter, ``fused=False``).

Data: the CIFAR-10 official split image folder (``python /work/shared/datasets/fetch.py cifar10``),
the first ``--train-per-class`` training files of each class (sorted names) and the whole official
test set (or ``--test-per-class``).  Model: ``vistrain/resnet20`` from scratch, SGD Nesterov 0.1
one-cycle, weight decay 5e-4, label smoothing 0.1, batch 128, the same for both sides; the forward
pass runs under bf16 autocast + channels_last where the CPU does bf16 natively (``--cpu-amp``).
Each side trains once per seed in ``--seeds`` (same seeds for both: model initialisation and
shuffling seeded alike, augmentation draws necessarily differ), interleaved side by side.  Printed:
test accuracy per run, mean ± sample std per side, the difference of the means and its standard
error, and seconds per epoch.

    python benchmarks/pipeline_accuracy.py                       # 1000/class, 15 epochs, 3 seeds
    python benchmarks/pipeline_accuracy.py --train-per-class 50 --test-per-class 20 --epochs 1 \\
        --seeds 0                                                 # smoke

Limit: a plain PyTorch loop on the same model.  After each seed's sides, the same model,
optimizer, schedule, runtime (autocast, channels_last) and number of steps train on one
normalized batch held in memory (no input pipeline): the training step's own cost.  The record
(``benchmarks/results/pipeline_accuracy.json``) gives each side's s/epoch beside it and the
fraction reached (plain / side).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import Record, limit
import torch
import torch.nn.functional as F

CIFAR = Path.home() / ".cache" / "vision-data" / "cifar10"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)   # CIFAR-10 training statistics
JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
MODULES = ["vistrain/data/cache/build.py", "vistrain/data/cache/decode.py",
           "vistrain/data/cache/pixels.py", "vistrain/data/loader.py", "vistrain/device.py",
           "vistrain/models/scratch.py", "vistrain/models/layers.py", "vistrain/models/norms.py",
           "vistrain/transforms/pipeline.py", "vistrain/transforms/normalize.py",
           "vistrain/transforms/preprocess.py", "vistrain/transforms/functional/batch.py",
           "vistrain/transforms/functional/colour.py", "vistrain/transforms/functional/geometry.py",
           "vistrain/transforms/functional/resample.py", "vistrain/transforms/ops/base.py",
           "vistrain/transforms/ops/colour.py", "vistrain/transforms/ops/geometry.py",
           "vistrain/transforms/ops/sampling.py"]


def items_of(part: str, per_class: int | None) -> list[tuple[str, int]]:
    root = CIFAR / part
    if not root.is_dir():
        sys.exit(f"{root} missing: run python /work/shared/datasets/fetch.py cifar10")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    return [(str(p), k) for k, c in enumerate(classes)
            for p in sorted((root / c).iterdir())[:per_class]]


# -- the two input pipelines: each yields (x float normalized NCHW, y) per batch ------------------
class FileDataset:
    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image
        path, label = self.items[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


class TorchvisionPipeline:
    def __init__(self, train, test, size, scale, batch, seed):
        from torch.utils.data import DataLoader
        from torchvision.transforms import v2
        tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
        aug = v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True),
                          v2.RandomHorizontalFlip(0.5), v2.ColorJitter(**JITTER), *tail])
        self.train = DataLoader(FileDataset(train, aug), batch_size=batch, shuffle=True,
                                num_workers=2, persistent_workers=True, drop_last=True,
                                generator=torch.Generator().manual_seed(seed))
        self.test = DataLoader(FileDataset(test, v2.Compose([v2.Resize(size), v2.CenterCrop(size),
                                                             *tail])),
                               batch_size=500, num_workers=2)

    def train_batches(self, epoch):
        yield from self.train

    def test_batches(self):
        yield from self.test


class VistrainPipeline:
    def __init__(self, train, test, size, scale, batch, seed, cache_dir: Path, fused: bool = True):
        from vistrain.data.cache.build import build_pixel_caches
        from vistrain.data.cache.pixels import EvalAndTrainPixels
        from vistrain.data.loader import ArrayBatches
        from vistrain.transforms.ops import ColorJitter, RandomHorizontalFlip, RandomResizedCrop
        from vistrain.transforms.pipeline import AugmentPipeline
        from vistrain.transforms.preprocess import Preprocess
        self.pre = Preprocess(size=size, crop_pct=1.0, mean=MEAN, std=STD)
        fn = EvalAndTrainPixels(self.pre)
        s = fn.train_size
        items = train + test
        (evals, squares), bad = build_pixel_caches(
            [p for p, _ in items], fn, [(3, size, size), (3, s, s)],
            specs=[{"size": size}, {"train": s}], cache_dir=cache_dir, workers=2, progress=False)
        assert not bad, bad
        labels = np.array([y for _, y in items])
        n = len(train)
        self.train = ArrayBatches(squares, labels, batch_size=batch, indices=np.arange(n),
                                  shuffle=True, seed=seed, drop_last=True)
        self.test = ArrayBatches(evals, labels, batch_size=500, indices=np.arange(n, len(items)))
        self.augment = AugmentPipeline([RandomResizedCrop(size, scale=scale),
                                        RandomHorizontalFlip(0.5),
                                        ColorJitter(**JITTER, fused=fused)])
        self.gen = torch.Generator().manual_seed(seed)

    def train_batches(self, epoch):
        self.train.set_epoch(epoch)
        for x, y in self.train:
            pre = self.pre
            yield self.augment.normalized(x, pre.scale, pre.mean, pre.std, generator=self.gen), y

    def test_batches(self):
        for x, y in self.test:
            yield self.pre.normalize(x), y


class PlainPipeline:
    """The limit: one normalized float batch held in memory, handed out ``n_train // batch``
    times per epoch (no decode, no augmentation, no loader)."""

    def __init__(self, n_train, size, batch, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 3, size, size, generator=g)
        self.y = torch.randint(0, 10, (batch,), generator=g)
        self.steps = n_train // batch

    def train_batches(self, epoch):
        for _ in range(self.steps):
            yield self.x, self.y

    def test_batches(self):
        yield self.x, self.y


# -- the shared training loop ---------------------------------------------------------------------
def train_and_test(pipe, args, seed: int, n_train: int) -> dict:
    from vistrain.device import Runtime
    from vistrain.models.scratch import create_scratch
    rt = Runtime.create("cpu", cpu_amp=args.cpu_amp)
    torch.manual_seed(seed)
    model = rt.prepare_model(create_scratch(args.model, 10, in_chans=3, input_size=args.size))
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps = args.epochs * (n_train // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps,
                                                pct_start=0.25)
    epoch_s = []
    for epoch in range(args.epochs):
        model.train()
        t = time.perf_counter()
        for x, y in pipe.train_batches(epoch):
            with rt.autocast():
                logits = model(rt.to_device(x))
            loss = F.cross_entropy(logits.float(), torch.as_tensor(y), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epoch_s.append(time.perf_counter() - t)
    model.eval()
    correct = total = 0
    with torch.no_grad(), rt.autocast():
        for x, y in pipe.test_batches():
            pred = model(rt.to_device(x)).float().argmax(1)
            correct += int((pred == torch.as_tensor(y)).sum())
            total += len(pred)
    return {"seed": seed, "test_accuracy": correct / total, "n_test": total,
            "epoch_seconds_median": statistics.median(epoch_s), "epoch_seconds": epoch_s}


def summarize(results: dict) -> str:
    lines = ["| pipeline | runs | test accuracy per seed | mean ± std | s / epoch (median) |",
             "|---|---:|---|---|---:|"]
    means = {}
    for side, runs in results.items():
        accs = [r["test_accuracy"] for r in runs]
        means[side] = (statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0,
                       len(accs))
        per_seed = ", ".join(f"{a:.4f}" for a in accs)
        sec = statistics.median(r["epoch_seconds_median"] for r in runs)
        lines.append(f"| {side} | {len(accs)} | {per_seed} | {means[side][0]:.4f} ± "
                     f"{means[side][1]:.4f} | {sec:.1f} |")
    if "torchvision" in means:
        (m2, s2, n2) = means["torchvision"]
        lines.append("")
        for side in (s for s in means if s != "torchvision"):
            m1, s1, n1 = means[side]
            se = (s1 ** 2 / n1 + s2 ** 2 / n2) ** 0.5
            lines.append(f"difference of means ({side} - torchvision): {m1 - m2:+.4f} "
                         f"(standard error {se:.4f})")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--test-per-class", type=int, default=None, help="default: all 1,000")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.35, 1.0))
    ap.add_argument("--model", default="vistrain/resnet20")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cpu-amp", choices=("off", "auto", "bf16"), default="auto")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vistrain-pipeline-accuracy.json"))
    ap.add_argument("--sides", nargs="+", choices=("vistrain", "vistrain-hsv", "torchvision"),
                    default=["vistrain", "torchvision"],
                    help="vistrain-hsv: ColorJitter(fused=False), the exact sequential HSV jitter")
    args = ap.parse_args(argv)
    rec = Record("pipeline_accuracy", MODULES)
    torch.set_num_threads(2)
    train, test = items_of("train", args.train_per_class), items_of("test", args.test_per_class)
    from vistrain.artifact import versions
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{versions()}; train {len(train)} / test {len(test)} images, {args.model}, "
          f"{args.epochs} epochs, seeds {args.seeds}", flush=True)
    results = {side: [] for side in args.sides}
    plain: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="vt-acc-cache-") as cache:
        for seed in args.seeds:
            for side in results:
                kw = dict(size=args.size, scale=tuple(args.scale), batch=args.batch_size, seed=seed)
                pipe = (VistrainPipeline(train, test, cache_dir=Path(cache), fused=side == "vistrain",
                                         **kw)
                        if side.startswith("vistrain") else TorchvisionPipeline(train, test, **kw))
                r = train_and_test(pipe, args, seed, len(train))
                results[side].append(r)
                print(f"  {side:11s} seed {seed}: test accuracy {r['test_accuracy']:.4f}  "
                      f"({r['epoch_seconds_median']:.1f} s/epoch)", flush=True)
                args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                "versions": versions(), "results": results},
                                               indent=1))
            kw = dict(size=args.size, batch=args.batch_size, seed=seed)
            plain.append(train_and_test(PlainPipeline(len(train), **kw), args, seed, len(train)))
            print(f"  plain loop  seed {seed}: {plain[-1]['epoch_seconds_median']:.1f} s/epoch "
                  "(the limit: same model and steps, one batch in memory)", flush=True)
    print(summarize(results))
    write_record(rec, args, results, plain, len(train), len(test))


def write_record(rec, args, results: dict, plain: list[dict], n_train: int, n_test: int) -> None:
    """Every run (accuracy, every epoch's seconds), the summary, and each side's s/epoch beside
    the plain loop's."""
    limit_s = statistics.median(r["epoch_seconds_median"] for r in plain)
    derived = {"n_train": n_train, "n_test": n_test, "plain_seconds_per_epoch": limit_s, "sides": {}}
    limits = {}
    for side, runs in results.items():
        accs = [r["test_accuracy"] for r in runs]
        sec = statistics.median(r["epoch_seconds_median"] for r in runs)
        derived["sides"][side] = {"accuracy_mean": statistics.mean(accs),
                                  "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                  "seconds_per_epoch": sec}
        limits[side] = limit(n_train / sec, n_train / limit_s, "img/s",
                             "plain PyTorch loop, same model, optimizer and steps, one batch in memory")
    rec.write(params=vars(args), repeats={**results, "plain": plain}, derived=derived, limits=limits)


if __name__ == "__main__":
    main()
