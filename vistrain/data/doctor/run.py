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
``vistrain train`` runs and logs when ``data.doctor`` is true; training saves its findings
(:func:`~vistrain.data.doctor.report.doctor_doc`) as the run's ``doctor.json`` for the report.

The checks live in :mod:`~vistrain.data.doctor.structure` (layout),
:mod:`~vistrain.data.doctor.files` (every file), :mod:`~vistrain.data.doctor.splits` (counts,
splits, duplicate pairs) and :mod:`~vistrain.data.doctor.hash` (sha256, pHash); the findings and the
report in :mod:`~vistrain.data.doctor.report`.  This module runs them.

Example:
    >>> from vistrain.data.doctor.run import diagnose
    >>> report = diagnose("data/")          # doctest: +SKIP
    >>> print(report.format())              # doctest: +SKIP
"""
from __future__ import annotations

import logging

from vistrain.config import TrainConfig
from vistrain.data.doctor.files import file_findings, image_findings, inspect_files
from vistrain.data.doctor.hash import (NEAR_DUP_DISTANCE, NEAR_DUP_MAD, exact_pairs, near_pairs,
                                       sha256_file, thumb_distance)
from vistrain.data.doctor.report import DoctorReport, Finding
from vistrain.data.doctor.splits import count_findings, pair_findings, part_of, size_findings
from vistrain.data.doctor.structure import structure_findings
from vistrain.data.scan import ImageIndex, folder_layout, scan_folder
from vistrain.errors import DataError

__all__ = ["diagnose", "quick_checks", "log_quick_checks"]

log = logging.getLogger(__name__)


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
        out += pair_findings(index, pairs, "exact", split_of=part_of(index, cfg))
    return out


def log_quick_checks(index: ImageIndex, cfg: TrainConfig | None = None) -> list[Finding]:
    """Run :func:`quick_checks`, log every warning/error (training calls this) and return the
    findings (for :func:`~vistrain.data.doctor.report.doctor_doc`)."""
    findings = quick_checks(index, cfg)
    for f in findings:
        if f.severity in ("error", "warning"):
            log.warning("data check: %s", f.format())
    if any(f.severity in ("error", "warning") for f in findings):
        log.warning("data check: run `vistrain doctor %s` for the full report (unreadable files, "
                    "near-duplicates, sizes); disable these checks with --set data.doctor=false",
                    index.root)
    return findings


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
    split_of = part_of(good, cfg)
    findings += pair_findings(good, exact_pairs([inf["sha256"] for inf in good_infos]), "exact",
                              split_of=split_of)
    findings += pair_findings(good, _near_duplicates(good_infos, max_distance, max_mad), "near",
                              split_of=split_of)
    image, sizes, modes = image_findings(infos)
    findings += image
    return DoctorReport(str(layout.root), index.classes, index.counts(), findings, sizes, modes,
                        max_distance)


def _near_duplicates(infos: list[dict], max_distance: int, max_mad: float) -> list[tuple[int, int, int]]:
    """``(i, j, distance)``: pHash within ``max_distance`` bits, confirmed by thumbnails within
    ``max_mad`` grey levels; exact duplicates (same sha256) are left to the exact check."""
    return [(i, j, d) for i, j, d in near_pairs([inf["phash"] for inf in infos], max_distance)
            if infos[i]["sha256"] != infos[j]["sha256"]
            and thumb_distance(infos[i]["thumb"], infos[j]["thumb"]) <= max_mad]
