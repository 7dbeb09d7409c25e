"""Training from shards reaches the same test accuracy as training from the folder (CIFAR-10).

Data: the first ``--per-class`` training and ``--test-per-class`` test images of each CIFAR-10
class (sorted names; ``python /work/shared/datasets/fetch.py cifar10 --root ROOT``), linked into
``OUT/data/{train,test}/<class>/``, so the official test images are the test part and the
validation part is 15 % of train/ (stratified, split seed 0).  ``vistrain pack OUT/data --out
OUT/shards`` writes the same images as WebDataset shards; the script first checks that the shards'
parts (``index.json``: ``files`` and one letter t/v/e per sample in ``parts``) hold exactly the
files of the folder run's parts (``splits.json``: ``parts.<part>.files``), and of the shard run's
(whose ``splits.json`` names samples by key: the position in ``index.json``'s ``files``).

Then, for each seed in ``--seeds`` (``--seed``: initialisation and shuffling; the split is fixed),
interleaved, the same command is run on both sources::

    vistrain train OUT/data   --out OUT/runs/folder-sN --model vistrain/resnet20 --strategy finetune
        --set preprocess.size=32 --epochs E --set data.num_workers=2 --seed N
    vistrain train OUT/shards --out OUT/runs/shards-sN  (the same settings)

The folder run reads a memory-mapped pixel cache (decoded once, then reused by the later seeds);
the shard run streams and decodes the shards in 2 worker processes through a shuffle buffer, so
the batches' order and the augmentation draws differ between the two sources even for one seed.
Printed: per seed the test accuracy (``metrics.json``), where the pixels came from (``run.json``
``cache``) and the wall time; per source mean ± sample std; the difference of the means with its
standard error, and whether it is within two standard errors; the difference paired by seed (one
seed gives both sources the same initial weights).  Results go to OUT/results.json.

Each training process runs with ``OMP_NUM_THREADS=--threads`` (default 1): on a small machine
shared with other jobs, more OpenMP threads than free cores spin-wait and slow a CPU step down
many times over.  Both sources get the same setting.

    python benchmarks/shards_parity.py --root /tmp/vt-scale/cifar10 --out /tmp/vt-parity
    python benchmarks/shards_parity.py --root /tmp/vt-scale/cifar10 --out /tmp/vt-parity-smoke \\
        --per-class 20 --test-per-class 10 --epochs 1 --seeds 0          # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _record import Record
from calibration_probe import link_subset  # this folder: run as python benchmarks/shards_parity.py
from vistrain.data.shards.index import PART_CODES

DEFAULT_ROOT = Path.home() / ".cache" / "vision-data" / "cifar10"
SOURCES = ("folder", "shards")


def vistrain_cli() -> list[str]:
    exe = Path(sys.executable).with_name("vistrain")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vistrain.cli.main"]


def shard_parts(shards: Path) -> tuple[dict[str, set[str]], list[str]]:
    """The files of each part by ``index.json``, and its ``files`` (position = sample key)."""
    index = json.loads((shards / "index.json").read_text())
    files, codes = index["files"], index["parts"]
    assert len(files) == len(codes) == index["samples"], "index.json: files / parts / samples differ"
    parts: dict[str, set[str]] = {p: set() for p in PART_CODES.values()}
    for f, c in zip(files, codes):
        parts[PART_CODES[c]].add(f)
    return parts, files


def run_parts(run: Path, files: list[str]) -> dict[str, set[str]]:
    """The files of each part by a run's ``splits.json``; a shard run lists sample keys (the
    position in ``index.json``'s ``files``, zero-padded), mapped back to the file here."""
    doc = json.loads((run / "splits.json").read_text())
    return {p: {files[int(f)] if f.isdigit() and "/" not in f else f for f in v["files"]}
            for p, v in doc["parts"].items()}


def compare_parts(shards: dict[str, set[str]], run: dict[str, set[str]], what: str) -> bool:
    same = True
    for part in PART_CODES.values():
        a, b = shards.get(part, set()), run.get(part, set())
        if a != b:
            same = False
            print(f"  MISMATCH {what} {part}: {len(a)} in index.json, {len(b)} in splits.json, "
                  f"{len(a - b)} only in the shards, {len(b - a)} only in the run", flush=True)
    if same:
        print(f"  split check ({what}): identical file lists, "
              + ", ".join(f"{p} {len(shards[p])}" for p in PART_CODES.values()), flush=True)
    return same


def train(cli: list[str], source: Path, out: Path, seed: int, args) -> dict:
    cmd = [*cli, "train", str(source), "--out", str(out), "--overwrite",
           "--model", args.model, "--strategy", "finetune", "--set", f"preprocess.size={args.size}",
           "--epochs", str(args.epochs), "--set", f"data.num_workers={args.workers}",
           "--seed", str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = out.parent.parent / "logs" / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - t
    if rc != 0:
        tail = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-15:]
        raise SystemExit(f"{shlex.join(cmd)} failed (exit {rc}); last lines of {log}:\n"
                         + "\n".join(tail))
    metrics = json.loads((out / "metrics.json").read_text())
    record = json.loads((out / "run.json").read_text())
    cache = record.get("cache") or {}
    return {"seed": seed, "test_accuracy": metrics["test"]["accuracy"],
            "n_test": metrics["test"]["n_samples"], "val_accuracy": metrics["val"]["accuracy"],
            "where": cache.get("where"), "cache": cache, "wall_seconds": round(seconds, 1),
            "run_wall_seconds": record.get("wall_seconds"), "command": shlex.join(cmd)}


def summarize(results: dict[str, list[dict]]) -> str:
    seeds = [r["seed"] for r in results["folder"]]
    lines = ["| seed | folder: test acc | pixels from | wall s | shards: test acc | pixels from "
             "| wall s | shards - folder |", "|---:|---:|---|---:|---:|---|---:|---:|"]
    for i, seed in enumerate(seeds):
        f, s = results["folder"][i], results["shards"][i] if i < len(results["shards"]) else None
        if s is None:
            continue
        lines.append(f"| {seed} | {f['test_accuracy']:.4f} | {f['where']} | {f['wall_seconds']:.0f} "
                     f"| {s['test_accuracy']:.4f} | {s['where']} | {s['wall_seconds']:.0f} "
                     f"| {s['test_accuracy'] - f['test_accuracy']:+.4f} |")
    stats = {}
    lines += ["", "| source | runs | test accuracy mean ± std | wall s (median) |",
              "|---|---:|---|---:|"]
    for src in SOURCES:
        accs = [r["test_accuracy"] for r in results[src]]
        if not accs:
            continue
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        stats[src] = (statistics.mean(accs), sd, len(accs))
        wall = statistics.median(r["wall_seconds"] for r in results[src])
        lines.append(f"| {src} | {len(accs)} | {stats[src][0]:.4f} ± {sd:.4f} | {wall:.0f} |")
    if len(stats) == 2:
        (m1, s1, n1), (m2, s2, n2) = stats["shards"], stats["folder"]
        se = (s1 ** 2 / n1 + s2 ** 2 / n2) ** 0.5
        diff = m1 - m2
        verdict = ("within noise (|difference| <= 2 standard errors)" if abs(diff) <= 2 * se
                   else "NOT within noise (|difference| > 2 standard errors)")
        lines += ["", f"difference of means (shards - folder): {diff:+.4f} ± {se:.4f} (standard "
                      f"error); {verdict}"]
        paired = [s["test_accuracy"] - f["test_accuracy"]
                  for f, s in zip(results["folder"], results["shards"])]
        if len(paired) > 1:   # one seed gives both sources the same initialisation
            lines.append(f"paired by seed: mean difference {statistics.mean(paired):+.4f} ± "
                         f"{statistics.stdev(paired) / len(paired) ** 0.5:.4f} (standard error), "
                         f"range {min(paired):+.4f} to {max(paired):+.4f}")
    return "\n".join(lines)


def machine() -> str:
    import torch

    import vistrain
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        ram = float("nan")
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"machine: {cpu}, {os.cpu_count()} CPUs, {ram:.1f} GiB RAM; Python "
            f"{platform.python_version()}, torch {torch.__version__}, vistrain {vistrain.__version__}; "
            f"{time.strftime('%Y-%m-%d')}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                    help="CIFAR-10 as {train,test}/<class>/*.png (default %(default)s)")
    ap.add_argument("--per-class", type=int, default=500, help="training images per class")
    ap.add_argument("--test-per-class", type=int, default=300, help="test images per class")
    ap.add_argument("--model", default="vistrain/resnet20")
    ap.add_argument("--size", type=int, default=32, help="preprocess.size")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each training run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clean", action="store_true",
                    help="delete OUT/runs and OUT/shards at the end (results.json and the logs stay)")
    args = ap.parse_args(argv)
    rec = Record("shards_parity", ["vistrain/data/shards/stream.py", "vistrain/data/shards/write.py",
                                   "vistrain/data/shards/index.py", "vistrain/data/shards/__init__.py"])
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]), flush=True)
    print(machine(), flush=True)
    cli = vistrain_cli()
    data = link_subset(args.root, args.out / "data",
                       {"train": args.per_class, "test": args.test_per_class})
    shards = args.out / "shards"
    t = time.perf_counter()
    pack = subprocess.run([*cli, "pack", str(data), "--out", str(shards), "--overwrite", "--json"],
                          capture_output=True, text=True)
    if pack.returncode != 0:
        raise SystemExit(f"vistrain pack failed (exit {pack.returncode}):\n{pack.stderr[-3000:]}")
    packed = json.loads(pack.stdout)
    print(f"pack: {packed['samples']} images -> {packed['shards']} shard(s), "
          f"{packed['bytes'] / 2 ** 20:.1f} MiB ({packed['compress']}), parts {packed['parts']}, "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    parts_in_shards, shard_files = shard_parts(shards)
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {src: [] for src in SOURCES}
    split_ok: dict[str, bool] = {}
    for seed in args.seeds:
        for src, path in (("folder", data), ("shards", shards)):
            out = runs / f"{src}-s{seed}"
            r = train(cli, path, out, seed, args)
            results[src].append(r)
            if src not in split_ok:
                split_ok[src] = compare_parts(parts_in_shards, run_parts(out, shard_files),
                                              f"index.json vs the {src} run's splits.json")
            print(f"  {src:6s} seed {seed}: test accuracy {r['test_accuracy']:.4f} "
                  f"(n={r['n_test']}), pixels from {r['where']}, {r['wall_seconds']:.0f} s",
                  flush=True)
            (args.out / "results.json").write_text(json.dumps(
                {"argv": sys.argv, "machine": machine(), "split_identical": split_ok,
                 "pack": packed, "results": results}, indent=1))
    print()
    print(f"{args.model}, preprocess.size={args.size}, {args.epochs} epochs, strategy finetune, "
          f"data.num_workers={args.workers}, OMP_NUM_THREADS={args.threads}; "
          f"{sum(len(v) for v in parts_in_shards.values())} images "
          f"(train {len(parts_in_shards['train'])} / val {len(parts_in_shards['val'])} / "
          f"test {len(parts_in_shards['test'])}); split identical: "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in split_ok.items()))
    print(summarize(results))
    rec.write(params=vars(args), repeats=results, derived={"split_identical": split_ok, "pack": packed},
              limits={})
    if args.clean:
        shutil.rmtree(runs, ignore_errors=True)
        shutil.rmtree(shards, ignore_errors=True)


if __name__ == "__main__":
    main()
