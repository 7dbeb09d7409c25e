"""``run.json``: the record of how a finished run was made, one class for its writer
(:mod:`vistrain.training.run`) and its reader (:class:`~vistrain.rundir.RunFolder`).

``schema`` is the version of the file's shape: :data:`SCHEMA_VERSION` for what this vistrain
writes; a run.json without the key was written before the key existed (version 1: the same
fields) and reads the same.

Example:
    >>> rec = RunRecord.from_doc({"seed": 0, "split_seed": 0, "wall_seconds": 6.5,
    ...                           "strategy": {"strategy": "finetune", "epochs": 3}})
    >>> rec.schema, rec.strategy.strategy, rec.strategy.settings
    (1, 'finetune', {'epochs': 3})
    >>> RunRecord.from_doc(rec.to_doc()) == rec
    True
"""
from __future__ import annotations

from dataclasses import dataclass

from vistrain.rundir.doc import (Doc, many, opt_dict, same, slot, texts, to_dict, to_int, to_num, to_text)

SCHEMA_VERSION = 2  # 2: the key ``schema`` itself; version 1 files (no key) hold the same fields


@dataclass(frozen=True)
class StrategyRecord(Doc):
    """How the model was trained (``strategy`` of model.json / run.json): the strategy applied, the
    one requested, the reasoning of strategy auto (text, list or mapping) and every other setting."""
    strategy: str | None = slot(to_text, omit=True)
    requested: str | None = slot(to_text, omit=True)
    reasoning: object = slot(same, omit=True)
    settings: dict = slot(rest=True)

    @property
    def feature_cache(self) -> str | None:
        return to_text(self.settings.get("feature_cache"))

    def __bool__(self) -> bool:
        return bool(self.strategy or self.requested or self.settings)


@dataclass(frozen=True)
class SkippedFile(Doc):
    file: str | None = slot(to_text)
    reason: str | None = slot(to_text)


def _counts(v) -> dict[str, int]:
    return {k: n for k, x in to_dict(v).items() if (n := to_int(x)) is not None}


def _schema(v) -> int:
    return to_int(v) or 1


@dataclass(frozen=True)
class RunRecord(Doc):
    """``run.json``: seeds, versions, the data (root, fingerprint, counts, skipped files), the
    strategy, the time taken, the pixel cache, the calibration decision and the split's warnings.
    ``report_seconds`` / ``total_seconds`` / ``wall_seconds_covers`` are added once report.html is
    written (absent until then)."""
    schema: int = slot(_schema, default=1)
    seed: int | None = slot(to_int)
    split_seed: int | None = slot(to_int)
    versions: dict = slot(to_dict, factory=dict)
    data_root: str | None = slot(to_text)
    data_fingerprint: dict | None = slot(opt_dict)
    n_images: int | None = slot(to_int)
    class_counts: dict[str, int] = slot(_counts, factory=dict)
    skipped_files: list[SkippedFile] = slot(many(SkippedFile.from_doc), factory=list)
    strategy: StrategyRecord = slot(StrategyRecord.from_doc, factory=StrategyRecord)
    wall_seconds: float | None = slot(to_num)
    cache: dict | None = slot(opt_dict)         # the pixel cache's size estimate and where it went
    calibration: dict | None = slot(opt_dict)   # the temperature decision: T, decision, reason, NLLs
    warnings: list[str] = slot(texts, factory=list)  # e.g. a split part that lacks classes
    report_seconds: float | None = slot(to_num, omit=True)
    total_seconds: float | None = slot(to_num, omit=True)
    wall_seconds_covers: str | None = slot(to_text, omit=True)

