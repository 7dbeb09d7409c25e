"""Full training input pipeline throughput: torchvision v2 vs albumentations vs vistrain.

Each side turns image files into normalized float batches (64 x 3 x 224 x 224) with
random resized crop 224 (area 8-100%) + horizontal flip + colour jitter (brightness, contrast,
saturation 0.2, hue 0.05) + ImageNet normalization, on the CPU, 2 worker processes:

* ``torchvision``: ImageFolder-style Dataset, PIL decode of every file every epoch,
  ``v2.RandomResizedCrop/RandomHorizontalFlip/ColorJitter/ToImage/ToDtype/Normalize``,
  ``DataLoader(num_workers=2, persistent_workers=True)``;
* ``albumentations``: the same Dataset with OpenCV decode (``cv2.imread`` + BGR->RGB) and
  ``A.RandomResizedCrop/HorizontalFlip/ColorJitter/Normalize`` + ``ToTensorV2``, same DataLoader;
* ``vistrain``: epoch 1 builds the pixel cache (2 decode processes; the exact eval crop 224 and
  the train square of data/cache/__init__.py -- 256, or the images' own size when all are smaller, 32 for
  CIFAR -- from one decode, written to a fresh cache folder: the cost is counted in epoch 1), then
  every epoch is ``ArrayBatches`` (memory-mapped, shuffled) + one batch ``AugmentPipeline`` call
  (the crop + flip on uint8 with torch's antialiased resize kernel; the colour jitter as one colour
  matrix per image, applied before the crop when the crop enlarges) and the normalization, as
  one ``AugmentPipeline.normalized`` call, as the training loop makes it (for CIFAR's 32 px the
  small source is normalized first and the crop resampled last as two matrix products), in the
  main process (2 threads), after ``Runtime.create("cpu")`` as a training run makes it, with
  freed host memory kept for reuse as ``vistrain train --host-memory reuse`` does (see
  ``vistrain.device.keep_freed_host_memory``; ``--host-memory system`` measures without it);
* ``vistrain-hsv``: the same with ``ColorJitter(fused=False)``: the four jitter steps one after
  another with clamping and the exact HSV hue rotation, as torchvision computes them.

Images/s for epoch 1 and for later epochs (median of ``--epochs - 1``; with ``--repeats R``, the
median over R rounds, and each ratio the median of the R same-round ratios), and peak memory: each
side runs in its own fresh process; ``resource.getrusage`` ``ru_maxrss`` of that process (main)
and of its largest child (a DataLoader worker / decode process) are reported.  The cache's
memory-mapped pages count in the vistrain main RSS when touched (file-backed, reclaimable).

Data: (a) ``~/.cache/vision-data/photos/*.jpg`` (0.3-18 MP JPEGs) symlinked round-robin into a
temporary 2-class folder of ``--photos`` files; (b) a ``--cifar`` image subset of
``~/.cache/vision-data/cifar10/train`` (first N/10 files of each class, sorted names).

    python benchmarks/pipeline.py                       # both data sets, 3 epochs each
    python benchmarks/pipeline.py --only photos --epochs 2
    python benchmarks/pipeline.py --repeats 3            # medians and ranges over 3 rounds

Limit: the memory bandwidth of writing the float batches.  Each round also times a STREAM-style
copy of one batch's bytes (64 x 3 x 224 x 224 float32, 38.5 MB) between two preallocated numpy
arrays, split over ``WORKERS`` threads: no pipeline can hand out batches faster than it can
write them, so ``64 / copy seconds`` img/s is the bound and the record gives the fraction of it
that each vistrain side reaches in later epochs (``benchmarks/results/pipeline.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import Record, limit

BATCH, SIZE, WORKERS = 64, 224, 2
# the vistrain side's host-memory setting (--host-memory; passed to the per-side child processes)
HOST_MEMORY = os.environ.get("VISTRAIN_BENCH_HOST_MEMORY", "reuse")
JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATA = Path.home() / ".cache" / "vision-data"
SIDES = ("torchvision", "albumentations", "vistrain", "vistrain-hsv")
# the code the vistrain sides' figures measure (a newer commit of one of them makes the record stale)
MODULES = ["vistrain/data/cache/build.py", "vistrain/data/cache/decode.py",
           "vistrain/data/cache/pixels.py", "vistrain/data/loader.py", "vistrain/imageio/read.py",
           "vistrain/imageio/jpeg.py", "vistrain/device.py", "vistrain/transforms/pipeline.py",
           "vistrain/transforms/normalize.py", "vistrain/transforms/preprocess.py",
           "vistrain/transforms/resize.py", "vistrain/transforms/functional/batch.py",
           "vistrain/transforms/functional/colour.py", "vistrain/transforms/functional/geometry.py",
           "vistrain/transforms/functional/resample.py", "vistrain/transforms/ops/base.py",
           "vistrain/transforms/ops/colour.py", "vistrain/transforms/ops/geometry.py",
           "vistrain/transforms/ops/sampling.py"]


# -- data ----------------------------------------------------------------------------------------
def photo_folder(root: Path, n: int) -> list[tuple[str, int]]:
    photos = sorted((DATA / "photos").glob("*.jpg"))
    if not photos:
        sys.exit(f"no photos in {DATA / 'photos'}")
    items = []
    for i in range(n):
        label = i % 2
        dst = root / f"class{label}" / f"{i:05d}_{photos[i % len(photos)].name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(photos[i % len(photos)])
        items.append((str(dst), label))
    return items


def cifar_subset(n: int) -> list[tuple[str, int]]:
    root = DATA / "cifar10" / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    per = n // len(classes)
    return [(str(p), k) for k, c in enumerate(classes) for p in sorted((root / c).iterdir())[:per]]


# -- the three pipelines ---------------------------------------------------------------------------
class FileDataset:
    def __init__(self, items, load, transform):
        self.items, self.load, self.transform = items, load, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.transform(self.load(path)), label


def pil_load(path):
    from PIL import Image
    with Image.open(path) as img:
        return img.convert("RGB")


def cv2_load(path):
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class AlbuTransform:
    def __init__(self):
        import albumentations as A
        from albumentations.pytorch import ToTensorV2
        self.t = A.Compose([A.RandomResizedCrop(size=(SIZE, SIZE), scale=(0.08, 1.0)),
                            A.HorizontalFlip(p=0.5), A.ColorJitter(**JITTER, p=1.0),
                            A.Normalize(mean=MEAN, std=STD), ToTensorV2()])

    def __call__(self, img):
        return self.t(image=img)["image"]


def _cv2_single_thread(_):
    import cv2
    cv2.setNumThreads(1)


def loader_epochs(side: str, items, epochs: int):
    import torch
    from torch.utils.data import DataLoader
    if side == "torchvision":
        from torchvision.transforms import v2
        t = v2.Compose([v2.RandomResizedCrop(SIZE, scale=(0.08, 1.0), antialias=True),
                        v2.RandomHorizontalFlip(0.5), v2.ColorJitter(**JITTER), v2.ToImage(),
                        v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
        ds, init = FileDataset(items, pil_load, t), None
    else:
        ds, init = FileDataset(items, cv2_load, AlbuTransform()), _cv2_single_thread
    dl = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                    persistent_workers=True, worker_init_fn=init,
                    generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, _y in dl:
            assert x.shape[1:] == (3, SIZE, SIZE) and x.dtype == torch.float32
        times.append(time.perf_counter() - start)
    return times


def vistrain_epochs(items, epochs: int, cache_dir: Path, fused: bool = True):
    import numpy as np
    import torch
    from vistrain.data.cache.build import build_pixel_caches
    from vistrain.data.cache.pixels import EvalAndTrainPixels
    from vistrain.data.loader import ArrayBatches
    from vistrain.device import Runtime, keep_freed_host_memory
    from vistrain.transforms.ops import ColorJitter, RandomHorizontalFlip, RandomResizedCrop
    from vistrain.transforms.pipeline import AugmentPipeline
    from vistrain.transforms.preprocess import Preprocess
    torch.set_num_threads(WORKERS)
    if HOST_MEMORY == "reuse":  # as `vistrain train --host-memory reuse`
        keep_freed_host_memory()
    Runtime.create("cpu")
    pre = Preprocess(size=SIZE, mean=MEAN, std=STD)
    paths, labels = [p for p, _ in items], np.array([y for _, y in items])
    augment = AugmentPipeline([RandomResizedCrop(SIZE, scale=(0.08, 1.0)), RandomHorizontalFlip(0.5),
                               ColorJitter(**JITTER, fused=fused)])
    times, train = [], None
    for epoch in range(epochs):
        start = time.perf_counter()
        if train is None:  # as vistrain.training.run.prepare_data does
            fn = EvalAndTrainPixels.for_paths(pre, paths, cache_dir)
            t = fn.train_size
            (_, train), bad = build_pixel_caches(
                paths, fn, [(3, SIZE, SIZE), (3, t, t)], specs=[{"size": SIZE}, {"train": t}],
                cache_dir=cache_dir, workers=WORKERS, progress=False)
            assert not bad, bad
        batches = ArrayBatches(train, labels, batch_size=BATCH, shuffle=True, seed=0)
        batches.set_epoch(epoch)
        for x, _y in batches:
            x = augment.normalized(x, pre.scale, pre.mean, pre.std)  # as the training loop
            assert x.shape[1:] == (3, SIZE, SIZE) and x.dtype == torch.float32
        times.append(time.perf_counter() - start)
    return times


def run_one(side: str, items_file: str, epochs: int) -> None:
    """Child process: time one side, print one JSON line."""
    items = json.loads(Path(items_file).read_text())
    if side.startswith("vistrain"):
        with tempfile.TemporaryDirectory(prefix="vt-bench-cache-") as d:
            times = vistrain_epochs(items, epochs, Path(d), fused=side == "vistrain")
    else:
        times = loader_epochs(side, items, epochs)
    kb = 1024  # ru_maxrss is KiB on Linux
    print(json.dumps({"times": times, "n": len(items),
                      "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb / 2**20,
                      "rss_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kb / 2**20}))


# -- driver ------------------------------------------------------------------------------------------
def measure(side, items, epochs, tmp: Path) -> dict:
    f = tmp / "items.json"
    f.write_text(json.dumps(items))
    for p, _ in items:  # warm the page cache: every side reads files already in memory
        Path(p).read_bytes()
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--child", side, str(f), str(epochs)],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    n, ts = res["n"], res["times"]
    res.update(first=n / ts[0], later=n / statistics.median(ts[1:]) if len(ts) > 1 else float("nan"),
               load=load)
    print(f"  {side:15s} epoch times {[round(x, 1) for x in ts]} s, load {load:.1f}", flush=True)
    return res


def copy_bound(threads: int = WORKERS, repeats: int = 21) -> dict:
    """STREAM-style copy of one float batch's bytes with ``threads`` numpy threads (numpy drops
    the GIL while copying): seconds of every repeat, and the img/s a pipeline writing these
    batches cannot exceed."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    src = np.ones(BATCH * 3 * SIZE * SIZE, np.float32)
    dst = np.empty_like(src)
    edges = np.linspace(0, src.size, threads + 1).astype(int)

    def part(i):
        np.copyto(dst[edges[i]:edges[i + 1]], src[edges[i]:edges[i + 1]])

    times = []
    with ThreadPoolExecutor(threads) as pool:
        for r in range(repeats + 2):  # two warm-up copies: page faults of dst, thread start
            t = time.perf_counter()
            list(pool.map(part, range(threads)))
            if r >= 2:
                times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"seconds": times, "bytes": int(src.nbytes), "threads": threads,
            "gb_per_s": src.nbytes / med / 1e9, "img_per_s": BATCH / med}


def derive(res: dict) -> dict:
    """Per side: median img/s over rounds and the median (and range) of the per-round ratios."""
    def ratio(side, key, peer):
        rs = sorted(r[key] / p[key] for r, p in zip(res[side], res[peer]))
        return {"median": statistics.median(rs), "low": rs[0], "high": rs[-1]}

    return {side: {"first": statistics.median(r["first"] for r in res[side]),
                   "later": statistics.median(r["later"] for r in res[side]),
                   "first_vs_torchvision": ratio(side, "first", "torchvision"),
                   "later_vs_torchvision": ratio(side, "later", "torchvision"),
                   "later_vs_albumentations": ratio(side, "later", "albumentations"),
                   "rss_main_mb": max(r["rss_main_mb"] for r in res[side]),
                   "rss_child_mb": max(r["rss_child_mb"] for r in res[side])} for side in SIDES}


def table(name: str, res: dict) -> str:
    """``res[side]`` is a list of rounds; img/s are medians over rounds, ratios the medians of the
    per-round ratios (each round's sides ran back to back), with their range when there are more."""
    def ratio(side, key, peer):
        rs = sorted(r[key] / p[key] for r, p in zip(res[side], res[peer]))
        med = f"{statistics.median(rs):.2f}x"
        return med if len(rs) == 1 else f"{med} ({rs[0]:.2f}-{rs[-1]:.2f})"

    lines = [f"{name}", "| pipeline | epoch 1 img/s | later epochs img/s | epoch 1 vs torchvision | "
             "later vs torchvision | later vs albumentations | peak RSS main / largest worker (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for side in SIDES:
        rounds = res[side]
        med = {k: statistics.median(r[k] for r in rounds) for k in ("first", "later")}
        rss = max(r["rss_main_mb"] for r in rounds), max(r["rss_child_mb"] for r in rounds)
        lines.append(f"| {side} | {med['first']:.1f} | {med['later']:.1f} | "
                     f"{ratio(side, 'first', 'torchvision')} | {ratio(side, 'later', 'torchvision')} | "
                     f"{ratio(side, 'later', 'albumentations')} | {rss[0]:.0f} / {rss[1]:.0f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_one(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="epoch 1 + (epochs-1) later epochs")
    ap.add_argument("--photos", type=int, default=512, help="photo files (symlinks), 2 classes")
    ap.add_argument("--cifar", type=int, default=5000, help="CIFAR-10 train subset size")
    ap.add_argument("--only", choices=["photos", "cifar"])
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of all sides back to back; medians and ranges over rounds")
    ap.add_argument("--host-memory", choices=["reuse", "system"], default="reuse",
                    help="vistrain side: keep freed host memory for reuse (as `vistrain train "
                         "--host-memory reuse`) or leave glibc's allocator as it is")
    args = ap.parse_args()
    rec = Record("pipeline", MODULES)
    os.environ["VISTRAIN_BENCH_HOST_MEMORY"] = args.host_memory
    import albumentations
    import cv2
    import torch
    import torchvision
    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, albumentations {albumentations.__version__}, opencv "
          f"{cv2.__version__}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"batch {BATCH}, size {SIZE}, {WORKERS} workers, {args.epochs} epochs, vistrain host "
          f"memory: {args.host_memory}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-"))
    repeats, derived, limits = {}, {}, {}
    try:
        sets = []
        if args.only in (None, "photos"):
            sets.append(("photos", f"photos ({args.photos} files from {len(list((DATA / 'photos').glob('*.jpg')))} "
                         "JPEGs, 0.3-18 MP)", photo_folder(tmp / "photos", args.photos)))
        if args.only in (None, "cifar") and (DATA / "cifar10" / "train").is_dir():
            sets.append(("cifar", f"CIFAR-10 train subset ({args.cifar} PNGs, 32x32)", cifar_subset(args.cifar)))
        for key, name, items in sets:
            print(name, flush=True)
            res = {side: [] for side in SIDES}
            copies = []
            for r in range(args.repeats):
                if args.repeats > 1:
                    print(f" round {r + 1}/{args.repeats}", flush=True)
                for side in SIDES:
                    res[side].append(measure(side, items, args.epochs, tmp))
                copies.append(copy_bound())
            print(table(name, res), flush=True)
            bound = statistics.median(c["img_per_s"] for c in copies)
            print(f"limit: numpy copy of a float batch, {WORKERS} threads: {bound:.0f} img/s "
                  f"({statistics.median(c['gb_per_s'] for c in copies):.1f} GB/s)", flush=True)
            repeats[key] = {**res, "copy_bound": copies}
            derived[key] = {"title": name, "n": len(items), "sides": derive(res),
                            "copy_bound_img_per_s": bound,
                            "copy_bound_gb_per_s": statistics.median(c["gb_per_s"] for c in copies)}
            for side in ("vistrain", "vistrain-hsv"):
                limits[f"{key}.{side}"] = limit(
                    derived[key]["sides"][side]["later"], bound, "img/s",
                    f"numpy copy of one {BATCH}x3x{SIZE}x{SIZE} float32 batch, {WORKERS} threads")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rec.write(params=vars(args) | {"batch": BATCH, "size": SIZE, "workers": WORKERS},
              repeats=repeats, derived=derived, limits=limits)


if __name__ == "__main__":
    main()
