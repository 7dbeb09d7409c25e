"""Scale: WebDataset shards (``vistrain pack`` + ``ShardBatches``) vs the pixel cache, 10k-200k images.

For each size N (``--sizes``), a class folder of N CIFAR-10 train PNGs (32 x 32) is built from
hard links (file ``j`` of a class is CIFAR image ``j mod 5000`` of that class), packed into
shards once per ``--compress`` setting (``write_shards`` as ``vistrain pack`` calls it: parts as
training splits them, size 256, PNG stays PNG; ``none``: ``.tar``, ``gzip``: ``.tar.gz``), and
read back; measured per size and compression:

* ``stream S``: :class:`ShardBatches` (train part, shuffled, buffer 2,000, ``--workers`` decode
  processes) at ``S = 32`` (CIFAR's native size) and at the train-size decode ``S = 256`` (the
  side the pixel cache stores for the default model: 224 / 0.875);
* ``cache S``: the pixel cache of the same images (``build_pixel_cache``, memory-mapped) read by
  :class:`ArrayBatches` (shuffled), when its ``N * 3 * S * S`` bytes stay under ``--cache-max-gb``;
  otherwise only its size is reported (the estimate).

Images/s over ``--batches`` batches of 64 after ``--warmup`` batches, median over ``--repeats``
epochs (each a fresh iterator); the stream measurements run after every size is packed, in
``--rounds`` rounds that go through all sizes in turn, so that other load on a shared machine
hits every size alike: their median is over rounds x repeats, with the middle half (quartiles).
The window is the steady state at every size: the warm-up (35 batches = 2,240 samples) covers
filling the 2,000-sample shuffle buffer, and warm-up + measured batches stay below
``samples - buffer`` of the smallest size (7,000 train samples of 10k: at an epoch's end the
buffer drains without reading, which would flatter it); peak memory of
the process tree (main + decode workers), sampled every 0.1 s from ``/proc/PID/smaps_rollup``:
PSS (shared pages split among the processes that map them; the cache's memory-mapped pages count
once they are touched) and the RSS sum.  Every measurement runs in its own fresh process.
Disk: shard bytes vs the source files' bytes (file sizes) and their allocated blocks.  The
folders, shards and pixel caches stay under ``--work`` (reruns reuse the folders); delete it after.

    python benchmarks/scale.py                                   # 10k, 50k, 200k
    python benchmarks/scale.py --sizes 10000,50000 --repeats 3 --rounds 1
    python benchmarks/scale.py --sizes 10000 --compress gzip
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _record import Record

BATCH, BUFFER, TRAIN_SIZE = 64, 2000, 256


def build_folder(cifar: Path, root: Path, n: int) -> Path:
    """``n`` images (n/10 per class) as hard links to the CIFAR train PNGs."""
    if root.exists() and sum(1 for _ in root.rglob("*.png")) == n:
        return root
    classes = sorted(p.name for p in cifar.iterdir() if p.is_dir())
    for c in classes:
        files = sorted((cifar / c).glob("*.png"))
        (root / c).mkdir(parents=True, exist_ok=True)
        for j in range(n // len(classes)):
            dst = root / c / f"{j:06d}.png"
            if not dst.exists():
                os.link(files[j % len(files)], dst)
    return root


def read_once(data: Path) -> None:
    """Read every source file once, so that no pack setting pays the cold reads for the others."""
    for f in sorted(data.rglob("*.png")):
        f.read_bytes()


def pack(data: Path, out: Path, workers: int, compress: str) -> dict:
    from vistrain.workflows.pack import pack as pack_folder
    t = time.perf_counter()
    info = pack_folder(data, out=out, workers=workers, overwrite=True, progress=False, compress=compress)
    return dict(info, seconds=time.perf_counter() - t)


# ---- one measurement, in a fresh process -----------------------------------------------------
def tree_memory(pid: int) -> tuple[int, int]:
    """``(PSS, RSS)`` bytes summed over ``pid`` and all its descendants."""
    pss = rss = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return pss, rss


def descendants(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in open(f"/proc/{pid}/task/{task}/children").read().split():
                out += [int(child), *descendants(int(child))]
    except OSError:
        pass
    return out


class PeakMemory(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak_pss = self.peak_rss = 0
        self.stop = False

    def run(self):
        while not self.stop:
            pss, rss = tree_memory(os.getpid())
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            time.sleep(0.1)


def measure(loader_fn, batches: int, warmup: int, repeats: int) -> dict:
    mon = PeakMemory()
    mon.start()
    rates = []
    for r in range(repeats):
        loader = loader_fn(r)
        it = iter(loader)
        for _ in range(warmup):
            next(it)
        t = time.perf_counter()
        n = sum(len(next(it)[1]) for _ in range(batches))
        rates.append(n / (time.perf_counter() - t))
        del it
    mon.stop = True
    mon.join()
    return {"rates": rates, "images_per_s": statistics.median(rates),
            "peak_pss": mon.peak_pss, "peak_rss": mon.peak_rss}


def child(spec: dict) -> dict:
    import torch
    torch.set_num_threads(1)
    if spec["kind"] == "stream":
        from vistrain.data.shards.stream import ShardBatches

        def make(r):
            b = ShardBatches(spec["shards"], size=spec["size"], batch_size=BATCH, part="train",
                             shuffle=True, buffer_size=BUFFER, num_workers=spec["workers"])
            b.set_epoch(r)
            return b
        return measure(make, spec["batches"], spec["warmup"], spec["repeats"])
    from vistrain.data.cache.build import build_pixel_cache
    from vistrain.data.loader import ArrayBatches
    from vistrain.data.scan import scan_folder
    from vistrain.transforms.preprocess import Preprocess
    index = scan_folder(spec["data"])
    s = spec["size"]
    t = time.perf_counter()
    pixels, _ = build_pixel_cache(index.paths, Preprocess(size=s, crop_pct=1.0).pixels, (3, s, s),
                                  spec={"bench": "scale", "size": s}, cache_dir=Path(spec["cache"]),
                                  workers=spec["workers"], progress=False)
    build = time.perf_counter() - t

    def make(r):
        return ArrayBatches(pixels, index.labels, batch_size=BATCH, shuffle=True, seed=r)
    return dict(measure(make, spec["batches"], spec["warmup"], spec["repeats"]), build_seconds=build)


def run_child(spec: dict) -> dict:
    env = dict(os.environ, VISTRAIN_CACHE=spec.get("cache", os.environ.get("VISTRAIN_CACHE", "")),
               VISTRAIN_CACHE_MAX_GB="0")
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                       text=True, env=env)
    if p.returncode:
        raise SystemExit(f"child failed: {spec}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- the table ------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--cifar", default="/tmp/vt-scale/cifar10/train",
                    help="CIFAR-10 train folder (python ../shared/datasets/fetch.py cifar10 --root /tmp/vt-scale)")
    ap.add_argument("--work", default="/tmp/vt-scale/work")
    ap.add_argument("--compress", default="none,gzip", help="pack settings to compare, comma-separated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=35)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="stream measurements: passes over all sizes")
    ap.add_argument("--cache-max-gb", type=float, default=2.5)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    rec = Record("scale", ["vistrain/data/shards/__init__.py", "vistrain/data/shards/index.py",
                           "vistrain/data/shards/stream.py", "vistrain/data/shards/write.py",
                           "vistrain/data/loader.py", "vistrain/data/cache/build.py",
                           "vistrain/data/cache/decode.py"])
    work, rows, started = Path(args.work), [], time.time()
    load = LoadAverage()
    load.start()
    common = dict(workers=args.workers, batches=args.batches, warmup=args.warmup, repeats=args.repeats)
    compress = args.compress.split(",")
    for n in map(int, args.sizes.split(",")):
        data = build_folder(Path(args.cifar), work / f"data-{n}", n)
        read_once(data)
        row = {"n": n, "pack": {}}
        for c in compress:
            info = row["pack"][c] = pack(data, work / f"shards-{n}-{c}", args.workers, c)
            need = (args.warmup + args.batches) * BATCH
            if info["parts"]["train"] < need:
                raise SystemExit(f"--sizes {n}: {info['parts']['train']} train samples, fewer than the "
                                 f"{need} that --warmup {args.warmup} + --batches {args.batches} read "
                                 f"(batches of {BATCH}); use more images or fewer batches")
        for s in (32, TRAIN_SIZE):
            est = n * 3 * s * s
            row[f"cache{s}_bytes"] = est
            if est <= args.cache_max_gb * 1e9:
                row[f"cache{s}"] = run_child(dict(common, kind="cache", data=str(data), size=s,
                                                  cache=str(work / "cache")))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for _ in range(args.rounds):
        for row in rows:
            for c in compress:
                for s in (32, TRAIN_SIZE):
                    m = run_child(dict(common, kind="stream", shards=row["pack"][c]["out"], size=s))
                    row.setdefault(f"stream{s}-{c}", []).append(m)
                    print(json.dumps({"n": row["n"], f"stream{s}-{c}": m}), file=sys.stderr, flush=True)
    for row in rows:
        for c in compress:
            for s in (32, TRAIN_SIZE):
                runs = row[f"stream{s}-{c}"]
                rates = [x for m in runs for x in m["rates"]]
                row[f"stream{s}-{c}"] = {"rates": rates, "images_per_s": statistics.median(rates),
                                         "peak_pss": max(m["peak_pss"] for m in runs),
                                         "peak_rss": max(m["peak_rss"] for m in runs)}
    load.stop = True
    report(rows, args, time.time() - started, load)
    rec.write(params=vars(args), repeats=rows, derived={"load_samples": load.samples}, limits={})


class LoadAverage(threading.Thread):
    """The 1-minute load average, sampled every 10 s while the benchmark runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stop = [], False

    def run(self):
        while not self.stop:
            self.samples.append(os.getloadavg()[0])
            time.sleep(10)


def report(rows: list[dict], args, seconds: float, load: LoadAverage) -> None:
    import numpy
    import PIL
    import torch
    print(f"# machine: {platform.platform()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
          f"torch {torch.__version__}, NumPy {numpy.__version__}, Pillow {PIL.__version__}; "
          f"{datetime.date.today()}; {seconds / 60:.1f} min; 1-min load average "
          f"{min(load.samples):.1f}-{max(load.samples):.1f} (median {statistics.median(load.samples):.1f})")
    print(f"# command: python benchmarks/scale.py --sizes {args.sizes} --compress {args.compress} "
          f"--workers {args.workers} --batches {args.batches} --warmup {args.warmup} --repeats {args.repeats} "
          f"--rounds {args.rounds}")
    print("\n| images | compress | pack (s) | shards (MB) | source files (MB) | ratio | source on disk (MB) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for c, p in r["pack"].items():
            print(f"| {r['n']:,} | {c} | {p['seconds']:.0f} | {p['bytes'] / 1e6:.1f} | {p['source_bytes'] / 1e6:.1f} | "
                  f"{p['ratio']:.2f}x | {p['source_disk_bytes'] / 1e6:.0f} | {p['disk_ratio']:.2f}x |")
    print("\n| images | path | S | images/s (median) | middle half | vs first size | peak PSS tree (MB) "
          "| peak RSS sum (MB) | cache (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {}
    kinds = [f"stream{{s}}-{c}" for c in args.compress.split(",")] + ["cache{s}"]
    for r in rows:
        for kind in kinds:
            for s in (32, TRAIN_SIZE):
                m = r.get(kind.format(s=s))
                label = kind.format(s="").replace("stream-", "stream ")
                size = f"{r[f'cache{s}_bytes'] / 1e6:,.0f}" if label == "cache" else "-"
                if m is None:
                    print(f"| {r['n']:,} | {label} | {s} | not built (estimate over --cache-max-gb) | | | | | {size} |")
                    continue
                base.setdefault((label, s), m["images_per_s"])
                q = statistics.quantiles(m["rates"], n=4) if len(m["rates"]) > 1 else m["rates"] * 3
                print(f"| {r['n']:,} | {label} | {s} | {m['images_per_s']:,.0f} | {q[0]:,.0f}-{q[2]:,.0f} | "
                      f"{m['images_per_s'] / base[(label, s)]:.2f} | {m['peak_pss'] / 1e6:,.0f} | "
                      f"{m['peak_rss'] / 1e6:,.0f} | {size} |")


if __name__ == "__main__":
    main()
