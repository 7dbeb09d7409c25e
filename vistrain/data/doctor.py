"""Data doctor: everything that is wrong with an image folder, in one pass, before a model learns it.

:func:`diagnose` (``vistrain doctor DATA``) never stops at the first problem: the folder's
structure and every file are checked and each problem becomes a :class:`Finding` (severity,
code, message, the files involved, the fix) in one list.

Structure (no decoding; :func:`structure_findings`):
  ``no-class-folders``, ``empty-class``, ``single-class``, ``class-not-in-train`` (a val/ or
  test/ class without training images): errors, training refuses such a folder;
  ``split-named-class`` (a ``val/`` folder without ``train/`` is a class); ``outside-class-folder``
  (images training ignores because no class folder holds them); ``non-image-file`` and
  ``system-files`` (``.DS_Store``, ``Thumbs.db``, ``._*`` resource forks, hidden folders).
Files (every image is decoded, in worker processes):
  ``zero-byte``, ``truncated``, ``corrupt``, ``not-an-image``, ``decompression-bomb``,
  ``unreadable`` (training skips these files), ``unreadable-class`` (nothing of a class is left);
  ``cmyk``, ``16-bit``, ``converted-modes``, ``mixed-modes``, ``exif-rotated``, ``tiny``,
  ``extreme-aspect``.
Counts: ``imbalance`` (largest / smallest class), ``missing-in-split``, ``class-too-small`` (for the
  hold-out split of the config's val/test fractions: error; for ``folds`` = K cross-validation:
  error when K is asked for, else a warning for K = ``DEFAULT_FOLDS``).
Pairs: exact duplicates (sha256 of the bytes) and near-duplicates (64-bit DCT perceptual hash,
  Hamming distance <= ``NEAR_DUP_DISTANCE`` = 10, confirmed by 16x16 grey thumbnails differing by
  at most ``NEAR_DUP_MAD`` = 6 grey levels on average: pHash alone matches many distinct but
  similar pictures, e.g. centred objects on black), each pair classified as
  ``duplicate`` (same class, same part), ``conflicting-labels`` (the same picture in two classes),
  ``leakage`` (the same picture in train and val/test of the split training makes, given
  ``train/``/``test/`` folders included: the held-out score is inflated) or ``val-test-overlap``.

``error`` makes training unsound or impossible, ``warning`` deserves a look, ``info`` is context.
``vistrain doctor`` exits 1 when there is an error.

:func:`quick_checks` is the cheap subset (counts, exact-duplicate hashes, no decoding) that
``vistrain train`` runs and logs when ``data.doctor`` is true; :func:`write_doctor_json` saves
its findings as the run's ``doctor.json`` for the report.

Perceptual hash (pHash): grey, 32x32 (PIL box-antialiased bilinear), 2-D DCT-II (NumPy matrix
product), the 8x8 lowest frequencies, one bit per coefficient: above the median of the 63
non-DC coefficients.  Re-encoding, resizing and mild brightness changes move a few bits; different
photos differ in ~32.

Example:
    >>> from vistrain.data.doctor import diagnose
    >>> report = diagnose("data/")          # doctest: +SKIP
    >>> print(report.format())              # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vistrain.config import TrainConfig
from vistrain.data.cache import num_workers
from vistrain.data.io import is_image_file, load_image
from vistrain.data.scan import SPLIT_NAMES, FolderLayout, ImageIndex, folder_layout, scan_folder
from vistrain.data.splits import make_parts
from vistrain.fsutil import atomic_write_json
from vistrain.errors import DataError, ImageLoadError

log = logging.getLogger(__name__)

NEAR_DUP_DISTANCE = 10       # pHash Hamming distance (of 64 bits) that makes a candidate pair
NEAR_DUP_MAD = 6.0           # ... confirmed when the 16x16 grey thumbnails differ by <= this (mean abs, 0..255)
IMBALANCE_WARN = 3.0         # largest / smallest class count that gets a warning
HASH_SIZE = 32               # pHash: grey image side before the DCT
HASH_BITS_SIDE = 8           # pHash: 8x8 low-frequency block -> 64 bits
DEFAULT_FOLDS = 5            # k-fold check when no --folds is given (a warning, not an error)
TINY_SIDE = 16               # shorter side (px) below which an image carries almost nothing ...
TINY_FRACTION = 0.25         # ... or below this fraction of the folder's median shorter side
MAX_LISTED = 5               # files named in a message (all of them are in ``paths``)
SEVERITIES = ("error", "warning", "info")
SYSTEM_NAMES = {".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".directory", "__macosx"}
HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


@dataclass
class Finding:
    """One problem: ``paths`` are every file or folder involved, ``fix`` says what to do."""
    severity: str            # error | warning | info
    code: str                # e.g. "empty-class", "truncated", "leakage"
    message: str
    paths: list[str] = field(default_factory=list)
    fix: str = ""

    def format(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}" + (f"\n    fix: {self.fix}" if self.fix else "")


def summarize(findings: list[Finding]) -> dict[str, int | bool]:
    """Number of findings per severity, and ``ok`` (no error)."""
    n = Counter(f.severity for f in findings)
    return {"errors": n["error"], "warnings": n["warning"], "info": n["info"], "ok": not n["error"]}


@dataclass
class DoctorReport:
    root: str
    classes: list[str]
    counts: dict[str, int]
    findings: list[Finding]
    sizes: dict = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    near_dup_distance: int = NEAR_DUP_DISTANCE

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def summary(self) -> dict:
        return {"images": sum(self.counts.values()), "classes": len(self.classes), **summarize(self.findings)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["findings"] = sorted(d["findings"], key=lambda f: SEVERITIES.index(f["severity"]))
        d["summary"] = self.summary()
        d["ok"] = self.ok
        return d

    def format(self) -> str:
        lines = [f"{self.root}: {sum(self.counts.values())} images, {len(self.classes)} classes"]
        width = max(len(c) for c in self.classes) if self.classes else 0
        lines += [f"  {c:<{width}}  {self.counts[c]}" for c in self.classes]
        if self.sizes:
            s = self.sizes
            lines.append(f"sizes (w x h): min {s['min_w']}x{s['min_h']}, median {s['median_w']}x"
                         f"{s['median_h']}, max {s['max_w']}x{s['max_h']}; {s['n_distinct']} distinct")
        if self.modes:
            lines.append("modes: " + ", ".join(f"{m} {k}" for m, k in sorted(self.modes.items())))
        lines += [f.format() for sev in SEVERITIES for f in self.findings if f.severity == sev]
        s = summarize(self.findings)
        lines.append(f"{s['errors']} error(s), {s['warnings']} warning(s), {s['info']} note(s); "
                     f"near-duplicate = pHash Hamming distance <= {self.near_dup_distance} of 64 bits "
                     f"and 16x16 grey thumbnails within {NEAR_DUP_MAD:g} grey levels (mean abs)"
                     + ("; training is sound as far as these checks go" if s["ok"] else ""))
        return "\n".join(lines)


def _listing(items, n: int = MAX_LISTED, sep: str = ", ") -> str:
    """``a, b, c and 4 more``: the first ``n`` of ``items``."""
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


# -- hashing --------------------------------------------------------------------------------

def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(HASH_SIZE)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash of a PIL image (module docstring)."""
    return phash_and_thumb(img)[0]


def phash_and_thumb(img: Image.Image) -> tuple[int, bytes]:
    """pHash and the 16x16 grey thumbnail (256 bytes) that confirms a near-duplicate candidate."""
    grey = img.convert("L").resize((HASH_SIZE, HASH_SIZE), Image.Resampling.BILINEAR)
    g = np.asarray(grey, dtype=np.float64)
    coeffs = (_DCT @ g @ _DCT.T)[:HASH_BITS_SIDE, :HASH_BITS_SIDE].ravel()
    bits = coeffs > np.median(coeffs[1:])
    thumb = g.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    return int(np.packbits(bits).view(">u8")[0]), np.rint(thumb).astype(np.uint8).tobytes()


def thumb_distance(a: bytes, b: bytes) -> float:
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16)
                        - np.frombuffer(b, np.uint8).astype(np.int16)).mean())


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_pairs(hashes: list[int], max_distance: int = NEAR_DUP_DISTANCE,
               block: int = 512) -> list[tuple[int, int, int]]:
    """All ``(i, j, distance)`` with ``i < j`` and Hamming distance <= ``max_distance``.

    Vectorised all-pairs comparison in row blocks (O(N²) popcounts, O(block·N) memory).
    """
    h = np.asarray(hashes, dtype=np.uint64)
    out = []
    for start in range(0, len(h), block):
        rows = h[start:start + block]
        dist = np.bitwise_count(rows[:, None] ^ h[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii + start, jj):
            if i < j:
                out.append((int(i), int(j), int(dist[i - start, j])))
    return out


# -- structure (no decoding) -------------------------------------------------------------------

def structure_findings(layout: FolderLayout) -> list[Finding]:
    """Problems of the folder layout itself; every one that makes training refuse is an error."""
    if not layout.presplit:
        out = _class_findings(layout.root, layout.splits[""])
        lookalike = sorted(c for c in layout.splits[""] if c.lower() in SPLIT_NAMES)
        if lookalike:
            out.append(Finding("warning", "split-named-class", f"folder(s) {', '.join(lookalike)} "
                               "look like a split, but without a train/ folder they are classes",
                               [str(layout.root / c) for c in lookalike],
                               "add a train/ folder to give your own split, or rename them"))
        return out + _stray_findings(layout)
    train = layout.splits["train"]
    out = _class_findings(layout.root / "train", train)
    for split, per_class in layout.splits.items():
        if split == "train":
            continue
        out += [f for f in _class_findings(layout.root / split, per_class) if f.code == "empty-class"]
        unknown = sorted(set(per_class) - set(train))
        if unknown:
            out.append(Finding("error", "class-not-in-train", f"{layout.root / split}: class(es) "
                               f"{', '.join(unknown)} have no folder in train/",
                               [str(p) for c in unknown for p in per_class[c]],
                               "every class needs training images: add train/<class>/ or remove them"))
    return out + _stray_findings(layout)


def _class_findings(root: Path, per_class: dict[str, list[Path]]) -> list[Finding]:
    if not per_class:
        return [Finding("error", "no-class-folders", f"{root}: no class sub-folders",
                        [str(root)], "put the images in one sub-folder per class: DATA/<class>/<image>")]
    out = []
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        out.append(Finding("error", "empty-class", f"{root}: class folder(s) without images: "
                           f"{', '.join(empty)}", [str(root / c) for c in empty],
                           "add images or remove the folder"))
    with_images = [name for name, files in per_class.items() if files]
    if len(with_images) == 1:
        out.append(Finding("error", "single-class", f"{root}: only one class has images "
                           f"({with_images[0]})", [str(root / with_images[0])],
                           "a classifier needs at least 2 class folders with images"))
    return out


def _stray_findings(layout: FolderLayout) -> list[Finding]:
    """Files training ignores: outside class folders, not images by name, system/hidden files."""
    outside, non_image, system = [], [], []
    for folder, dirs, files in os.walk(layout.root):
        here = Path(folder)
        for d in list(dirs):
            if d.startswith(".") or d.lower() in SYSTEM_NAMES:
                system.append(str(here / d))
                dirs.remove(d)  # not searched by training either
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or name.lower() in SYSTEM_NAMES:
                system.append(str(path))
            elif not is_image_file(path):
                non_image.append(str(path))
            elif not _in_class_folder(layout, path):
                outside.append(str(path))
    out = []
    if outside:
        out.append(Finding("warning", "outside-class-folder", f"{len(outside)} image(s) outside any "
                           f"class folder, ignored by training: {_listing(outside)}", outside,
                           "move them into the folder of their class (DATA/<class>/ or "
                           "DATA/<split>/<class>/)"))
    if non_image:
        out.append(Finding("info", "non-image-file", f"{len(non_image)} file(s) without an image "
                           f"extension, ignored by training: {_listing(non_image)}", non_image,
                           "nothing to do if they are notes; convert images with other extensions"))
    if system:
        out.append(Finding("info", "system-files", f"{len(system)} hidden or system file(s) "
                           f"(.DS_Store, Thumbs.db, ._* resource forks, hidden folders), ignored "
                           f"by training: {_listing(system)}", system,
                           "delete them, e.g. find DATA -name .DS_Store -delete"))
    return out


def _in_class_folder(layout: FolderLayout, path: Path) -> bool:
    parts = path.relative_to(layout.root).parts
    if not layout.presplit:
        return len(parts) >= 2
    return len(parts) >= 3 and parts[0].lower() in SPLIT_NAMES


# -- per-file inspection (in worker processes) ---------------------------------------------

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
    """The ``LOAD_PROBLEMS`` code of one :func:`~vistrain.data.io.load_image` failure reason."""
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
                               + _listing([f"{p} ({r.split(';')[0]})" for p, r in items], sep="; "),
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
            out.append(Finding(severity, code, f"{len(paths)} image(s) {message}: {_listing(paths)}",
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


# -- counts and splits ---------------------------------------------------------------------

def count_findings(index: ImageIndex) -> list[Finding]:
    """Class imbalance, and classes missing from a given val/ or test/ folder."""
    counts = {c: n for c, n in index.counts().items() if n}
    out = []
    if len(counts) >= 2:
        big, small = max(counts, key=counts.get), min(counts, key=counts.get)
        ratio = counts[big] / counts[small]
        sev = "warning" if ratio >= IMBALANCE_WARN else "info"
        what = (f"largest {big!r} {counts[big]}, smallest {small!r} {counts[small]}" if ratio > 1
                else f"{counts[big]} images in every class")
        out.append(Finding(sev, "imbalance", f"imbalance ratio {ratio:.2f} ({what})", [],
                           "training balances the loss (data.balance=auto), but look at per-class "
                           "recall; more images of the small classes help most" if sev == "warning"
                           else "nothing to do"))
    if index.given_split:
        for split in ("val", "test"):
            have = {index.labels[i] for i, s in enumerate(index.given_split) if s == split}
            if have and len(have) < len(index.classes):
                missing = [c for k, c in enumerate(index.classes) if k not in have]
                out.append(Finding("warning", "missing-in-split", f"{split}/ has no images of "
                                   f"{', '.join(missing)}", [],
                                   f"add images of these classes to {split}/ so they are scored"))
    return out


def size_findings(index: ImageIndex, cfg: TrainConfig, folds: int | None) -> list[Finding]:
    """Classes too small for the hold-out split (error) or for k-fold cross-validation (error
    when ``folds`` is asked for, else a warning for ``DEFAULT_FOLDS``)."""
    out = []
    if len(set(index.labels)) < 2:  # nothing to split: the structure findings say why
        return out
    try:
        make_parts(index, cfg.data)
    except DataError as err:
        out.append(Finding("error", "class-too-small", f"the train/val/test split training makes "
                           f"fails: {err}", [], "add images to the classes named, or lower "
                           "data.val_fraction / data.test_fraction (--set data.val_fraction=0.1)"))
    k = folds or DEFAULT_FOLDS
    pool = [y for i, y in enumerate(index.labels)
            if not index.given_split or index.given_split[i] != "test"]
    per_class = Counter(pool)
    small = {c: per_class[j] for j, c in enumerate(index.classes) if 0 < per_class[j] < k}
    if small:
        out.append(Finding("error" if folds else "warning", "class-too-small",
                           f"{k}-fold cross-validation needs >= {k} images per class: "
                           + ", ".join(f"{c!r} ({n})" for c, n in small.items()), [],
                           "add images or use fewer folds (vistrain cv --folds K)"))
    return out


# -- duplicate pairs -----------------------------------------------------------------------

PAIR_SEVERITY = {"conflicting-labels": "error", "leakage": "error", "val-test-overlap": "warning",
                 "duplicate": "warning"}
PAIR_FIX = {"conflicting-labels": "the same picture is labelled two ways; keep it in one class",
            "leakage": "the same picture is in training and held-out parts, inflating the score; "
                       "remove one copy",
            "val-test-overlap": "the same picture is in val (model selection) and test; remove one copy",
            "duplicate": "copies within one class; remove the extra copies"}


def pair_findings(index: ImageIndex, pairs, kind: str, cfg=None, split_of: dict | None = None) -> list[Finding]:
    """Classify duplicate pairs ``(i, j, distance)`` of ``index`` into findings (``cfg`` unused,
    kept for callers of the earlier signature)."""
    groups: dict[str, list] = defaultdict(list)
    for i, j, d in pairs:
        a, b = index.paths[i], index.paths[j]
        la, lb = index.labels[i], index.labels[j]
        if la != lb:
            groups["conflicting-labels"].append((a, b, d, f"{index.classes[la]!r} vs {index.classes[lb]!r}"))
        sa = split_of.get(i) if split_of else None
        sb = split_of.get(j) if split_of else None
        if sa and sb and sa != sb:
            code = "leakage" if "train" in (sa, sb) else "val-test-overlap"
            groups[code].append((a, b, d, f"{sa} vs {sb}"))
        elif la == lb:
            groups["duplicate"].append((a, b, d, f"class {index.classes[la]!r}"))
    out = []
    what = "exact duplicate" if kind == "exact" else "near-duplicate"
    for code in PAIR_SEVERITY:
        items = groups.get(code, [])
        if not items:
            continue
        dist = "" if kind == "exact" else " (Hamming distance " + ", ".join(str(d) for _, _, d, _ in items[:5]) + ")"
        example = _listing([f"{a} == {b} [{note}]" for a, b, _, note in items], sep="; ")
        severe = kind == "exact" or code in ("conflicting-labels", "leakage")
        out.append(Finding(PAIR_SEVERITY[code] if severe else "info", code,
                           f"{len(items)} {what} pair(s){dist}: {example}",
                           [str(p) for a, b, _, _ in items for p in (a, b)], PAIR_FIX[code]))
    return out


def exact_pairs(digests: list[str | None]) -> list[tuple[int, int, int]]:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(digests):
        if h is not None:
            by_hash[h].append(i)
    return [(g[0], j, 0) for g in by_hash.values() if len(g) > 1 for j in g[1:]]


def _part_of(index: ImageIndex, cfg: TrainConfig) -> dict[int, str] | None:
    """Part ('train'/'val'/'test') of every image in the split training would make; None when
    the split fails (reported by :func:`size_findings`)."""
    try:
        parts = make_parts(index, cfg.data)
    except DataError:
        return None
    return {i: name for name, idx in parts.items() for i in idx}


# -- the two entry points ------------------------------------------------------------------

def quick_checks(index: ImageIndex, cfg: TrainConfig | None = None) -> list[Finding]:
    """Fast checks (no decoding): counts and exact duplicates by sha256 of the bytes."""
    cfg = cfg or TrainConfig()
    out = count_findings(index)
    digests = []
    for p in index.paths:
        try:
            digests.append(sha256_file(p))
        except OSError:
            digests.append(None)
    pairs = exact_pairs(digests)
    if pairs:
        out += pair_findings(index, pairs, "exact", split_of=_part_of(index, cfg))
    return out


def log_quick_checks(index: ImageIndex, cfg: TrainConfig | None = None) -> list[Finding]:
    """Run :func:`quick_checks`, log every warning/error (training calls this) and return the
    findings (for :func:`write_doctor_json`)."""
    findings = quick_checks(index, cfg)
    for f in findings:
        if f.severity in ("error", "warning"):
            log.warning("data check: %s", f.format())
    if any(f.severity in ("error", "warning") for f in findings):
        log.warning("data check: run `vistrain doctor %s` for the full report (unreadable files, "
                    "near-duplicates, sizes); disable these checks with --set data.doctor=false",
                    index.root)
    return findings


def write_doctor_json(run_dir: str | Path, findings: list[Finding]) -> Path:
    """Write ``run_dir/doctor.json`` (the findings and their summary; the report shows them)."""
    path = Path(run_dir) / "doctor.json"
    doc = {"source": "quick data checks before training (`vistrain doctor DATA` checks more)",
           "summary": summarize(findings), "findings": [asdict(f) for f in findings]}
    atomic_write_json(path, doc)
    return path


def diagnose(root, cfg: TrainConfig | None = None, *, folds: int | None = None, workers: int = -1,
             max_distance: int = NEAR_DUP_DISTANCE, max_mad: float = NEAR_DUP_MAD) -> DoctorReport:
    """Full data check of the folder ``root`` in one pass (module docstring).

    Raises :class:`DataError` only when ``root`` is not a folder; every other problem is a finding.
    """
    cfg = cfg or TrainConfig()
    layout = folder_layout(root)
    index = layout.to_index()
    findings = structure_findings(layout)
    if not any(f.severity == "error" for f in findings):
        try:  # the training scan must agree that the folder is usable
            scan_folder(root)
        except DataError as err:
            findings.append(Finding("error", "unusable-folder", str(err), [str(layout.root)],
                                    "see the message"))
    findings += count_findings(index)
    infos = inspect_files(index.paths, workers)
    findings += file_findings(index, infos)
    bad = {inf["path"]: inf["error"] for inf in infos if inf["error"]}
    good = index.drop(set(bad), bad) if bad else index
    good_infos = [inf for inf in infos if not inf["error"]]
    findings += size_findings(good, cfg, folds)
    split_of = _part_of(good, cfg)
    findings += pair_findings(good, exact_pairs([inf["sha256"] for inf in good_infos]), "exact",
                              split_of=split_of)
    near = [(i, j, d) for i, j, d in near_pairs([inf["phash"] for inf in good_infos], max_distance)
            if good_infos[i]["sha256"] != good_infos[j]["sha256"]   # exact ones reported above
            and thumb_distance(good_infos[i]["thumb"], good_infos[j]["thumb"]) <= max_mad]
    findings += pair_findings(good, near, "near", split_of=split_of)
    image, sizes, modes = image_findings(infos)
    findings += image
    return DoctorReport(str(layout.root), index.classes, index.counts(), findings, sizes, modes,
                        max_distance)
