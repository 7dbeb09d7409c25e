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
"compare"``) -> ``compare``: CompareSummary; ``folds.json`` -> ``folds``: FoldsRecord.

Every part is a :class:`~vistrain.rundir.doc.Doc`: ``from_doc`` reads its file, ``to_doc`` gives
back the document vistrain wrote.  :data:`~vistrain.rundir.files.READERS` says how each file is
read, for this reader and for the one writer, :func:`~vistrain.rundir.files.write_run_file`, which
writes every file through the records that read it (``run.json`` carries a schema version,
:data:`~vistrain.rundir.record.SCHEMA_VERSION`).  The package imports no torch: the
torch-free modules (prediction, deploy) read run folders through it too.

Example:
    >>> from vistrain.rundir import RunFolder
    >>> folder = RunFolder.read("runs/demo")                       # doctest: +SKIP
    >>> folder.kind, folder.meta.model_name, folder.metrics["test"].accuracy  # doctest: +SKIP
    ('train', 'vistrain/resnet-tiny', 0.93)

The dataclasses live in :mod:`vistrain.rundir.parts`, :mod:`~vistrain.rundir.record` and
:mod:`~vistrain.rundir.summaries`, and are re-exported here with :func:`write_run_file`.
"""
from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path

from vistrain.artifact_meta import META, read_meta
from vistrain.config import TrainConfig
from vistrain.errors import RunDirError
from vistrain.rundir.files import READERS, write_run_file
from vistrain.rundir.parts import (FIXES, RETRAIN, Averages, Bootstrap, CalibrationMetrics, CheckRecord, ClassMetrics,
                                   DoctorRecord, Epoch, Finding, Interval, ModelMeta, PartMetrics, PartPredictions,
                                   Splits, SplitPart)
from vistrain.rundir.record import SCHEMA_VERSION, RunRecord, SkippedFile, StrategyRecord
from vistrain.rundir.summaries import (CompareEpoch, CompareRun, CompareSummary, CvFold, CvSummary, FoldsRecord,
                                       FoldSplit, FoldSummary, Spread)

__all__ = ["RunFolder", "output_kind", "SCHEMA_VERSION", "Averages", "Bootstrap", "CalibrationMetrics", "CheckRecord",
           "ClassMetrics", "CompareEpoch", "CompareRun", "CompareSummary", "CvFold", "CvSummary", "DoctorRecord",
           "Epoch", "Finding", "FoldsRecord", "FoldSplit", "FoldSummary", "Interval", "ModelMeta", "PartMetrics",
           "PartPredictions", "RunRecord", "SkippedFile", "Splits", "SplitPart", "Spread", "StrategyRecord",
           "write_run_file"]
log = logging.getLogger("vistrain")


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
            kinds = kind if isinstance(kind, tuple) else (kind,)
            want = " or ".join({dict: "object", list: "list"}[k] for k in kinds)
            raise RunDirError(f"{path}: damaged, expected a JSON {want}, got {type(doc).__name__}; {fix}")
        return doc

    # -- the parts of a training run
    @cached_property
    def meta(self) -> ModelMeta | None:
        """``model.json`` (None when absent); RunDirError when damaged or the weights are missing."""
        if not (self.path / META).is_file():
            return None
        return READERS[META].read(read_meta(self.path), self.path / META)

    def _read(self, name: str):
        """The records of the file ``name`` (:data:`~vistrain.rundir.files.READERS`), None when
        absent; one-line RunDirError when damaged."""
        kind, read = READERS[name]
        doc = self._json(name, kind)
        return None if doc is None else read(doc, self.path / name)

    @cached_property
    def run(self) -> RunRecord:
        return self._read("run.json") or RunRecord()

    @cached_property
    def history(self) -> list[Epoch]:
        return self._read("history.json") or []

    @cached_property
    def metrics(self) -> dict[str, PartMetrics]:
        return self._read("metrics.json") or {}

    @cached_property
    def predictions(self) -> dict[str, PartPredictions]:
        return self._read("predictions.json") or {}

    @cached_property
    def splits(self) -> Splits:
        return self._read("splits.json") or Splits()

    @cached_property
    def doctor(self) -> DoctorRecord | None:
        return self._read("doctor.json")

    @cached_property
    def checks(self) -> list[CheckRecord]:
        return self._read("checks.json") or []

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
                if len(self.refused_files) == 1:  # one line, not one per file (a folder of links)
                    log.warning("skipped %r from splits.json: it is outside the data root %s (links "
                                "out of the root are not followed; later ones are counted in the "
                                "report, not listed here)", rel, root)
            return None
        return path

    # -- cross-validation and comparison summaries
    @cached_property
    def cv(self) -> CvSummary | None:
        """``cv_metrics.json`` (None when absent: the cross-validation has not finished)."""
        return self._read("cv_metrics.json")

    @cached_property
    def compare(self) -> CompareSummary | None:
        """``compare.json`` (None when absent)."""
        return self._read("compare.json")

    @cached_property
    def folds(self) -> FoldsRecord | None:
        """``folds.json`` of ``vistrain cv`` (None when absent)."""
        return self._read("folds.json")

