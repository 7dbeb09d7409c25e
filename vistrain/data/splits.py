"""Stratified, seeded, disjoint splits: hold-out train/val/test and k-fold.

Every class keeps its share in every part (to within one image), the same seed gives the same
split on every machine, and the indices are saved in ``splits.json`` so a run can be audited and
repeated.  With groups (``data.groups`` / ``data.group_regex``, see :mod:`vistrain.data.groups`)
every group lies in exactly one part, in hold-out splits and in every fold
(scikit-learn's ``StratifiedGroupKFold``); the class shares then hold as nearly as the group
sizes allow.

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

from vistrain.data.groups import image_groups
from vistrain.errors import DataError


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
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    parts: dict[str, np.ndarray] = {}
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    _min_per_class_error(labels.tolist(), classes, needed, "a stratified train/val/test split")
    rest = idx
    if test_fraction > 0:
        rest, parts["test"] = _split(rest, labels, test_fraction, seed)
    if val_fraction > 0:
        frac = val_fraction / (1 - test_fraction)
        rest, parts["val"] = _split(rest, labels, frac, seed + 1)
    parts["train"] = rest
    return {k: sorted(int(i) for i in parts.get(k, [])) for k in ("train", "val", "test")}


def _split(idx, labels, fraction, seed):
    from sklearn.model_selection import train_test_split  # heavy (~0.9 s): only when splitting
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
    from sklearn.model_selection import StratifiedKFold  # heavy (~0.9 s): only when splitting
    if k < 2:
        raise DataError(f"--folds must be at least 2, got {k}")
    _min_per_class_error(list(labels), classes, k, f"{k}-fold cross-validation")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    dummy = np.zeros(len(labels))
    return [(sorted(map(int, tr)), sorted(map(int, te))) for tr, te in skf.split(dummy, labels)]


def _group_split(idx: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, taken)`` of ``idx``: about ``fraction`` of it taken as whole groups, stratified
    by class as far as the groups allow (one fold of ``round(1 / fraction)`` group folds)."""
    from sklearn.model_selection import StratifiedGroupKFold  # heavy (~0.9 s): only when splitting
    n_splits = max(2, int(round(1 / fraction)))
    n_groups = len(set(groups[idx].tolist()))
    if n_groups < n_splits:
        raise DataError(f"{n_groups} groups are too few to hold out {fraction:.0%} of the images as whole "
                        f"groups (needs >= {n_splits}); add groups, or lower the val/test fractions")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, take = next(sgkf.split(np.zeros(len(idx)), labels[idx], groups[idx]))
    return idx[keep], idx[take]


def group_holdout(labels, groups, *, val_fraction: float, test_fraction: float, seed: int,
                  classes: list[str] | None = None) -> dict[str, list[int]]:
    """Indices ``{"train", "val", "test"}`` (sorted) with every group of ``groups`` (one per
    label) in exactly one part, classes stratified as far as the groups allow.

    Example:
        >>> labels = [0, 1] * 20
        >>> groups = [f"g{i // 2}" for i in range(40)]          # 20 groups of 2 images
        >>> s = group_holdout(labels, groups, val_fraction=0.2, test_fraction=0.2, seed=0)
        >>> sorted(len(v) for v in s.values()), {groups[i] for i in s["test"]} & {groups[i] for i in s["train"]}
        ([8, 8, 24], set())
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    _min_per_class_error(labels.tolist(), classes, 1 + (val_fraction > 0) + (test_fraction > 0),
                         "a stratified train/val/test split")
    rest, parts = np.arange(len(labels)), {}
    if test_fraction > 0:
        rest, parts["test"] = _group_split(rest, labels, groups, test_fraction, seed)
    if val_fraction > 0:
        rest, parts["val"] = _group_split(rest, labels, groups, val_fraction / (1 - test_fraction), seed + 1)
    parts["train"] = rest
    return {k: sorted(int(i) for i in parts.get(k, [])) for k in ("train", "val", "test")}


def stratified_group_kfold(labels, groups, k: int, *, seed: int, classes: list[str] | None = None):
    """List of ``(train_indices, test_indices)``: k folds with each group in one test fold only."""
    from sklearn.model_selection import StratifiedGroupKFold  # heavy (~0.9 s): only when splitting
    if k < 2:
        raise DataError(f"--folds must be at least 2, got {k}")
    n_groups = len(set(groups))
    if n_groups < k:
        raise DataError(f"{n_groups} groups are too few for {k}-fold cross-validation by group; "
                        "use fewer folds or add groups")
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(sorted(map(int, tr)), sorted(map(int, te)))
            for tr, te in sgkf.split(np.zeros(len(labels)), np.asarray(labels), np.asarray(groups))]


def split_from_given(given: list[str], labels, *, val_fraction: float, seed: int,
                     classes=None, groups=None) -> dict[str, list[int]]:
    """Use the user's own train/val/test folders; carve val out of train when val/ is absent
    (by whole groups when ``groups`` gives one per image)."""
    parts = {s: [i for i, g in enumerate(given) if g == s] for s in ("train", "val", "test")}
    if not parts["val"] and val_fraction > 0:
        train = np.asarray(parts["train"])
        train_labels = [labels[i] for i in train]
        sub = (group_holdout(train_labels, [groups[i] for i in train], val_fraction=val_fraction,
                             test_fraction=0.0, seed=seed, classes=classes) if groups is not None else
               stratified_holdout(train_labels, val_fraction=val_fraction, test_fraction=0.0, seed=seed,
                                  classes=classes))
        parts["val"] = sorted(int(train[i]) for i in sub["val"])
        parts["train"] = sorted(int(train[i]) for i in sub["train"])
    return parts


def split_source(data_cfg, *, given_parts: bool = False, given_folders: bool = False) -> str:
    """How the parts were made, as splits.json's ``source`` says it: ``"grouped hold-out"``
    when ``data_cfg`` names groups, else ``"stratified hold-out"``, ``"given folders"`` or the
    parts of a cross-validation fold.

    Example:
        >>> from vistrain.config import DataConfig
        >>> split_source(DataConfig(group_regex="(p[0-9]+)_")), split_source(DataConfig())
        ('grouped hold-out', 'stratified hold-out')
    """
    if given_parts:
        return "given parts (cross-validation fold)"
    if given_folders:
        return "given folders"
    return "grouped hold-out" if (data_cfg.groups or data_cfg.group_regex) else "stratified hold-out"


def group_record(data_cfg) -> dict | None:
    """splits.json's ``groups``: ``{"regex": PATTERN}`` or ``{"file": CSV}``; None without groups."""
    if data_cfg.group_regex:
        return {"regex": data_cfg.group_regex}
    if data_cfg.groups:
        return {"file": str(data_cfg.groups)}
    return None


def split_warnings(index, parts: dict[str, list[int]]) -> list[str]:
    """One line for each evaluated part (val, test, ...) that lacks some classes: its metrics
    say nothing about them (whole groups, or a small part, can leave a class out).

    Example:
        >>> from types import SimpleNamespace
        >>> index = SimpleNamespace(classes=["a", "b", "c"], labels=[0, 1, 2, 0, 1, 2])
        >>> split_warnings(index, {"train": [0, 1, 2], "val": [3, 4, 5], "test": [3]})
        ['the test split holds 1 of 3 classes (none of b, c): its metrics leave them out; use smaller groups or a larger data.test_fraction (--set data.test_fraction=0.25)']
    """
    out = []
    for part, ids in parts.items():
        if part == "train" or not len(ids):
            continue
        present = {index.labels[i] for i in ids}
        missing = [c for k, c in enumerate(index.classes) if k not in present]
        if missing:
            names = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
            fix = (f"use smaller groups or a larger data.{part}_fraction (--set data.{part}_fraction=0.25)"
                   if part in ("val", "test") else "add images of those classes to that part")
            out.append(f"the {part} split holds {len(index.classes) - len(missing)} of {len(index.classes)} "
                       f"classes (none of {names}): its metrics leave them out; {fix}")
    return out


def splits_doc(index, parts: dict[str, list[int]], *, seed: int, source: str,
               groups: dict | None = None, warnings: list[str] | None = None) -> dict:
    """The document of ``splits.json``: how it was made (``source``; ``groups``: the regex or file
    that grouped the images), indices, relative file names and per-class counts of each part, and
    the ``warnings`` of :func:`split_warnings`.  Training writes it through its record
    (:class:`vistrain.rundir.Splits`, a layer above this one)."""
    out = {"seed": seed, "source": source, "classes": index.classes, "parts": {}}
    if groups:
        out["groups"] = groups
    if warnings:
        out["warnings"] = list(warnings)
    for name, ids in parts.items():
        counts = Counter(index.labels[i] for i in ids)
        out["parts"][name] = {
            "indices": ids,
            "files": [str(Path(index.paths[i]).relative_to(index.root)) for i in ids],
            "counts": {c: counts.get(k, 0) for k, c in enumerate(index.classes)},
        }
    return out


def make_parts(index, data_cfg) -> dict[str, list[int]]:
    """The train/val/test parts of ``index`` (a scanned folder) that training makes: the given
    train/ val/ test/ folders (a validation slice carved out of train/ when there is no val/),
    else a stratified hold-out; by whole groups when the config names them (``data.groups``,
    ``data.group_regex``); ``data_cfg`` is the config's ``data`` section (fractions, seed, groups)."""
    d = data_cfg
    groups = image_groups(index, d)
    if index.given_split:
        return split_from_given(index.given_split, index.labels, val_fraction=d.val_fraction,
                                seed=d.split_seed, classes=index.classes, groups=groups)
    if groups is not None:
        return group_holdout(index.labels, groups, val_fraction=d.val_fraction,
                             test_fraction=d.test_fraction, seed=d.split_seed, classes=index.classes)
    return stratified_holdout(index.labels, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                              seed=d.split_seed, classes=index.classes)
