"""The files of ``vistrain cv`` (``folds.json``, ``cv_metrics.json``) and ``vistrain compare``
(``compare.json``), typed like the parts of a run (:mod:`vistrain.rundir.parts`).

Example:
    >>> s = CompareSummary.from_doc({"model": "vistrain/resnet20", "vary": {"act": ["relu"]},
    ...                              "seed": 0, "runs": [{"name": "act=relu", "accuracy": 0.9}]})
    >>> s.runs[0].accuracy, s.seed
    (0.9, 0)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vistrain.errors import RunDirError
from vistrain.rundir.doc import (Doc, each, many, opt_dict, same, slot, texts, to_bool, to_dict, to_int, to_list,
                                 to_num, to_text, values_of)
from vistrain.rundir.parts import FIXES, Epoch, PartMetrics, SplitPart


# ---- vistrain cv ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FoldSplit(Doc):
    """One fold of ``folds.json``: its parts (train, val, test) by name."""
    fold: int | None = slot(to_int)
    parts: dict = slot(rest=True)

    def part(self, name: str) -> SplitPart | None:
        p = self.parts.get(name)
        return SplitPart.from_doc(p) if isinstance(p, dict) else None


@dataclass(frozen=True)
class FoldsRecord(Doc):
    """``folds.json``: how ``vistrain cv`` split the data into folds."""
    k: int | None = slot(to_int)
    seed: int | None = slot(to_int)
    val_fraction: float | None = slot(to_num)
    pool: str | None = slot(to_text)
    by_groups: object = slot(same)
    data_root: str | None = slot(to_text)
    classes: list[str] = slot(texts, factory=list)
    n_images: int | None = slot(to_int)
    folds: list[FoldSplit] = slot(many(FoldSplit.from_doc), factory=list)


@dataclass(frozen=True)
class Spread(Doc):
    """One metric over the cross-validation folds."""
    mean: float | None = slot(to_num)
    std: float | None = slot(to_num)
    n: int | None = slot(to_int, omit=True)
    values: list[float | None] = slot(lambda v: [to_num(x) for x in to_list(v)], factory=list)


@dataclass(frozen=True)
class FoldSummary(Doc):
    """Mean and standard deviation of the headline metrics over the folds."""
    n_folds: int | None = slot(to_int, omit=True)
    std_ddof: int | None = slot(to_int, omit=True)
    metrics: dict[str, Spread] = slot(each(Spread.from_doc), factory=dict)


def _part_metrics(v) -> PartMetrics | None:
    return PartMetrics.from_doc(v) if isinstance(v, dict) else None


def _fold_summary(v) -> FoldSummary | None:
    return FoldSummary.from_doc(v) if isinstance(v, dict) else None


@dataclass(frozen=True)
class CvFold(Doc):
    """One fold's row of ``cv_metrics.json``: its sizes, time, balance and test metrics."""
    fold: int | None = slot(to_int)
    n_train: int | None = slot(to_int)
    n_val: int | None = slot(to_int)
    n_test: int | None = slot(to_int)
    wall_seconds: float | None = slot(to_num)
    balance: object = slot(same)            # null when the run recorded none
    test: PartMetrics | None = slot(_part_metrics, omit=True)
    given_test: PartMetrics | None = slot(_part_metrics, omit=True)

    @property
    def temperature(self) -> float | None:
        """The fold's calibration: T applied (1.0 when kept; None: off, or an older run)."""
        return self.test.calibration.temperature if self.test and self.test.calibration else None

    @property
    def calibration(self) -> str | None:
        """applied | not applied | None (off, or an older run)."""
        return self.test.calibration.decision if self.test and self.test.calibration else None


@dataclass(frozen=True)
class CvSummary(Doc):
    """``cv_metrics.json`` of ``vistrain cv``."""
    n_folds: int | None = slot(to_int)
    seed: int | None = slot(to_int)
    pool: str | None = slot(to_text)
    classes: list[str] | None = slot(lambda v: texts(v) if isinstance(v, list) else None, omit=True)
    class_counts: dict[str, int | None] = slot(values_of(to_int), factory=dict)
    imbalance_ratio: float | None = slot(to_num)
    summary: FoldSummary = slot(FoldSummary.from_doc, factory=FoldSummary)
    pooled: PartMetrics = slot(PartMetrics.from_doc, key="pooled_oof", factory=PartMetrics)
    folds: list[CvFold] = slot(many(CvFold.from_doc), factory=list)
    given_test_summary: FoldSummary | None = slot(_fold_summary, omit=True)
    label_issues: dict | None = slot(opt_dict, omit=True)

    @classmethod
    def from_doc(cls, d, path: Path | str = "cv_metrics.json") -> CvSummary:
        """The summary of a cv_metrics.json document; RunDirError naming ``path`` when it is not one."""
        if not isinstance(d, dict) or not isinstance(to_dict(d.get("summary")).get("metrics"), dict):
            raise RunDirError(f"{path}: damaged, no summary.metrics; {FIXES['cv_metrics.json']}")
        return cls(**cls.fields_of(d))

    @property
    def spread(self) -> dict[str, Spread]:
        return self.summary.metrics


# ---- vistrain compare ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CompareEpoch(Epoch):
    """One epoch of a setting's ``history`` in ``compare.json``: the epoch, its train loss and its
    validation loss and accuracy, each null when the run did not record it (a row of history.json
    leaves such a value out instead)."""
    train_loss: float | None = slot(to_num)
    val_loss: float | None = slot(to_num)
    val_accuracy: float | None = slot(to_num)


@dataclass(frozen=True)
class CompareRun(Doc):
    """One setting's row of ``compare.json``."""
    name: str = slot(str, default="?")
    setting: dict | None = slot(opt_dict, omit=True)
    run_dir: str | None = slot(to_text, omit=True)
    part: str | None = slot(to_text)
    n_samples: int | None = slot(to_int)
    accuracy: float | None = slot(to_num)
    macro_f1: float | None = slot(to_num)
    macro_auc: float | None = slot(to_num)
    wall_seconds: float | None = slot(to_num)
    lr: float | None = slot(to_num)         # null when the run recorded no optimizer (a fitted head)
    history: list[CompareEpoch] = slot(many(CompareEpoch.from_doc), factory=list)


def _vary(v) -> dict[str, list[str]]:
    return {k: [str(y) for y in x] if isinstance(x, list) else [str(x)] for k, x in to_dict(v).items()}


@dataclass(frozen=True)
class CompareSummary(Doc):
    """``compare.json`` of ``vistrain compare``: one row per setting."""
    data_root: str | None = slot(to_text)
    model: str | None = slot(to_text)
    vary: dict[str, list[str]] = slot(_vary, factory=dict)
    seed: int | None = slot(to_int)
    split_seed: int | None = slot(to_int)
    epochs: int | None = slot(to_int)
    same_split: bool | None = slot(to_bool)
    runs: list[CompareRun] = slot(many(CompareRun.from_doc), factory=list)

    @classmethod
    def from_doc(cls, d, path: Path | str = "compare.json") -> CompareSummary:
        """The summary of a compare.json document; RunDirError naming ``path`` when it is not one."""
        if not isinstance(d, dict) or not isinstance(d.get("runs"), list):
            raise RunDirError(f"{path}: damaged, not a compare.json of `vistrain compare` (no list of "
                              f"runs); {FIXES['compare.json']}")
        return cls(**cls.fields_of(d))
