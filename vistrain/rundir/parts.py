"""The typed parts of a run folder: one frozen dataclass per file vistrain writes (see
:mod:`vistrain.rundir` for the reader, :class:`~vistrain.rundir.RunFolder`, and the file list;
:mod:`vistrain.rundir.record` for run.json, :mod:`vistrain.rundir.summaries` for the files of
``cv`` and ``compare``).

Each reads its document with ``from_doc`` (coercing, never trusting, every value) and writes it
back with ``to_doc`` (:class:`~vistrain.rundir.doc.Doc`): for every file vistrain writes,
``Part.from_doc(doc).to_doc() == doc``.

Example:
    >>> Epoch.from_doc({"epoch": 1, "val_accuracy": 0.5, "val_loss": "oops"}).val_loss is None
    True
    >>> Epoch.from_doc({"epoch": 1, "val_accuracy": 0.5, "trainable_params": 10}).to_doc()
    {'epoch': 1, 'val_accuracy': 0.5, 'trainable_params': 10}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from vistrain.errors import RunDirError
from vistrain.rundir.doc import (Doc, each, many, opt_dict, opt_list, slot, texts, to_bool, to_dict, to_int,
                                 to_list, to_num, to_text, values_of)
from vistrain.rundir.record import StrategyRecord

RETRAIN = "restore it or train the run again"
FIXES = {"cv_metrics.json": "run `vistrain cv DATA --out OUT --resume` again to rewrite it",
         "compare.json": "run `vistrain compare` again to rewrite it",
         "folds.json": "use --overwrite to start the cross-validation again, or another --out"}


# ---- the parts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelMeta(Doc):
    """``model.json`` (checked by :func:`vistrain.artifact.read_meta`); ``extra`` holds the rest
    (format version, number of classes, the pretrained config, the calibration)."""
    model_name: str = slot(str, default="")
    classes: list[str] = slot(texts, factory=list)
    preprocess: dict = slot(to_dict, factory=dict)
    model_kwargs: dict = slot(to_dict, factory=dict)
    strategy: StrategyRecord = slot(StrategyRecord.from_doc, omit="empty", factory=StrategyRecord)
    versions: dict = slot(to_dict, factory=dict)
    extra: dict = slot(rest=True)


@dataclass(frozen=True)
class Epoch(Doc):
    """One row of ``history.json`` (one epoch of training); missing values are None.  ``extra``:
    what else a strategy records per epoch (the trainable parameters, ...)."""
    epoch: int | None = slot(to_int)
    train_loss: float | None = slot(to_num, omit=True)
    train_accuracy: float | None = slot(to_num, omit=True)
    val_loss: float | None = slot(to_num, omit=True)
    val_accuracy: float | None = slot(to_num, omit=True)
    lr: float | None = slot(to_num, omit=True)
    seconds: float | None = slot(to_num, omit=True)
    extra: dict = slot(rest=True)

    def as_dict(self) -> dict:
        """The row as :mod:`vistrain.evaluation.curves` takes it (every named value, None if missing)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}


@dataclass(frozen=True)
class Interval(Doc):
    low: float | None = slot(to_num)
    high: float | None = slot(to_num)


@dataclass(frozen=True)
class Averages(Doc):
    """The ``macro`` or ``weighted`` averages of a metrics part."""
    precision: float | None = slot(to_num)
    recall: float | None = slot(to_num)
    f1: float | None = slot(to_num)
    auc_roc: float | None = slot(to_num)


@dataclass(frozen=True)
class ClassMetrics(Doc):
    name: str = slot(str, key="class", default="")
    index: int | None = slot(to_int, omit=True)
    support: int | None = slot(to_int)
    n_predicted: int | None = slot(to_int)
    precision: float | None = slot(to_num)
    recall: float | None = slot(to_num)
    f1: float | None = slot(to_num)
    auc_roc: float | None = slot(to_num)


@dataclass(frozen=True)
class Bootstrap(Doc):
    """How ``ci95`` was computed."""
    method: str | None = slot(to_text)
    level: float | None = slot(to_num)
    n_resamples: int | None = slot(to_int)
    seed: int | None = slot(to_int)


@dataclass(frozen=True)
class CalibrationMetrics(Doc):
    """A part's ``calibration`` entry: the temperature fitted on val, NLL/ECE and reliability bins
    of the raw softmax (before) and of the scaled one (after, what ``predict`` gives)."""
    fitted_on: str | None = slot(to_text)
    temperature: float | None = slot(to_num)
    decision: str | None = slot(to_text, omit=True)  # applied | not applied (None: an older run)
    reason: str | None = slot(to_text, omit=True)
    n_samples: int | None = slot(to_int, omit=True)
    nll_before: float | None = slot(to_num)
    ece_before: float | None = slot(to_num)
    reliability_before: dict | None = slot(opt_dict)
    nll_after: float | None = slot(to_num)
    ece_after: float | None = slot(to_num)
    reliability_after: dict | None = slot(opt_dict)


def _calibration(c) -> CalibrationMetrics | None:
    return CalibrationMetrics.from_doc(c) if isinstance(c, dict) else None


@dataclass(frozen=True)
class PartMetrics(Doc):
    """One part of ``metrics.json`` (a :func:`vistrain.evaluation.metrics.compute_metrics` dict,
    with ``calibration`` when the run calibrated).  ``auc_roc`` (how AUC-ROC was computed) and
    ``reliability`` (the bins) stay mappings."""
    n_samples: int | None = slot(to_int)
    n_classes: int | None = slot(to_int, omit=True)
    class_names: list[str] = slot(texts, factory=list)
    absent_classes: list[str] | None = slot(opt_list, omit=True)
    accuracy: float | None = slot(to_num)
    balanced_accuracy: float | None = slot(to_num)
    top_k_accuracy: dict[str, float | None] = slot(values_of(to_num), factory=dict)
    macro: Averages = slot(Averages.from_doc, factory=Averages)
    weighted: Averages | None = slot(Averages.from_doc, omit=True)
    per_class: list[ClassMetrics] = slot(many(ClassMetrics.from_doc), factory=list)
    auc_roc: dict | None = slot(opt_dict, omit=True)
    confusion_matrix: list | None = slot(opt_list)
    confusion_matrix_normalized: list | None = slot(opt_list, omit=True)
    ece: float | None = slot(to_num)
    nll: float | None = slot(to_num, omit=True)
    reliability: dict | None = slot(opt_dict)
    ci95: dict[str, Interval] = slot(each(Interval.from_doc), factory=dict)
    bootstrap: Bootstrap | None = slot(Bootstrap.from_doc, omit=True)
    calibration: CalibrationMetrics | None = slot(_calibration, omit=True)

    @property
    def macro_f1(self) -> float | None:
        return self.macro.f1

    @property
    def macro_auc_roc(self) -> float | None:
        return self.macro.auc_roc


@dataclass(frozen=True)
class PartPredictions(Doc):
    """One part of ``predictions.json``: ``indices`` (N,) ids into the scanned image index,
    ``labels`` (N,) true classes and ``probs`` (N, K) probabilities, row-aligned."""
    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray

    @classmethod
    def from_doc(cls, p, path: Path, part: str) -> PartPredictions:
        try:
            ids, y = np.asarray(p["indices"], np.int64), np.asarray(p["labels"], np.int64)
            probs = np.asarray(p["probs"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise RunDirError(f"{path}: damaged, part {part!r} lacks numeric indices/labels/probs; "
                              f"{RETRAIN}") from None
        aligned = probs.ndim == 2 and len(ids) == len(y) == len(probs)
        if not aligned or (len(y) and not 0 <= y.min() <= y.max() < probs.shape[1]):
            raise RunDirError(f"{path}: damaged, part {part!r}: indices, labels and probs do not line up; "
                              f"{RETRAIN}")
        return cls(ids, y, probs)


@dataclass(frozen=True)
class SplitPart(Doc):
    indices: list = slot(to_list, factory=list)
    files: list = slot(to_list, factory=list)
    counts: dict = slot(to_dict, factory=dict)


@dataclass(frozen=True)
class Splits(Doc):
    """``splits.json``: how the images were split; file names are relative to the data root."""
    seed: int | None = slot(to_int, omit=True)
    source: str | None = slot(to_text)
    classes: list[str] = slot(texts, factory=list)
    parts: dict[str, SplitPart] = slot(each(SplitPart.from_doc), factory=dict)
    groups: dict = slot(to_dict, omit="empty", factory=dict)       # {"regex": PATTERN} or {"file": CSV}
    warnings: list[str] = slot(texts, omit="empty", factory=list)  # e.g. a part that lacks classes

    @property
    def method(self) -> str | None:
        """``source`` with the grouping, e.g. ``grouped hold-out (regex '(p\\d+)_')``."""
        how = ", ".join(f"{k} {v!r}" for k, v in self.groups.items())
        return f"{self.source} ({how})" if how and self.source else self.source

    def files_of(self, part: str) -> dict[int, str]:
        """Index id -> file name (relative to the data root) of one part."""
        p = self.parts.get(part)
        return {} if p is None else dict(zip(p.indices, p.files))


def _as_text(v) -> str:
    """Text as it is; anything else as its JSON (a hand-edited message)."""
    return v if isinstance(v, str) else json.dumps(v)


@dataclass(frozen=True)
class Finding(Doc):
    """One finding of the data doctor (``paths``: the files it concerns)."""
    severity: str = slot(_as_text, default="")
    code: str = slot(_as_text, default="")
    message: str = slot(_as_text, default="")
    paths: list | None = slot(opt_list)
    fix: str = slot(_as_text, default="")

    @property
    def n_files(self) -> int | None:
        return None if self.paths is None else len(self.paths)


@dataclass(frozen=True)
class DoctorRecord(Doc):
    """``doctor.json``: the data doctor's findings on the run's data, and their summary."""
    source: str | None = slot(to_text)
    summary: dict | None = slot(opt_dict, omit=True)
    findings: list[Finding] = slot(many(Finding.from_doc), factory=list)

    @classmethod
    def from_doc(cls, doc, path: Path | str = "doctor.json") -> DoctorRecord:
        """From ``{"source", "summary", "findings": [...]}`` or a bare list of findings."""
        findings = doc.get("findings") if isinstance(doc, dict) else doc
        if not isinstance(findings, list) or not all(isinstance(f, dict) for f in findings):
            raise RunDirError(f"{path}: damaged, findings is not a list of objects; {RETRAIN}")
        return cls(**cls.fields_of(doc if isinstance(doc, dict) else {"findings": doc}))


@dataclass(frozen=True)
class CheckRecord(Doc):
    """One entry of ``checks.json`` (pre-training checks); ``passed`` is None for a skipped one."""
    name: str | None = slot(to_text)
    passed: bool | None = slot(to_bool)
    measurements: dict = slot(to_dict, factory=dict)
    message: str | None = slot(to_text)
    status: str | None = slot(to_text)
