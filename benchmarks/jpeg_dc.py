"""DC-only 1/8-scale decode of progressive JPEGs (vistrain.imageio.jpeg) vs PIL draft decodes.

For every progressive JPEG in the folder, median-of-``--repeats`` wall time of:

* ``1/4``: ``Image.open`` + ``draft("RGB", (W // 4, H // 4))`` + ``load`` (the current path);
* ``1/8``: the same at ``(W // 8, H // 8)``;
* ``dc``: ``decode_dc_only(path)`` (read, drop the AC scans, decode at 1/8), exact mode;
* ``dc~``: ``decode_dc_only(path, exact=False)`` (4:2:0 chroma AC dropped too);

whether ``dc`` equals ``1/8`` pixel for pixel, and the mean absolute difference (grey levels,
0..255) to the reference ``full decode + bicubic antialiased resize, shorter side -> --short``
of each reduced decode resized the same way (``mad 1/4``, ``mad dc``).

    python benchmarks/jpeg_dc.py                  # ~/.cache/vision-data/photos, 3 repeats
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _record import Record
from vistrain.imageio.jpeg import decode_dc_only, dc_only_stream


SUBSAMPLING = {(1, 1): "444", (2, 1): "422", (2, 2): "420", (1, 2): "440"}  # luma h, v factors


def draft_decode(path: Path, scale: int) -> Image.Image:
    img = Image.open(path)
    img.draft("RGB", (img.width // scale, img.height // scale))
    img.load()
    return img


def resize_short(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    out = img.convert("RGB").resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
    return np.asarray(out, dtype=np.float64)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    rec = Record("jpeg_dc", ["vistrain/imageio/jpeg.py"])
    rows = []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(Path.home() / ".cache/vision-data/photos"))
    parser.add_argument("--short", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'file':26s} {'size':>10s} {'sub':>4s} {'MB':>5s} {'dcMB':>5s} {'1/4 ms':>7s} "
          f"{'1/8 ms':>7s} {'dc ms':>6s} {'dc~ ms':>6s} exact {'mad 1/4':>7s} {'mad dc':>6s}")
    for p in sorted(Path(args.folder).glob("*.jp*g")):
        data = p.read_bytes()
        stream = dc_only_stream(data)
        if stream is None:
            continue   # not progressive
        full = Image.open(p)
        w, h = full.size
        sub = SUBSAMPLING.get(tuple(full.layer[0][1:3]), "?") if len(full.layer) == 3 else "-"
        size = (round(w * args.short / h), args.short) if w >= h else \
            (args.short, round(h * args.short / w))
        ref = resize_short(full, size)
        quarter, eighth, dc = draft_decode(p, 4), draft_decode(p, 8), decode_dc_only(p)
        exact = np.array_equal(np.asarray(eighth), np.asarray(dc))
        t4, t8, tdc, tdc2 = (median_time(f, args.repeats) for f in (
            lambda: draft_decode(p, 4), lambda: draft_decode(p, 8),
            lambda: decode_dc_only(p), lambda: decode_dc_only(p, exact=False)))
        mad4 = np.abs(resize_short(quarter, size) - ref).mean()
        mad8 = np.abs(resize_short(dc, size) - ref).mean()
        rows.append({"file": p.name, "size": [w, h], "chroma": sub, "file_mb": len(data) / 1e6,
                     "stream_mb": len(stream) / 1e6, "draft_quarter_s": t4, "draft_eighth_s": t8,
                     "dc_s": tdc, "dc_inexact_s": tdc2, "same_pixels_as_eighth": exact,
                     "mad_quarter": mad4, "mad_dc": mad8})
        print(f"{p.name:26s} {w:>5d}x{h:<4d} {sub:>4s} {len(data) / 1e6:5.1f} "
              f"{len(stream) / 1e6:5.2f} {t4 * 1e3:7.1f} {t8 * 1e3:7.1f} {tdc * 1e3:6.1f} "
              f"{tdc2 * 1e3:6.1f} {str(exact):5s} {mad4:7.2f} {mad8:6.2f}")
    rec.write(params=vars(args), repeats=rows, derived={"files": len(rows)}, limits={})


if __name__ == "__main__":
    main()
