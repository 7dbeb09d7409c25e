"""The data doctor's checks of classes and parts: counts, classes too small, duplicate pairs.

``imbalance`` (largest / smallest class), ``missing-in-split`` (a given val/ or test/ folder
without some class), ``class-too-small`` (for the hold-out split of the config's val/test
fractions: error; for ``folds`` = K cross-validation: error when K is asked for, else a warning
for K = ``DEFAULT_FOLDS``).  Duplicate pairs (exact or near) are classified as ``duplicate``
(same class, same part), ``conflicting-labels`` (the same picture in two classes), ``leakage``
(in train and val/test of the split training makes: the held-out score is inflated) or
``val-test-overlap``.

Example:
    >>> from vistrain.data.scan import scan_folder
    >>> index = scan_folder("data/")                    # doctest: +SKIP
    >>> [f.code for f in count_findings(index)]         # doctest: +SKIP
    ['imbalance']
"""
from __future__ import annotations

from collections import Counter, defaultdict

from vistrain.config import TrainConfig
from vistrain.data.doctor.report import Finding, listing
from vistrain.data.scan import ImageIndex
from vistrain.data.splits import make_parts
from vistrain.errors import DataError

IMBALANCE_WARN = 3.0         # largest / smallest class count that gets a warning
DEFAULT_FOLDS = 5            # k-fold check when no --folds is given (a warning, not an error)


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
                       "remove one copy, or, for several shots of one object (patient, session), "
                       "keep each object in one part with --groups FILE.csv or --group-regex",
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
        example = listing([f"{a} == {b} [{note}]" for a, b, _, note in items], sep="; ")
        severe = kind == "exact" or code in ("conflicting-labels", "leakage")
        out.append(Finding(PAIR_SEVERITY[code] if severe else "info", code,
                           f"{len(items)} {what} pair(s){dist}: {example}",
                           [str(p) for a, b, _, _ in items for p in (a, b)], PAIR_FIX[code]))
    return out


def part_of(index: ImageIndex, cfg: TrainConfig) -> dict[int, str] | None:
    """Part ('train'/'val'/'test') of every image in the split training would make; None when
    the split fails (reported by :func:`size_findings`)."""
    try:
        parts = make_parts(index, cfg.data)
    except DataError:
        return None
    return {i: name for name, idx in parts.items() for i in idx}
