"""Stratified, seeded, disjoint splits: hold-out train/val/test and k-fold.

Every class keeps its share in every part (to within one image), the same seed gives the same
split on every machine, and the indices are saved in ``splits.json`` so a run can be audited and
repeated.

Example:
    >>> from vistrain.data.splits import stratified_holdout
    >>> labels = [0] * 10 + [1] * 10
    >>> s = stratified_holdout(labels, val_fraction=0.2, test_fraction=0.2, seed=0)
    >>> len(s["train"]), len(s["val"]), len(s["test"])
    (12, 4, 4)
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from vistrain.errors import DataError
from vistrain.fsutil import atomic_write_json


def _min_per_class_error(labels, classes, needed: int, why: str) -> None:
    counts = Counter(labels)
    small = [(classes[k] if classes else str(k), n) for k, n in sorted(counts.items()) if n < needed]
    if small:
        names = ", ".join(f"{name!r} ({n})" for name, n in small)
        raise DataError(f"too few images for {why}: class {names} has fewer than {needed}; "
                        "add images to that class or choose smaller fractions / fewer folds")


def stratified_holdout(labels, *, val_fraction: float, test_fraction: float, seed: int,
                       classes: list[str] | None = None) -> dict[str, list[int]]:
    """Indices ``{"train", "val", "test"}`` (sorted) of a stratified split of ``labels``."""
    from sklearn.model_selection import train_test_split
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    parts: dict[str, np.ndarray] = {}
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    _min_per_class_error(labels.tolist(), classes, needed, "a stratified train/val/test split")
    rest = idx
    if test_fraction > 0:
        rest, parts["test"] = _split(rest, labels, test_fraction, seed, train_test_split)
    if val_fraction > 0:
        frac = val_fraction / (1 - test_fraction)
        rest, parts["val"] = _split(rest, labels, frac, seed + 1, train_test_split)
    parts["train"] = rest
    return {k: sorted(int(i) for i in parts.get(k, [])) for k in ("train", "val", "test")}


def _split(idx, labels, fraction, seed, train_test_split):
    n_classes = len(set(labels[idx].tolist()))
    # sklearn needs at least one sample per class on each side.
    n_take = max(n_classes, int(round(fraction * len(idx))))
    try:
        return train_test_split(idx, test_size=n_take, stratify=labels[idx], random_state=seed)
    except ValueError as err:
        raise DataError(f"cannot make a stratified split: {err}; add images or lower the "
                        "val/test fractions") from None


def stratified_kfold(labels, k: int, *, seed: int, classes: list[str] | None = None):
    """List of ``(train_indices, test_indices)`` for stratified k-fold; each index is tested once."""
    from sklearn.model_selection import StratifiedKFold
    if k < 2:
        raise DataError(f"--folds must be at least 2, got {k}")
    _min_per_class_error(list(labels), classes, k, f"{k}-fold cross-validation")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    dummy = np.zeros(len(labels))
    return [(sorted(map(int, tr)), sorted(map(int, te))) for tr, te in skf.split(dummy, labels)]


def split_from_given(given: list[str], labels, *, val_fraction: float, seed: int,
                     classes=None) -> dict[str, list[int]]:
    """Use the user's own train/val/test folders; carve val out of train when val/ is absent."""
    parts = {s: [i for i, g in enumerate(given) if g == s] for s in ("train", "val", "test")}
    if not parts["val"] and val_fraction > 0:
        train = np.asarray(parts["train"])
        sub = stratified_holdout([labels[i] for i in train], val_fraction=val_fraction,
                                 test_fraction=0.0, seed=seed, classes=classes)
        parts["val"] = sorted(int(train[i]) for i in sub["val"])
        parts["train"] = sorted(int(train[i]) for i in sub["train"])
    return parts


def save_splits(path: Path, index, parts: dict[str, list[int]], *, seed: int, source: str) -> None:
    """Write ``splits.json``: indices, relative file names and per-class counts of each part."""
    out = {"seed": seed, "source": source, "classes": index.classes, "parts": {}}
    for name, ids in parts.items():
        counts = Counter(index.labels[i] for i in ids)
        out["parts"][name] = {
            "indices": ids,
            "files": [str(Path(index.paths[i]).relative_to(index.root)) for i in ids],
            "counts": {c: counts.get(k, 0) for k, c in enumerate(index.classes)},
        }
    atomic_write_json(path, out)


def make_parts(index, data_cfg) -> dict[str, list[int]]:
    """The train/val/test parts of ``index`` (a scanned folder) that training makes: the given
    train/ val/ test/ folders (a validation slice carved out of train/ when there is no val/),
    else a stratified hold-out; ``data_cfg`` is the config's ``data`` section (fractions, seed)."""
    d = data_cfg
    if index.given_split:
        return split_from_given(index.given_split, index.labels, val_fraction=d.val_fraction,
                                seed=d.split_seed, classes=index.classes)
    return stratified_holdout(index.labels, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                              seed=d.split_seed, classes=index.classes)
