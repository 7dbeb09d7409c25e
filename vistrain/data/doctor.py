"""Data doctor: what is wrong with an image folder, before a model learns it.

:func:`diagnose` (``vistrain doctor DATA``) decodes every file and reports

* per-class counts and the imbalance ratio (largest / smallest class);
* unreadable or odd files with the reason (:func:`~vistrain.data.io.load_image`'s), and files in
  class folders that are not images at all (ignored by training);
* exact duplicates (sha256 of the bytes) and near-duplicates (64-bit DCT perceptual hash, Hamming
  distance <= ``NEAR_DUP_DISTANCE`` = 10, confirmed by 16x16 grey thumbnails differing by at most
  ``NEAR_DUP_MAD`` = 6 grey levels on average: pHash alone matches many distinct but similar
  pictures, e.g. centred objects on black), each pair classified as
  - ``duplicate``: same class, same split (inflates that class, harmless otherwise);
  - ``conflicting-labels``: the same picture in two classes (the model is told two answers);
  - ``leakage``: the same picture in train and val/test of the split training would make
    (:func:`vistrain.training.run.make_parts`, default config): the held-out score is inflated;
* image size and mode distributions;
* classes too small for the validation scheme (hold-out: the split's own minimum; ``folds=K``:
  fewer than K images).

Findings have a severity: ``error`` makes training unsound (an unreadable-only class, conflicting
labels, leakage, a class too small), ``warning`` deserves a look, ``info`` is context.
``vistrain doctor`` exits 1 when there is an error.

:func:`quick_checks` is the cheap subset (counts, empty classes, exact-duplicate hashes, no
decoding) that ``vistrain train`` runs and logs when ``data.doctor`` is true.

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
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vistrain.data.cache import num_workers
from vistrain.data.io import is_image_file, load_image
from vistrain.data.scan import ImageIndex, scan_folder
from vistrain.errors import DataError, ImageLoadError

log = logging.getLogger(__name__)

NEAR_DUP_DISTANCE = 10       # pHash Hamming distance (of 64 bits) that makes a candidate pair
NEAR_DUP_MAD = 6.0           # ... confirmed when the 16x16 grey thumbnails differ by <= this (mean abs, 0..255)
IMBALANCE_WARN = 3.0         # largest / smallest class count that gets a warning
HASH_SIZE = 32               # pHash: grey image side before the DCT
HASH_BITS_SIDE = 8           # pHash: 8x8 low-frequency block -> 64 bits
SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    severity: str            # error | warning | info
    code: str                # e.g. "unreadable", "leakage", "conflicting-labels"
    message: str
    paths: list[str] = field(default_factory=list)

    def format(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}"


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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def format(self) -> str:
        n = sum(self.counts.values())
        lines = [f"{self.root}: {n} images, {len(self.classes)} classes"]
        width = max(len(c) for c in self.classes) if self.classes else 0
        for c in self.classes:
            lines.append(f"  {c:<{width}}  {self.counts[c]}")
        if self.sizes:
            s = self.sizes
            lines.append(f"sizes (w x h): min {s['min_w']}x{s['min_h']}, median {s['median_w']}x"
                         f"{s['median_h']}, max {s['max_w']}x{s['max_h']}; "
                         f"{s['n_distinct']} distinct")
        if self.modes:
            lines.append("modes: " + ", ".join(f"{m} {k}" for m, k in sorted(self.modes.items())))
        for sev in SEVERITIES:
            for f in self.findings:
                if f.severity == sev:
                    lines.append(f.format())
        errors = sum(f.severity == "error" for f in self.findings)
        warnings = sum(f.severity == "warning" for f in self.findings)
        lines.append(f"{errors} error(s), {warnings} warning(s); near-duplicate = pHash Hamming "
                     f"distance <= {self.near_dup_distance} of 64 bits and 16x16 grey thumbnails "
                     f"within {NEAR_DUP_MAD:g} grey levels (mean abs)"
                     + ("" if errors else "; training is sound as far as these checks go"))
        return "\n".join(lines)


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


# -- per-file inspection (in worker processes) ---------------------------------------------

def _inspect(path: str) -> dict:
    info = {"path": path, "sha256": None, "phash": None, "thumb": None, "size": None, "mode": None, "error": None}
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


# -- checks ---------------------------------------------------------------------------------

def _default_cfg(cfg=None):
    if cfg is not None:
        return cfg
    from vistrain.config import TrainConfig
    return TrainConfig()


def count_findings(index: ImageIndex) -> list[Finding]:
    counts = index.counts()
    out = []
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        out.append(Finding("error", "empty-class", f"class(es) without images: {', '.join(empty)}; "
                           "add images or remove the folder"))
    nonzero = [n for n in counts.values() if n]
    if nonzero and min(nonzero) > 0:
        ratio = max(nonzero) / min(nonzero)
        big = max(counts, key=counts.get)
        small = min((c for c in counts if counts[c]), key=counts.get)
        sev = "warning" if ratio >= IMBALANCE_WARN else "info"
        out.append(Finding(sev, "imbalance", f"imbalance ratio {ratio:.2f} (largest {big!r} "
                           f"{counts[big]}, smallest {small!r} {counts[small]})"
                           + ("; training balances the loss (data.balance=auto), but look at "
                              "per-class recall" if sev == "warning" else "")))
    if index.given_split:
        for split in ("val", "test"):
            have = {index.labels[i] for i, s in enumerate(index.given_split) if s == split}
            if have and len(have) < len(index.classes):
                missing = [c for k, c in enumerate(index.classes) if k not in have]
                out.append(Finding("warning", "missing-in-split",
                                   f"{split}/ has no images of {', '.join(missing)}"))
    return out


def _split_of(index: ImageIndex, cfg) -> dict[int, str]:
    """Part ('train'/'val'/'test') of every image in the split training would make."""
    from vistrain.training.run import make_parts
    parts = make_parts(index, cfg)
    return {i: name for name, idx in parts.items() for i in idx}


def pair_findings(index: ImageIndex, pairs, kind: str, cfg, split_of: dict | None) -> list[Finding]:
    """Classify duplicate pairs ``(i, j, distance)`` of ``index`` into findings."""
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
    sev = {"conflicting-labels": "error", "leakage": "error", "val-test-overlap": "warning",
           "duplicate": "warning"}
    why = {"conflicting-labels": "the same picture is labelled two ways; keep it in one class",
           "leakage": "the same picture is in training and held-out parts, inflating the score; "
                      "remove one copy",
           "val-test-overlap": "the same picture is in val (model selection) and test; remove one copy",
           "duplicate": "copies within one class; remove the extra copies"}
    for code in ("conflicting-labels", "leakage", "val-test-overlap", "duplicate"):
        items = groups.get(code, [])
        if not items:
            continue
        dist = "" if kind == "exact" else " (Hamming distance " + ", ".join(str(d) for _, _, d, _ in items[:5]) + ")"
        example = "; ".join(f"{a} == {b} [{note}]" for a, b, _, note in items[:5])
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        s = sev[code] if kind == "exact" or code in ("conflicting-labels", "leakage") else "info"
        out.append(Finding(s, code, f"{len(items)} {what} pair(s){dist}: {example}{more}; {why[code]}",
                           [str(p) for a, b, _, _ in items for p in (a, b)]))
    return out


def exact_pairs(digests: list[str | None]) -> list[tuple[int, int, int]]:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(digests):
        if h is not None:
            by_hash[h].append(i)
    return [(g[0], j, 0) for g in by_hash.values() if len(g) > 1 for j in g[1:]]


def size_findings(index: ImageIndex, folds: int | None, cfg) -> list[Finding]:
    counts = index.counts()
    if folds:
        small = {c: n for c, n in counts.items() if 0 < n < folds}
        if small:
            return [Finding("error", "class-too-small",
                            f"{folds}-fold cross-validation needs >= {folds} images per class: "
                            + ", ".join(f"{c!r} ({n})" for c, n in small.items())
                            + "; add images or use fewer folds")]
        return []
    try:
        _split_of(index, cfg)
    except DataError as err:
        return [Finding("error", "class-too-small", f"the hold-out split fails: {err}")]
    return []


def quick_checks(index: ImageIndex, cfg=None) -> list[Finding]:
    """Fast checks (no decoding): counts, empty classes, exact duplicates by sha256 of the bytes."""
    cfg = _default_cfg(cfg)
    out = count_findings(index)
    digests = []
    for p in index.paths:
        try:
            digests.append(sha256_file(p))
        except OSError:
            digests.append(None)
    pairs = exact_pairs(digests)
    if pairs:
        try:
            split_of = _split_of(index, cfg)
        except DataError:
            split_of = None
        out += pair_findings(index, pairs, "exact", cfg, split_of)
    return out


def log_quick_checks(index: ImageIndex, cfg=None) -> list[Finding]:
    """Run :func:`quick_checks` and log every warning/error (training calls this)."""
    findings = quick_checks(index, cfg)
    for f in findings:
        if f.severity in ("error", "warning"):
            log.warning("data check: %s", f.format())
    if any(f.severity in ("error", "warning") for f in findings):
        log.warning("data check: run `vistrain doctor %s` for the full report (unreadable files, "
                    "near-duplicates, sizes); disable these checks with --set data.doctor=false",
                    index.root)
    return findings


def diagnose(root, cfg=None, *, folds: int | None = None, workers: int = -1,
             max_distance: int = NEAR_DUP_DISTANCE, max_mad: float = NEAR_DUP_MAD) -> DoctorReport:
    """Full data check of the folder ``root`` (module docstring)."""
    cfg = _default_cfg(cfg)
    index = scan_folder(root)
    findings = count_findings(index)
    findings += _ignored_files(index)
    infos = inspect_files(index.paths, workers)

    bad = {str(p): inf["error"] for p, inf in zip(index.paths, infos) if inf["error"]}
    if bad:
        findings.append(Finding("warning", "unreadable",
                                f"{len(bad)} file(s) training will skip: "
                                + "; ".join(f"{p}: {r}" for p, r in bad.items()), list(bad)))
    good = index.drop(set(bad), bad) if bad else index
    empty = [c for c, n in good.counts().items() if n == 0 and index.counts()[c] > 0]
    if empty:
        findings.append(Finding("error", "unreadable-class", f"every image of class(es) "
                                f"{', '.join(empty)} is unreadable; fix the files or remove the class"))
    good_infos = [inf for inf in infos if not inf["error"]]
    findings += size_findings(good, folds, cfg)
    try:
        split_of = _split_of(good, cfg)
    except DataError:
        split_of = None
    exact = exact_pairs([inf["sha256"] for inf in good_infos])
    findings += pair_findings(good, exact, "exact", cfg, split_of)
    near = [(i, j, d) for i, j, d in near_pairs([inf["phash"] for inf in good_infos], max_distance)
            if good_infos[i]["sha256"] != good_infos[j]["sha256"]   # exact ones reported above
            and thumb_distance(good_infos[i]["thumb"], good_infos[j]["thumb"]) <= max_mad]
    findings += pair_findings(good, near, "near", cfg, split_of)

    sizes = [inf["size"] for inf in infos if inf["size"] and not inf["error"]]
    size_summary = {}
    if sizes:
        w = np.array([s[0] for s in sizes])
        h = np.array([s[1] for s in sizes])
        size_summary = {"min_w": int(w.min()), "min_h": int(h.min()), "median_w": int(np.median(w)),
                        "median_h": int(np.median(h)), "max_w": int(w.max()), "max_h": int(h.max()),
                        "n_distinct": len({tuple(s) for s in sizes}),
                        "most_common": [[list(k), n] for k, n in Counter(map(tuple, sizes)).most_common(5)]}
        aspect = w / h
        odd = [inf["path"] for inf, a in zip([i for i in infos if i["size"] and not i["error"]], aspect)
               if a > 3 or a < 1 / 3]
        if odd:
            findings.append(Finding("info", "extreme-aspect", f"{len(odd)} image(s) with aspect ratio "
                                    f"beyond 3:1, a centre crop loses most of them: {', '.join(odd[:5])}",
                                    odd))
    rotated = [inf["path"] for inf in infos if inf.get("orientation", 1) not in (1, 0) and not inf["error"]]
    if rotated:
        findings.append(Finding("info", "exif-rotated", f"{len(rotated)} image(s) stored rotated with "
                                "an EXIF orientation tag (applied when loading; other tools may "
                                f"show them sideways): {', '.join(rotated[:5])}", rotated))
    unusual = [(inf["path"], inf["mode"]) for inf in infos
               if inf["mode"] and inf["mode"] not in ("RGB", "L") and not inf["error"]]
    if unusual:
        findings.append(Finding("info", "converted-modes", f"{len(unusual)} image(s) not RGB/L, "
                                "converted to RGB (alpha on white, CMYK without ICC profile, 16-bit "
                                "scaled): " + ", ".join(f"{p} ({m})" for p, m in unusual[:5]),
                                [p for p, _ in unusual]))
    modes = Counter(inf["mode"] for inf in infos if inf["mode"] and not inf["error"])
    if len(modes) > 1:
        findings.append(Finding("info", "mixed-modes", "images of several modes ("
                                + ", ".join(f"{m}: {n}" for m, n in sorted(modes.items()))
                                + "); all are converted to RGB (grey copied to 3 channels, alpha "
                                  "composited on white)"))
    return DoctorReport(str(index.root), index.classes, index.counts(), findings, size_summary,
                        dict(modes), max_distance)


def _ignored_files(index: ImageIndex) -> list[Finding]:
    """Files in class folders that are not images by name (training ignores them)."""
    root = Path(index.root)
    ignored = sorted(str(p) for p in root.rglob("*") if p.is_file() and not is_image_file(p)
                     and not any(part.startswith(".") for part in p.relative_to(root).parts)
                     and p.parent != root)
    if not ignored:
        return []
    return [Finding("info", "ignored-files", f"{len(ignored)} non-image file(s) ignored by training: "
                    + ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""), ignored)]
