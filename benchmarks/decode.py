"""Decode + resize throughput on real photos: plain PIL full decode vs vistrain's loader.

Both sides turn a JPEG file into an RGB image whose *shorter side* is ``--short`` pixels (256),
bicubic, antialiased:

* PIL: ``Image.open(p).convert("RGB").resize(shorter_side_size(...), BICUBIC)`` (full decode);
* vistrain: ``load_image(p, min_side=short)`` (libjpeg reduced-scale DCT decode via ``draft``,
  keeping the shorter side >= ``DRAFT_MARGIN * short``) + the same bicubic resize.

For every photo both sides run alternately, ``--repeats`` times (after one warm-up), and the
median wall time of each is kept; images/s per size bucket are the number of photos in the bucket
divided by the sum of their medians.  Also printed: the mean / max absolute pixel difference
(grey levels, 0..255) between the two outputs.

Limit: libjpeg-turbo's DCT-scaled decode of the same file, timed in the same alternation:
``Image.open(p)`` + ``draft("RGB", size)`` + ``load()`` with ``size`` the output size (PIL's
draft picks the largest DCT scale, 1/2 to 1/8, that still covers it), no resize: the cheapest
way libjpeg produces an image at least as large as the output.  The record
(``benchmarks/results/decode.json``) gives vistrain's img/s as a fraction of it per bucket
(above 1 where the DC-only path of ``vistrain/imageio/jpeg.py`` skips entropy decoding that
libjpeg's scaling cannot).

    python /work/shared/datasets/fetch.py photos       # ~/.cache/vision-data/photos/*.jpg
    python benchmarks/decode.py                        # 5 repeats
    python benchmarks/decode.py --repeats 3 --folder DIR
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features

from _record import Record, limit
from vistrain.imageio import read as vio
from vistrain.imageio.read import load_image
from vistrain.transforms.resize import shorter_side_size

BUCKETS = [(0, 2), (2, 5), (5, 10), (10, 1000)]  # megapixels, [lo, hi)
MODULES = ["vistrain/imageio/read.py", "vistrain/imageio/jpeg.py", "vistrain/transforms/resize.py"]


def pil_full(path: Path, short: int) -> Image.Image:
    img = Image.open(path).convert("RGB")
    return img.resize(shorter_side_size(*img.size, short), Image.Resampling.BICUBIC)


def vistrain_draft(path: Path, short: int, size: tuple[int, int]) -> Image.Image:
    img = load_image(path, min_side=short)
    # the output size of the full-resolution geometry, so the two outputs are comparable pixelwise
    return img.resize(size, Image.Resampling.BICUBIC)


def dct_scaled(path: Path, size: tuple[int, int]) -> Image.Image:
    """The limit: libjpeg's reduced-scale decode to at least ``size``, nothing else."""
    img = Image.open(path)
    img.draft("RGB", size)
    img.load()
    return img


def main() -> None:
    rec = Record("decode", MODULES)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(Path.home() / ".cache/vision-data/photos"))
    parser.add_argument("--short", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--margin", type=float, default=None,
                        help="override vistrain.imageio.read.DRAFT_MARGIN (speed/accuracy trade-off)")
    args = parser.parse_args()
    if args.margin is not None:
        vio.DRAFT_MARGIN = args.margin
    paths = sorted(Path(args.folder).glob("*.jp*g"))
    if not paths:
        raise SystemExit(f"no JPEGs in {args.folder}; run: python /work/shared/datasets/fetch.py photos")
    print(f"# {platform.platform()}, Python {platform.python_version()}, Pillow {PIL.__version__}, "
          f"numpy {np.__version__}; {len(paths)} photos, shorter side -> {args.short}, "
          f"median of {args.repeats}, DRAFT_MARGIN={vio.DRAFT_MARGIN}")
    rows = []
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
            progressive = bool(im.info.get("progressive") or im.info.get("progression"))
        out_size = shorter_side_size(w, h, args.short)
        fns = {"pil": lambda: pil_full(p, args.short),
               "vistrain": lambda: vistrain_draft(p, args.short, out_size),
               "dct_scaled": lambda: dct_scaled(p, out_size)}
        outs = {k: f() for k, f in fns.items()}  # warm-up (file cache) + outputs for the diff
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = np.abs(np.asarray(outs["pil"], np.int16) - np.asarray(outs["vistrain"], np.int16))
        rows.append(dict(name=p.name, mp=w * h / 1e6, prog=progressive, pil=med["pil"], vis=med["vistrain"],
                         dct=med["dct_scaled"], mad=float(diff.mean()), maxd=int(diff.max()),
                         times=times, size=[w, h]))
        print(f"{p.name:28s} {'P' if progressive else 'B'} {w}x{h:<5d} {w*h/1e6:5.1f} MP  PIL {med['pil']*1e3:7.1f} ms  "
              f"vistrain {med['vistrain']*1e3:6.1f} ms  x{med['pil']/med['vistrain']:4.1f}  "
              f"|diff| mean {diff.mean():.2f} max {diff.max()}", flush=True)
    print("(B: baseline JPEG, P: progressive JPEG: libjpeg's reduced-scale decode saves the IDCT and "
          "colour conversion, not the entropy decoding, which dominates progressive files)")
    print()
    print("| photos (MP) | n | PIL full decode img/s | vistrain draft img/s | ratio | mean abs diff "
          "| limit: DCT-scaled decode img/s | fraction |")
    print("|---|---|---|---|---|---|---|---|")
    buckets, limits = [], {}
    groups = [(f"{lo}-{hi}" if hi < 1000 else f">= {lo}", [r for r in rows if lo <= r["mp"] < hi])
              for lo, hi in BUCKETS + [(2, 1000), (0, 1000)]]
    groups += [(">= 2, baseline JPEG", [r for r in rows if r["mp"] >= 2 and not r["prog"]]),
               (">= 2, progressive JPEG", [r for r in rows if r["mp"] >= 2 and r["prog"]])]
    for label, sel in groups:
        if not sel:
            continue
        pil = len(sel) / sum(r["pil"] for r in sel)
        vis = len(sel) / sum(r["vis"] for r in sel)
        dct = len(sel) / sum(r["dct"] for r in sel)
        mad = statistics.mean(r["mad"] for r in sel)
        print(f"| {label} | {len(sel)} | {pil:.1f} | {vis:.1f} | {vis / pil:.2f}x | {mad:.2f} "
              f"| {dct:.1f} | {vis / dct:.2f} |")
        buckets.append({"bucket": label, "n": len(sel), "progressive": sum(r["prog"] for r in sel),
                        "pil_img_s": pil, "vistrain_img_s": vis, "ratio": vis / pil, "mad": mad,
                        "dct_scaled_img_s": dct})
        limits[label] = limit(vis, dct, "img/s", "PIL draft (libjpeg DCT scaling) to the output size + load")
    rec.write(params=vars(args) | {"draft_margin": vio.DRAFT_MARGIN, "photos": len(paths)},
              repeats=rows, derived={"buckets": buckets}, limits=limits,
              extra={"libjpeg_turbo": features.version("libjpeg_turbo")})


if __name__ == "__main__":
    main()
