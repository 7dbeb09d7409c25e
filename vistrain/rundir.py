"""The typed run folder: what ``vistrain train``, ``cv`` and ``compare`` write, read in one place.

:class:`RunFolder` is the one reader of an output folder.  Each part is loaded on first use and
cached; a part whose file is absent is ``None`` (or empty), and a part whose file is damaged
(not JSON, or not the JSON shape vistrain writes) raises a one-line :class:`RunDirError` that
names the file and the fix.  Fields are coerced, not trusted: a number that is not a number
becomes ``None``, a name that is not a string becomes its ``str()``, so a hand-edited file cannot
smuggle objects where text is expected.

Files of a run (``kind == "train"``)::

    model.json          -> meta: ModelMeta (via artifact.read_meta; needs model.safetensors)
    run.json            -> run: RunRecord            history.json  -> history: list[Epoch]
    metrics.json        -> metrics: {part: PartMetrics}
    predictions.json    -> predictions: {part: PartPredictions}
    splits.json         -> splits: Splits            doctor.json   -> doctor: DoctorRecord
    checks.json         -> checks: list[CheckRecord] config.yaml   -> config_text / config()
    *.png (root or figures/) -> figure_file(name)

``cv_metrics.json`` (``kind == "cv"``) -> ``cv``: CvSummary; ``compare.json`` (``kind ==
"compare"``) -> ``compare``: CompareSummary.

Example:
    >>> from vistrain.rundir import RunFolder
    >>> folder = RunFolder.read("runs/demo")                       # doctest: +SKIP
    >>> folder.kind, folder.meta.model_name, folder.metrics["test"].accuracy  # doctest: +SKIP
    ('train', 'vistrain/resnet-tiny', 0.93)
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from vistrain.artifact import META, read_meta
from vistrain.config import TrainConfig
from vistrain.errors import RunDirError
from vistrain.transforms.preprocess import Preprocess

log = logging.getLogger("vistrain")

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


# ---- the parts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelMeta:
    """``model.json`` (checked by :func:`vistrain.artifact.read_meta`)."""
    model_name: str
    classes: list[str]
    preprocess: dict
    model_kwargs: dict
    strategy: dict
    versions: dict
    raw: dict

    @classmethod
    def from_doc(cls, doc: dict) -> ModelMeta:
        return cls(doc["model_name"], list(doc["classes"]), dict(doc["preprocess"]),
                   _dict(doc.get("model_kwargs")), _dict(doc.get("strategy")),
                   _dict(doc.get("versions")), doc)

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
    strategy: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    wall_seconds: float | None = None

    @classmethod
    def from_doc(cls, d: dict) -> RunRecord:
        counts = {str(k): n for k, v in _dict(d.get("class_counts")).items() if (n := _int(v)) is not None}
        skipped = [SkippedFile(_text(s.get("file")), _text(s.get("reason")))
                   for s in _list(d.get("skipped_files")) if isinstance(s, dict)]
        return cls(_int(d.get("seed")), _int(d.get("split_seed")), _text(d.get("data_root")),
                   _int(d.get("n_images")), counts, skipped, _dict(d.get("strategy")),
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
                   m.get("reliability") if isinstance(m.get("reliability"), dict) else None)


@dataclass(frozen=True)
class PartPredictions:
    """One part of ``predictions.json``: ``indices`` (N,) ids into the scanned image index,
    ``labels`` (N,) true classes and ``probs`` (N, K) probabilities, row-aligned."""
    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray


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


@dataclass(frozen=True)
class CheckRecord:
    """One entry of ``checks.json`` (pre-training checks)."""
    name: str | None
    status: str | None
    message: str | None


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
    def from_doc(cls, d: dict) -> CompareSummary:
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


# ---- the reader --------------------------------------------------------------------------------
def output_kind(path: Path) -> str | None:
    """``"compare"``, ``"cv"`` or ``"train"``: which command wrote the folder (None: none)."""
    if (path / "compare.json").is_file():
        return "compare"
    if (path / "cv_metrics.json").is_file() or (path / "folds.json").is_file():
        return "cv"
    if any((path / n).exists() for n in (META, "metrics.json", "run.json")):
        return "train"
    return None


class RunFolder:
    """One output folder of vistrain, its parts read lazily (see the module docstring).

    ``refused_files`` collects the names of ``splits.json`` that :meth:`data_file` refused
    because they lead outside the data root.
    """

    def __init__(self, path: Path, kind: str | None):
        self.path, self.kind = path, kind
        self.refused_files: list[str] = []

    @classmethod
    def read(cls, path: str | Path) -> RunFolder:
        """The folder at ``path``; :class:`RunDirError` when it is not a folder."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path}: run directory not found; give the --out folder of `vistrain "
                              "train`, `vistrain cv` or `vistrain compare`")
        return cls(path, output_kind(path))

    # -- generic JSON loading
    def _json(self, name: str, kind: type | tuple = (dict, list)):
        """The document of ``name``, None when absent; one-line RunDirError when damaged."""
        path = self.path / name
        if not path.is_file():
            return None
        fix = FIXES.get(name, RETRAIN)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise RunDirError(f"{path}: damaged, not valid JSON ({' '.join(str(err).split())[:80]}); "
                              f"{fix}") from None
        if not isinstance(doc, kind):
            want = " or ".join({dict: "object", list: "list"}[k] for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise RunDirError(f"{path}: damaged, expected a JSON {want}, got {type(doc).__name__}; {fix}")
        return doc

    def _damaged(self, name: str, problem: str) -> RunDirError:
        return RunDirError(f"{self.path / name}: damaged, {problem}; {FIXES.get(name, RETRAIN)}")

    # -- the parts of a training run
    @cached_property
    def meta(self) -> ModelMeta | None:
        """``model.json`` (None when absent); RunDirError when damaged or the weights are missing."""
        return ModelMeta.from_doc(read_meta(self.path)) if (self.path / META).is_file() else None

    @cached_property
    def run(self) -> RunRecord:
        doc = self._json("run.json", dict)
        return RunRecord() if doc is None else RunRecord.from_doc(doc)

    @cached_property
    def history(self) -> list[Epoch]:
        return [Epoch.from_doc(h) for h in self._json("history.json", list) or [] if isinstance(h, dict)]

    @cached_property
    def metrics(self) -> dict[str, PartMetrics]:
        doc = self._json("metrics.json", dict) or {}
        return {str(k): PartMetrics.from_doc(v) for k, v in doc.items() if isinstance(v, dict)}

    @cached_property
    def predictions(self) -> dict[str, PartPredictions]:
        doc = self._json("predictions.json", dict) or {}
        return {str(part): self._part_predictions(part, p) for part, p in doc.items()}

    def _part_predictions(self, part, p) -> PartPredictions:
        try:
            ids, y = np.asarray(p["indices"], np.int64), np.asarray(p["labels"], np.int64)
            probs = np.asarray(p["probs"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise self._damaged("predictions.json", f"part {part!r} lacks numeric indices/labels/probs") from None
        aligned = probs.ndim == 2 and len(ids) == len(y) == len(probs)
        if not aligned or (len(y) and not 0 <= y.min() <= y.max() < probs.shape[1]):
            raise self._damaged("predictions.json", f"part {part!r}: indices, labels and probs do not line up")
        return PartPredictions(ids, y, probs)

    @cached_property
    def splits(self) -> Splits:
        doc = self._json("splits.json", dict) or {}
        parts = {str(name): SplitPart(_list(p.get("indices")), _list(p.get("files")), _dict(p.get("counts")))
                 for name, p in _dict(doc.get("parts")).items() if isinstance(p, dict)}
        return Splits(_text(doc.get("source")), [str(c) for c in _list(doc.get("classes"))], parts)

    @cached_property
    def doctor(self) -> DoctorRecord | None:
        doc = self._json("doctor.json", (dict, list))
        if doc is None:
            return None
        findings = doc.get("findings") if isinstance(doc, dict) else doc
        if not isinstance(findings, list) or not all(isinstance(f, dict) for f in findings):
            raise self._damaged("doctor.json", "findings is not a list of objects")
        return DoctorRecord(_text(doc.get("source")) if isinstance(doc, dict) else None,
                            [Finding(str(f.get("severity", "")), str(f.get("code", "")),
                                     _short(f.get("message", "")), _short(f.get("fix", "")),
                                     len(f["paths"]) if isinstance(f.get("paths"), list) else None)
                             for f in findings])

    @cached_property
    def checks(self) -> list[CheckRecord]:
        return [CheckRecord(_text(c.get("name")), _text(c.get("status")), _text(c.get("message")))
                for c in self._json("checks.json", list) or [] if isinstance(c, dict)]

    @cached_property
    def config_text(self) -> str | None:
        path = self.path / "config.yaml"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    def config(self) -> TrainConfig | None:
        """The run's ``config.yaml`` as a :class:`TrainConfig` (None when absent)."""
        return TrainConfig.load(self.path / "config.yaml") if self.config_text is not None else None

    @cached_property
    def classes(self) -> list[str]:
        """Class names: model.json's, else splits.json's (a damaged model.json is skipped)."""
        try:
            if self.meta is not None:
                return self.meta.classes
        except RunDirError as err:
            log.warning("%s", err)
        return self.splits.classes

    def evaluated_part(self) -> str | None:
        """The part the run was scored on: ``test``, else ``val`` (None: no predictions)."""
        return next((p for p in ("test", "val") if p in self.predictions), None)

    def figure_file(self, name: str) -> Path | None:
        """The PNG ``name`` (no suffix) the run wrote, in its root or ``figures/``."""
        return next((p for p in (self.path / f"{name}.png", self.path / "figures" / f"{name}.png")
                     if p.is_file()), None)

    # -- the run's data
    @cached_property
    def data_root(self) -> Path | None:
        """The data folder the run was trained on, when it is reachable from here."""
        root = self.run.data_root
        return Path(root) if root and Path(root).is_dir() else None

    def data_file(self, rel) -> Path | None:
        """The file ``rel`` (a name of splits.json) when it resolves inside the data root.

        ``../`` escapes, absolute names and links out of the root give None and are recorded in
        ``refused_files`` (with a warning), so no file outside the data root is ever opened.
        """
        root = self.data_root
        if root is None or not isinstance(rel, str) or not rel:
            return None
        try:
            base = root.resolve()
            path = (base / rel).resolve()
        except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL byte
            path = None
        if path is None or not path.is_relative_to(base):
            if rel not in self.refused_files:
                self.refused_files.append(rel)
                log.warning("skipped %r from splits.json: it is outside the data root %s", rel, root)
            return None
        return path

    # -- cross-validation and comparison summaries
    @cached_property
    def cv(self) -> CvSummary | None:
        """``cv_metrics.json`` (None when absent: the cross-validation has not finished)."""
        d = self._json("cv_metrics.json", dict)
        if d is None:
            return None
        summary = _dict(d.get("summary")).get("metrics")
        if not isinstance(summary, dict):
            raise self._damaged("cv_metrics.json", "no summary.metrics")
        spread = {str(k): Spread([_num(x) for x in _list(v.get("values"))], _num(v.get("mean")),
                                 _num(v.get("std"))) for k, v in summary.items() if isinstance(v, dict)}
        folds = [CvFold(_text(f.get("fold")), _int(f.get("n_train")), _int(f.get("n_val")),
                        _int(f.get("n_test")), _num(f.get("wall_seconds")))
                 for f in _list(d.get("folds")) if isinstance(f, dict)]
        return CvSummary(_text(d.get("n_folds")), _text(d.get("pool")), _text(d.get("seed")),
                         {str(k): str(v) for k, v in _dict(d.get("class_counts")).items()},
                         _num(d.get("imbalance_ratio")), folds, spread,
                         PartMetrics.from_doc(_dict(d.get("pooled_oof"))))

    @cached_property
    def compare(self) -> CompareSummary | None:
        """``compare.json`` (None when absent)."""
        d = self._json("compare.json", dict)
        if d is None:
            return None
        if not isinstance(d.get("runs"), list):
            raise self._damaged("compare.json", "no list of runs")
        return CompareSummary.from_doc(d)


def _short(v, n: int = 300) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= n else s[:n] + "..."
