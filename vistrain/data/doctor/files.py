"""The data doctor's checks of every file: decoded in worker processes, one finding per kind.

Unreadable files (training skips them): ``zero-byte``, ``truncated``, ``corrupt``,
``not-an-image``, ``decompression-bomb``, ``unreadable``, and ``unreadable-class`` when nothing of
a class is left.  Properties of the readable ones: ``cmyk``, ``16-bit``, ``converted-modes``,
``mixed-modes``, ``exif-rotated``, ``tiny``, ``extreme-aspect``.  :func:`inspect_files` also
computes each file's sha256 and perceptual hash for the duplicate checks.

Example:
    >>> load_problem("corrupt or truncated image (image file is truncated)")
    'truncated'
    >>> infos = inspect_files(["a.png", "b.jpg"])        # doctest: +SKIP
    >>> findings, sizes, modes = image_findings(infos)   # doctest: +SKIP
"""
from __future__ import annotations

import multiprocessing as mp
from collections import Counter, defaultdict

import numpy as np
from PIL import Image

from vistrain.data.cache.decode import num_workers
from vistrain.data.doctor.hash import HASH_SIZE, phash_and_thumb, sha256_file
from vistrain.data.doctor.report import Finding, listing
from vistrain.imageio.read import load_image
from vistrain.data.scan import ImageIndex
from vistrain.errors import ImageLoadError

TINY_SIDE = 16               # shorter side (px) below which an image carries almost nothing ...
TINY_FRACTION = 0.25         # ... or below this fraction of the folder's median shorter side
HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def _inspect(path: str) -> dict:
    info = {"path": path, "sha256": None, "phash": None, "thumb": None, "size": None, "mode": None,
            "orientation": 1, "error": None}
    try:
        info["sha256"] = sha256_file(path)
    except OSError as err:
        info["error"] = f"cannot read file: {err.strerror or err}"
        return info
    try:
        with Image.open(path) as im:
            info["size"], info["mode"] = list(im.size), im.mode
            info["orientation"] = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:
        pass  # load_image below names the reason
    try:
        img = load_image(path, min_side=HASH_SIZE)
        info["phash"], info["thumb"] = phash_and_thumb(img)
    except ImageLoadError as err:
        info["error"] = err.reason
    except Exception as err:
        info["error"] = f"{type(err).__name__}: {err}"
    return info


def inspect_files(paths, workers: int = -1) -> list[dict]:
    paths = [str(p) for p in paths]
    workers = num_workers(workers)
    if workers <= 1 or len(paths) < 32:
        return [_inspect(p) for p in paths]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        return list(pool.imap(_inspect, paths, chunksize=8))


# Unreadable files by kind: (code, what the files are, the fix).  Training skips all of them.
LOAD_PROBLEMS = {
    "zero-byte": ("empty (0 bytes)", "delete them or export the images again"),
    "truncated": ("truncated (the file ends early)", "copy or download them again, or delete them"),
    "corrupt": ("corrupt (the image data is damaged)", "export them again or delete them"),
    "not-an-image": ("not images PIL can read, despite their extension", "remove them from the data folder"),
    "decompression-bomb": ("declaring more pixels than any photo (possible decompression bomb)",
                           "delete them unless you trust them, then resize them"),
    "unreadable": ("unreadable", "check the file permissions, or delete them"),
}


def load_problem(reason: str) -> str:
    """The ``LOAD_PROBLEMS`` code of one :func:`~vistrain.imageio.read.load_image` failure reason."""
    r = reason.lower()
    if r.startswith("empty file"):
        return "zero-byte"
    if "decompression bomb" in r:
        return "decompression-bomb"
    if r.startswith("not an image"):
        return "not-an-image"
    if r.startswith("corrupt or truncated"):  # PIL's own words are in the parentheses
        inner = r.partition("(")[2]
        return "truncated" if "truncat" in inner or "end of file" in inner else "corrupt"
    if "zero width" in r:
        return "corrupt"
    return "unreadable"


def file_findings(index: ImageIndex, infos: list[dict]) -> list[Finding]:
    """Unreadable files by kind, and classes left without a readable image."""
    by_code: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for inf in infos:
        if inf["error"]:
            by_code[load_problem(inf["error"])].append((inf["path"], inf["error"]))
    out = []
    for code, (what, fix) in LOAD_PROBLEMS.items():
        items = by_code.get(code)
        if items:
            out.append(Finding("warning", code, f"{len(items)} file(s) {what}, skipped by training: "
                               + listing([f"{p} ({r.split(';')[0]})" for p, r in items], sep="; "),
                               [p for p, _ in items], fix))
    bad = {inf["path"] for inf in infos if inf["error"]}
    readable = Counter(y for p, y in zip(index.paths, index.labels) if str(p) not in bad)
    lost = [c for k, c in enumerate(index.classes) if index.counts()[c] and not readable[k]]
    if lost:
        out.append(Finding("error", "unreadable-class", f"every image of class(es) {', '.join(lost)} "
                           "is unreadable", [str(p) for p, y in zip(index.paths, index.labels)
                                             if index.classes[y] in lost],
                           "fix the files or remove the class"))
    return out


# -- image properties ----------------------------------------------------------------------

def image_findings(infos: list[dict]) -> tuple[list[Finding], dict, dict[str, int]]:
    """Modes, orientation and sizes of the readable images: findings, size summary, mode counts."""
    ok = [inf for inf in infos if not inf["error"] and inf["size"]]
    out = []

    def add(severity, code, paths, message, fix):
        if paths:
            out.append(Finding(severity, code, f"{len(paths)} image(s) {message}: {listing(paths)}",
                               paths, fix))
    add("warning", "cmyk", [i["path"] for i in ok if i["mode"] == "CMYK"],
        "stored as CMYK, converted to RGB without a colour profile (colours may shift)",
        "convert them to RGB with a colour-managed tool if colour matters")
    add("info", "16-bit", [i["path"] for i in ok if i["mode"] in HIGH_BIT_MODES],
        "with 16-bit or 32-bit pixels, scaled to 8 bits by their range (fine detail is lost)",
        "nothing to do; export 8-bit images to control the scaling yourself")
    add("info", "converted-modes", [i["path"] for i in ok if i["mode"] not in
                                    HIGH_BIT_MODES | {"RGB", "L", "CMYK"}],
        "not RGB/L, converted to RGB (alpha composited on white, palettes expanded)",
        "nothing to do unless the transparency matters")
    add("info", "exif-rotated", [i["path"] for i in ok if i["orientation"] not in (0, 1)],
        "stored rotated with an EXIF orientation tag (applied when loading; other tools may show "
        "them sideways)", "nothing to do; rotate the pixels if other tools must agree")
    modes = Counter(i["mode"] for i in ok)
    if len(modes) > 1:
        out.append(Finding("info", "mixed-modes", "images of several modes (" + ", ".join(
            f"{m}: {n}" for m, n in sorted(modes.items())) + "); all are converted to RGB",
            fix="nothing to do"))
    if not ok:
        return out, {}, dict(modes)
    w = np.array([i["size"][0] for i in ok])
    h = np.array([i["size"][1] for i in ok])
    short = np.minimum(w, h)
    limit = max(TINY_SIDE, TINY_FRACTION * float(np.median(short)))
    add("warning", "tiny", [i["path"] for i, s in zip(ok, short) if s < limit],
        f"with a shorter side under {limit:.0f} px (blown up to the model's input size)",
        "replace them with larger versions or remove them")
    aspect = w / h
    add("info", "extreme-aspect", [i["path"] for i, a in zip(ok, aspect) if a > 3 or a < 1 / 3],
        "with an aspect ratio beyond 3:1 (a centre crop loses most of them)",
        "use --set preprocess.resize_mode=letterbox, or crop them yourself")
    sizes = [tuple(i["size"]) for i in ok]
    summary = {"min_w": int(w.min()), "min_h": int(h.min()), "median_w": int(np.median(w)),
               "median_h": int(np.median(h)), "max_w": int(w.max()), "max_h": int(h.max()),
               "n_distinct": len(set(sizes)),
               "most_common": [[list(k), n] for k, n in Counter(sizes).most_common(5)]}
    return out, summary, dict(modes)
