"""The default recipe against every fixed recipe, on a panel of real data sets, within one budget.

Every automatic decision of ``vistrain train`` (strategy auto and its recipe race, calibration)
is judged here, on data sets it was not tuned on, as a user runs it: one ``vistrain train`` process
per run, each data set written as an image folder, the same split (vistrain's stratified
hold-out, ``data.split_seed`` 0: 70 % train, 15 % val, 15 % test) and seed for every run.

The panel (``--only`` picks some):

===============  ===========================================================================
``shipped``      the shipped sample (examples/fashion-mnist-small: 2,000 28 px grey images)
``fmnist-100``   Fashion-MNIST, 100 images per class (1,000)
``fmnist-1000``  Fashion-MNIST, 1,000 images per class (10,000)
``cifar-100``    CIFAR-10, 100 images per class (1,000 32 px colour photos)
``cifar-500``    CIFAR-10, 500 images per class (5,000)
``digits``       scikit-learn's bundled ``load_digits`` (1,797 8 px grey digits, as PNGs)
===============  ===========================================================================

The runs: ``default`` (``vistrain train DATA --budget B``: strategy auto) and the fixed recipes
``feature-extraction``, ``finetune``, ``gradual`` (EfficientNet-Lite0 at its 224 px) and
``scratch`` (``vistrain/resnet20`` from scratch at the images' own size, grey when they are), each
with the same ``--budget`` (a fixed recipe's epochs are cut to fit it, as for a user).

Printed per data set: test accuracy (95 % bootstrap interval), seconds, and the checks -- the
default within 1 point of the best fixed recipe, within the budget plus 10 %, never more than 0.5
points below the frozen head -- and whether calibration kept the test ECE within its interval.
One record goes to ``benchmarks/results/panel.json`` (:mod:`_record`; ``derived`` holds every
run, its checks and the race's record).

    python benchmarks/panel.py --out /tmp/panel                       # all, 15 min budget
    python benchmarks/panel.py --out /tmp/panel --only digits,shipped --budget 5

Data: ``python ../shared/datasets/fetch.py fashion-mnist`` and ``cifar10-npz`` (into
~/.cache/vision-data); the digits come with scikit-learn.  Each data set gets its own cache
folder (``VISTRAIN_CACHE``); the default runs first, on a cold cache, and the fixed recipes after
it may reuse its decoded pixels and features (their seconds are then lower than a first run's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _record import RESULTS, Record, limit
from docs import PANEL_RECIPES as RECIPES, panel_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = Path.home() / ".cache" / "vision-data"
SETS = ("shipped", "fmnist-100", "fmnist-1000", "cifar-100", "cifar-500", "digits")


def write_npz_folder(npz: Path, keys: tuple[str, str], per_class: int, out: Path, seed: int = 0) -> Path:
    """``per_class`` images of each class of ``npz`` (arrays ``keys``, names ``classes``) as
    ``out/<class>/<n>.png``, a stratified random sample; written once (``.complete``)."""
    if (out / ".complete").is_file():
        return out
    if not npz.is_file():
        raise SystemExit(f"{npz}: not found; run `python ../shared/datasets/fetch.py "
                         f"{'fashion-mnist' if 'fashion' in npz.name else 'cifar10-npz'}`")
    data = np.load(npz, allow_pickle=False)
    x, y = data[keys[0]], data[keys[1]]
    classes = [str(c).replace("/", "_") for c in data["classes"]]
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in rng.choice(np.flatnonzero(y == k), per_class, replace=False):
            Image.fromarray(x[i]).save(out / name / f"{i:05d}.png")
    (out / ".complete").write_text("")
    return out


def write_digits(out: Path) -> Path:
    """scikit-learn's 1,797 8x8 digits (values 0-16) as 8-bit grey PNGs, ``out/<digit>/<n>.png``."""
    if (out / ".complete").is_file():
        return out
    from sklearn.datasets import load_digits
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8)).save(out / str(label) / f"{i:04d}.png")
    (out / ".complete").write_text("")
    return out


def data_folder(name: str, work: Path) -> Path:
    if name == "shipped":
        return ROOT / "examples" / "fashion-mnist-small"
    if name == "digits":
        return write_digits(work / "data" / "digits")
    kind, per_class = name.split("-")
    if kind == "fmnist":
        return write_npz_folder(DATA / "fashion-mnist.npz", ("x", "y"), int(per_class), work / "data" / name)
    return write_npz_folder(DATA / "cifar10.npz", ("xtrain", "ytrain"), int(per_class), work / "data" / name)


def native_size(folder: Path) -> tuple[int, bool]:
    """``(shorter side, grey)`` of the first image: the panel's sets are uniform."""
    first = next(p for p in sorted(folder.rglob("*.png")))
    with Image.open(first) as im:
        return min(im.size), im.mode in ("L", "I;16", "1")


def recipe_flags(recipe: str, folder: Path) -> list[str]:
    if recipe == "default":
        return []
    if recipe == "scratch":
        size, grey = native_size(folder)
        return ["--model", "vistrain/resnet20", "--strategy", "finetune", "--set", f"preprocess.size={size}",
                *(["--set", "preprocess.grayscale=true"] if grey else [])]
    return ["--strategy", recipe]


def train(folder: Path, out: Path, recipe: str, budget: float, cache: Path) -> dict:
    """One ``vistrain train`` process; its test metrics, calibration, seconds and choice."""
    cmd = [str(Path(sys.executable).parent / "vistrain"), "train", str(folder), "--out", str(out), "--overwrite",
           "--budget", f"{budget:g}", *recipe_flags(recipe, folder)]
    env = {**os.environ, "VISTRAIN_CACHE": str(cache)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"recipe": recipe, "error": tail[0], "seconds": round(seconds, 1)}
    return read_run(out, recipe, seconds)


def read_run(out: Path, recipe: str, seconds: float) -> dict:
    """A finished run's row: test accuracy (95 % interval), the test ECE's bootstrap interval,
    calibration, epochs, strategy and the race's record."""
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    test = metrics["test"]
    reasoning = run["strategy"].get("reasoning") or {}
    return {"recipe": recipe, "accuracy": test["accuracy"],
            "ci": (test.get("ci95") or {}).get("accuracy"), "seconds": round(seconds, 1),
            "epochs": len(json.loads((out / "history.json").read_text())),
            "strategy": run["strategy"].get("strategy"), "chosen": reasoning.get("race", {}).get("winner"),
            "calibration": {k: v for k, v in (test.get("calibration") or {}).items()
                            if not k.startswith("reliability")},  # the curves are in the run folder
            "ece_ci": (test.get("ci95") or {}).get("ece"),
            "race": reasoning.get("race")}


def checks(rows: dict, budget: float) -> dict:
    """The panel's promises for one data set, from its rows (``{recipe: result}``)."""
    d = rows.get("default", {})
    fixed = [r for k, r in rows.items() if k != "default" and "accuracy" in r]
    if "accuracy" not in d or not fixed:
        return {}
    best = max(fixed, key=lambda r: r["accuracy"])
    frozen = rows.get("feature-extraction", {})
    out = {"best_fixed": best["recipe"], "gap_to_best": round(best["accuracy"] - d["accuracy"], 4),
           "within_1pt_of_best": d["accuracy"] >= best["accuracy"] - 0.01,
           "within_budget_plus_10pct": d["seconds"] <= budget * 60 * 1.1}
    if "accuracy" in frozen:
        out["not_below_frozen_by_0.5pt"] = d["accuracy"] >= frozen["accuracy"] - 0.005
    cal, ci = d.get("calibration") or {}, d.get("ece_ci") or {}
    if cal.get("ece_before") is not None and cal.get("ece_after") is not None:
        # "worse by more than its interval": the half width of the calibrated test ECE's 95 %
        # bootstrap interval (metrics.json test ci95.ece); a row without it gets no slack
        slack = (ci["high"] - ci["low"]) / 2 if ci else 0.0
        out["calibration_not_worse"] = cal["ece_after"] <= cal["ece_before"] + slack
    return out


def recheck(out: Path) -> dict:
    """The committed record with every row re-read from its run folder under ``out`` (where it
    is still there) and the checks computed again: a corrected check needs no new runs.  The
    record's provenance (commit, date, machine, seconds) is the runs', kept as it is."""
    record = json.loads((RESULTS / "panel.json").read_text())
    panel = record["derived"]
    for name, s in panel["sets"].items():
        for recipe, row in s["rows"].items():
            if "accuracy" in row and (out / name / recipe / "metrics.json").is_file():
                s["rows"][recipe] = read_run(out / name / recipe, recipe, row["seconds"])
        s["checks"] = checks(s["rows"], panel["budget_minutes"])
    return record


PANEL_MODULES = ["vistrain/training/auto.py", "vistrain/training/race.py", "vistrain/evaluation/calibration.py"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown", type=Path, help="print the table of this record and stop")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", default=",".join(SETS), help="comma-separated data sets")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated fixed recipes")
    ap.add_argument("--budget", type=float, default=15.0, help="minutes per run (vistrain's default 15)")
    ap.add_argument("--merge", action="store_true",
                    help="add these runs to the committed record's other rows (e.g. one recipe again)")
    ap.add_argument("--no-default", action="store_true", help="the fixed recipes only (with --merge)")
    ap.add_argument("--recheck", action="store_true",
                    help="re-read the committed record's runs from --out and compute its checks again (no training)")
    args = ap.parse_args()
    if args.markdown:
        print(panel_table(json.loads(args.markdown.read_text())["derived"]))
        return
    if args.out is None:
        ap.error("--out DIR is required")
    if args.recheck:
        record = recheck(args.out)
        tmp = RESULTS / ".panel.json.tmp"
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(RESULTS / "panel.json")
        print_table(record["derived"], record["derived"]["budget_minutes"])
        return
    sets = [s for s in args.only.split(",") if s]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SystemExit(f"--only {','.join(unknown)}: choose from {', '.join(SETS)}")
    rec = Record("panel", modules=PANEL_MODULES)
    panel = {"budget_minutes": args.budget, "sets": {}}
    if args.merge and (RESULTS / "panel.json").is_file():
        panel = json.loads((RESULTS / "panel.json").read_text())["derived"]
    for name in sets:
        folder = data_folder(name, args.out)
        rows = panel["sets"].get(name, {}).get("rows", {})
        for recipe in (*(() if args.no_default else ("default",)), *(r for r in args.recipes.split(",") if r)):
            rows[recipe] = train(folder, args.out / name / recipe, recipe, args.budget, args.out / name / "cache")
            r = rows[recipe]
            print(f"{name:<12} {recipe:<19} " + (f"test acc {r['accuracy']:.4f}  {r['seconds']:7.1f} s"
                  + (f"  (race winner {r['chosen']})" if r.get("chosen") else "")
                  if "accuracy" in r else f"failed: {r['error']}"), flush=True)
        panel["sets"][name] = {"rows": rows, "checks": checks(rows, args.budget)}
        write_record(rec, args, panel)  # after each set: a long panel keeps what it measured
    print_table(panel, args.budget)


def write_record(rec: Record, args, panel: dict) -> None:
    """The panel as a benchmark record: every run's seconds as repeats, the default's accuracy
    beside the best fixed recipe's (its limit on the same data, the same run)."""
    repeats, limits = {}, {}
    for name, s in panel["sets"].items():
        runs = {k: r for k, r in s["rows"].items() if "accuracy" in r}
        repeats[name] = {k: [r["seconds"]] for k, r in runs.items()}
        fixed = [r["accuracy"] for k, r in runs.items() if k != "default"]
        if "default" in runs and fixed:
            limits[name] = limit(runs["default"]["accuracy"], max(fixed), "test accuracy",
                                 "the best fixed recipe on the same split, same budget")
    rec.write(params={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              repeats=repeats, derived=panel, limits=limits)


def print_table(record: dict, budget: float) -> None:
    print(f"\nbudget {budget:g} min per run")
    print(f"{'data set':<12} {'default':>16} " + " ".join(f"{r[:12]:>16}" for r in RECIPES) + "  checks")
    for name, s in record["sets"].items():
        cells = []
        for recipe in ("default", *RECIPES):
            r = s["rows"].get(recipe, {})
            cells.append(f"{r['accuracy']:.3f} {r['seconds']:6.0f}s" if "accuracy" in r else "-")
        bad = [k for k, v in s["checks"].items() if v is False]
        print(f"{name:<12} " + " ".join(f"{c:>16}" for c in cells) + "  " + ("ok" if not bad else "FAIL " + ",".join(bad)))


if __name__ == "__main__":
    main()
