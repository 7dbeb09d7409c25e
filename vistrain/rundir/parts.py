"""The typed parts of a run folder: one frozen dataclass per file vistrain writes (see
:mod:`vistrain.rundir` for the reader, :class:`~vistrain.rundir.RunFolder`, and the file list).

Every ``from_doc`` coerces instead of trusting: a number that is not a number becomes ``None``, a
name that is not a string becomes its ``str()``, so a hand-edited file cannot smuggle objects
where text is expected.

Example:
    >>> Epoch.from_doc({"epoch": 1, "val_accuracy": 0.5, "val_loss": "oops"}).val_loss is None
    True
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vistrain.errors import RunDirError
from vistrain.transforms.preprocess import Preprocess

RETRAIN = "restore it or train the run again"
FIXES = {"cv_metrics.json": "run `vistrain cv DATA --out OUT --resume` again to rewrite it",
         "compare.json": "run `vistrain compare` again to rewrite it"}


# ---- coercion of single values -----------------------------------------------------------------
def _num(v) -> float | None:
    """A real number (bools are not), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _text(v) -> str | None:
    return None if v is None else str(v)


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v) -> list:
    return v if isinstance(v, list) else []


def _len(v) -> int | None:
    return len(v) if isinstance(v, list) else None


# ---- the parts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StrategyRecord:
    """How the model was trained (``strategy`` of model.json / run.json): the strategy applied, the
    one requested, the reasoning of strategy auto (text, list or mapping) and every other setting."""
    strategy: str | None = None
    requested: str | None = None
    reasoning: object = None
    feature_cache: str | None = None
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_doc(cls, d) -> StrategyRecord:
        d = _dict(d)
        return cls(_text(d.get("strategy")), _text(d.get("requested")), d.get("reasoning"),
                   _text(d.get("feature_cache")),
                   {str(k): v for k, v in d.items() if k not in ("strategy", "requested", "reasoning")})

    def __bool__(self) -> bool:
        return bool(self.strategy or self.requested or self.settings)


@dataclass(frozen=True)
class ModelMeta:
    """``model.json`` (checked by :func:`vistrain.artifact.read_meta`)."""
    model_name: str
    classes: list[str]
    preprocess: dict
    model_kwargs: dict
    strategy: StrategyRecord
    versions: dict

    @classmethod
    def from_doc(cls, doc: dict) -> ModelMeta:
        return cls(doc["model_name"], list(doc["classes"]), dict(doc["preprocess"]),
                   _dict(doc.get("model_kwargs")), StrategyRecord.from_doc(doc.get("strategy")),
                   _dict(doc.get("versions")))

    def preprocess_record(self) -> Preprocess:
        """The exact :class:`Preprocess` the model was trained with."""
        return Preprocess.from_dict(self.preprocess)


@dataclass(frozen=True)
class SkippedFile:
    file: str | None
    reason: str | None


@dataclass(frozen=True)
class RunRecord:
    """``run.json``: seeds, data root, class counts, skipped files, strategy, versions, time."""
    seed: int | None = None
    split_seed: int | None = None
    data_root: str | None = None
    n_images: int | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    skipped_files: list[SkippedFile] = field(default_factory=list)
    strategy: StrategyRecord = field(default_factory=StrategyRecord)
    versions: dict = field(default_factory=dict)
    wall_seconds: float | None = None

    @classmethod
    def from_doc(cls, d: dict) -> RunRecord:
        counts = {str(k): n for k, v in _dict(d.get("class_counts")).items() if (n := _int(v)) is not None}
        skipped = [SkippedFile(_text(s.get("file")), _text(s.get("reason")))
                   for s in _list(d.get("skipped_files")) if isinstance(s, dict)]
        return cls(_int(d.get("seed")), _int(d.get("split_seed")), _text(d.get("data_root")),
                   _int(d.get("n_images")), counts, skipped, StrategyRecord.from_doc(d.get("strategy")),
                   _dict(d.get("versions")), _num(d.get("wall_seconds")))


@dataclass(frozen=True)
class Epoch:
    """One row of ``history.json`` (one epoch of training); missing values are None."""
    epoch: int | None
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    seconds: float | None = None

    @classmethod
    def from_doc(cls, d: dict) -> Epoch:
        return cls(_int(d.get("epoch")), *(_num(d.get(k)) for k in
                                          ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                           "lr", "seconds")))

    def as_dict(self) -> dict:
        """The row as :mod:`vistrain.evaluation.curves` takes it."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Interval:
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    support: int | None
    n_predicted: int | None
    precision: float | None
    recall: float | None
    f1: float | None
    auc_roc: float | None


@dataclass(frozen=True)
class CalibrationMetrics:
    """A part's ``calibration`` entry: the temperature fitted on val, NLL/ECE and reliability bins
    of the raw softmax (before) and of the scaled one (after, what ``predict`` gives)."""
    temperature: float | None
    fitted_on: str | None
    nll_before: float | None
    nll_after: float | None
    ece_before: float | None
    ece_after: float | None
    reliability_before: dict | None
    reliability_after: dict | None
    decision: str | None = None   # applied | not applied (None: a run older than the decision)
    reason: str | None = None

    @classmethod
    def from_doc(cls, c) -> CalibrationMetrics | None:
        if not isinstance(c, dict):
            return None
        rel = [c.get(k) if isinstance(c.get(k), dict) else None
               for k in ("reliability_before", "reliability_after")]
        return cls(_num(c.get("temperature")), _text(c.get("fitted_on")),
                   *(_num(c.get(k)) for k in ("nll_before", "nll_after", "ece_before", "ece_after")), *rel,
                   _text(c.get("decision")), _text(c.get("reason")))


@dataclass(frozen=True)
class PartMetrics:
    """One part of ``metrics.json`` (a :func:`vistrain.evaluation.metrics.compute_metrics` dict)."""
    n_samples: int | None
    class_names: list[str]
    accuracy: float | None
    balanced_accuracy: float | None
    macro_f1: float | None
    macro_auc_roc: float | None
    ece: float | None
    top_k_accuracy: dict[str, float | None]
    per_class: list[ClassMetrics]
    ci95: dict[str, Interval]
    confusion_matrix: list | None
    reliability: dict | None
    nll: float | None = None
    calibration: CalibrationMetrics | None = None

    @classmethod
    def from_doc(cls, m: dict) -> PartMetrics:
        macro = _dict(m.get("macro"))
        per_class = [ClassMetrics(str(r.get("class")), _int(r.get("support")), _int(r.get("n_predicted")),
                                  *(_num(r.get(k)) for k in ("precision", "recall", "f1", "auc_roc")))
                     for r in _list(m.get("per_class")) if isinstance(r, dict)]
        ci = {str(k): Interval(_num(v.get("low")), _num(v.get("high")))
              for k, v in _dict(m.get("ci95")).items() if isinstance(v, dict)}
        cm = m.get("confusion_matrix")
        return cls(_int(m.get("n_samples")), [str(c) for c in _list(m.get("class_names"))],
                   _num(m.get("accuracy")), _num(m.get("balanced_accuracy")), _num(macro.get("f1")),
                   _num(macro.get("auc_roc")), _num(m.get("ece")),
                   {str(k): _num(v) for k, v in _dict(m.get("top_k_accuracy")).items()}, per_class, ci,
                   cm if isinstance(cm, list) else None,
                   m.get("reliability") if isinstance(m.get("reliability"), dict) else None,
                   _num(m.get("nll")), CalibrationMetrics.from_doc(m.get("calibration")))


@dataclass(frozen=True)
class PartPredictions:
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
class SplitPart:
    indices: list
    files: list
    counts: dict


@dataclass(frozen=True)
class Splits:
    """``splits.json``: how the images were split; file names are relative to the data root."""
    source: str | None
    classes: list[str]
    parts: dict[str, SplitPart]
    groups: dict = field(default_factory=dict)       # {"regex": PATTERN} or {"file": CSV}
    warnings: list[str] = field(default_factory=list)  # e.g. a part that lacks classes

    @classmethod
    def from_doc(cls, d: dict) -> Splits:
        parts = {str(name): SplitPart(_list(p.get("indices")), _list(p.get("files")), _dict(p.get("counts")))
                 for name, p in _dict(d.get("parts")).items() if isinstance(p, dict)}
        return cls(_text(d.get("source")), [str(c) for c in _list(d.get("classes"))], parts,
                   _dict(d.get("groups")), [str(w) for w in _list(d.get("warnings"))])

    @property
    def method(self) -> str | None:
        """``source`` with the grouping, e.g. ``grouped hold-out (regex '(p\\d+)_')``."""
        how = ", ".join(f"{k} {v!r}" for k, v in self.groups.items())
        return f"{self.source} ({how})" if how and self.source else self.source

    def files_of(self, part: str) -> dict[int, str]:
        """Index id -> file name (relative to the data root) of one part."""
        p = self.parts.get(part)
        return {} if p is None else dict(zip(p.indices, p.files))


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    message: str
    fix: str
    n_files: int | None


@dataclass(frozen=True)
class DoctorRecord:
    """``doctor.json``: the data doctor's findings on the run's data."""
    source: str | None
    findings: list[Finding]

    @classmethod
    def from_doc(cls, doc, path: Path) -> DoctorRecord:
        """From ``{"source", "findings": [...]}`` or a bare list of findings."""
        findings = doc.get("findings") if isinstance(doc, dict) else doc
        if not isinstance(findings, list) or not all(isinstance(f, dict) for f in findings):
            raise RunDirError(f"{path}: damaged, findings is not a list of objects; {RETRAIN}")
        return cls(_text(doc.get("source")) if isinstance(doc, dict) else None,
                   [Finding(str(f.get("severity", "")), str(f.get("code", "")), _short(f.get("message", "")),
                            _short(f.get("fix", "")), _len(f.get("paths"))) for f in findings])


@dataclass(frozen=True)
class CheckRecord:
    """One entry of ``checks.json`` (pre-training checks)."""
    name: str | None
    status: str | None
    message: str | None

    @classmethod
    def from_doc(cls, c: dict) -> CheckRecord:
        return cls(_text(c.get("name")), _text(c.get("status")), _text(c.get("message")))


@dataclass(frozen=True)
class Spread:
    """One metric over the cross-validation folds."""
    values: list[float | None]
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class CvFold:
    fold: str | None
    n_train: int | None
    n_val: int | None
    n_test: int | None
    wall_seconds: float | None
    temperature: float | None = None      # the fold's calibration: T applied (1.0 when kept)
    calibration: str | None = None        # applied | not applied | None (off, or an older run)


@dataclass(frozen=True)
class CvSummary:
    """``cv_metrics.json`` of ``vistrain cv``."""
    n_folds: str | None
    pool: str | None
    seed: str | None
    class_counts: dict[str, str]
    imbalance_ratio: float | None
    folds: list[CvFold]
    spread: dict[str, Spread]
    pooled: PartMetrics

    @classmethod
    def from_doc(cls, d: dict, path: Path) -> CvSummary:
        summary = _dict(d.get("summary")).get("metrics")
        if not isinstance(summary, dict):
            raise RunDirError(f"{path}: damaged, no summary.metrics; {FIXES['cv_metrics.json']}")
        spread = {str(k): Spread([_num(x) for x in _list(v.get("values"))], _num(v.get("mean")),
                                 _num(v.get("std"))) for k, v in summary.items() if isinstance(v, dict)}
        folds = [CvFold(_text(f.get("fold")), _int(f.get("n_train")), _int(f.get("n_val")),
                        _int(f.get("n_test")), _num(f.get("wall_seconds")),
                        _num(_dict(_dict(f.get("test")).get("calibration")).get("temperature")),
                        _text(_dict(_dict(f.get("test")).get("calibration")).get("decision")))
                 for f in _list(d.get("folds")) if isinstance(f, dict)]
        return cls(_text(d.get("n_folds")), _text(d.get("pool")), _text(d.get("seed")),
                   {str(k): str(v) for k, v in _dict(d.get("class_counts")).items()},
                   _num(d.get("imbalance_ratio")), folds, spread, PartMetrics.from_doc(_dict(d.get("pooled_oof"))))


@dataclass(frozen=True)
class CompareRun:
    name: str
    part: str | None
    n_samples: int | None
    accuracy: float | None
    macro_f1: float | None
    macro_auc: float | None
    wall_seconds: float | None
    history: list[Epoch]


@dataclass(frozen=True)
class CompareSummary:
    """``compare.json`` of ``vistrain compare``: one row per setting."""
    model: str | None
    data_root: str | None
    vary: dict[str, list[str]]
    seed: str | None
    split_seed: str | None
    epochs: str | None
    same_split: bool | None
    runs: list[CompareRun]

    @classmethod
    def from_doc(cls, d, path: Path | str = "compare.json") -> CompareSummary:
        """The summary of a compare.json document; RunDirError naming ``path`` when it is not one."""
        if not isinstance(d, dict) or not isinstance(d.get("runs"), list):
            raise RunDirError(f"{path}: damaged, not a compare.json of `vistrain compare` (no list of "
                              f"runs); {FIXES['compare.json']}")
        runs = [CompareRun(str(r.get("name", "?")), _text(r.get("part")), _int(r.get("n_samples")),
                           _num(r.get("accuracy")), _num(r.get("macro_f1")), _num(r.get("macro_auc")),
                           _num(r.get("wall_seconds")),
                           [Epoch.from_doc(h) for h in _list(r.get("history")) if isinstance(h, dict)])
                for r in d["runs"] if isinstance(r, dict)]
        vary = {str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)]
                for k, v in _dict(d.get("vary")).items()}
        same = d.get("same_split")
        return cls(_text(d.get("model")), _text(d.get("data_root")), vary, _text(d.get("seed")),
                   _text(d.get("split_seed")), _text(d.get("epochs")),
                   same if isinstance(same, bool) else None, runs)


def _short(v, n: int = 300) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= n else s[:n] + "..."
