"""How each JSON file of a run, cv or compare folder is read, and the one writer of them.

:data:`READERS` maps a file name to the JSON type it holds and the function that makes its
records of it: :class:`~vistrain.rundir.RunFolder` reads every file through it, and
:func:`write_run_file` writes every file through it too.  The writer reads the document it was
given back through the file's records before writing it, so a file holds exactly what its
reader will read: a key the record would drop, or a value it would coerce, is a bug of the
record, logged as a warning, and the file then holds the record's document (what the reader
reads), never the key it would drop.  A document that reads back whole is written as it was
given, byte for byte.

Example:
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_run_file(d / "history.json", [{"epoch": 1, "val_accuracy": 0.5, "trainable_params": 10}])
    >>> json.loads((d / "history.json").read_text())
    [{'epoch': 1, 'val_accuracy': 0.5, 'trainable_params': 10}]
    >>> typed_doc("history.json", [{"epoch": 1, "val_loss": "oops"}])
    [{'epoch': 1}]
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable, NamedTuple

from vistrain.fsutil import atomic_write_json
from vistrain.rundir.doc import plain
from vistrain.rundir.parts import (CheckRecord, DoctorRecord, Epoch, ModelMeta, PartMetrics, PartPredictions,
                                   Splits)
from vistrain.rundir.record import RunRecord
from vistrain.rundir.summaries import CompareSummary, CvSummary, FoldsRecord

log = logging.getLogger("vistrain")


class Reader(NamedTuple):
    """The JSON type a file holds (``kind``) and how its records are made of it (``read``:
    ``(document, path) -> records``; ``path`` names the file in the message of a damaged one)."""
    kind: type | tuple
    read: Callable


def _one(record) -> Callable:
    return lambda doc, path: record.from_doc(doc)


def _records(record) -> Callable:
    """A JSON list of ``record`` objects (anything else in the list is skipped)."""
    return lambda doc, path: [record.from_doc(x) for x in doc if isinstance(x, dict)]


def _parts(record) -> Callable:
    """A JSON object of parts (val, test, ...), each a ``record`` object (others are skipped)."""
    return lambda doc, path: {str(k): record.from_doc(v) for k, v in doc.items() if isinstance(v, dict)}


def _predictions(doc: dict, path: Path) -> dict[str, PartPredictions]:
    return {str(part): PartPredictions.from_doc(p, path, str(part)) for part, p in doc.items()}


READERS: dict[str, Reader] = {
    "model.json": Reader(dict, _one(ModelMeta)),
    "run.json": Reader(dict, _one(RunRecord)),
    "history.json": Reader(list, _records(Epoch)),
    "metrics.json": Reader(dict, _parts(PartMetrics)),
    "predictions.json": Reader(dict, _predictions),
    "splits.json": Reader(dict, _one(Splits)),
    "doctor.json": Reader((dict, list), DoctorRecord.from_doc),
    "checks.json": Reader(list, _records(CheckRecord)),
    "folds.json": Reader(dict, _one(FoldsRecord)),
    "cv_metrics.json": Reader(dict, CvSummary.from_doc),
    "compare.json": Reader(dict, CompareSummary.from_doc),
}


def typed_doc(name: str, doc, path: str | Path | None = None):
    """The document the records of the file ``name`` give back of ``doc``: what its reader reads."""
    return plain(READERS[name].read(doc, Path(path) if path is not None else Path(name)))


def write_run_file(path: str | Path, doc, *, indent: int | None = 1, default=None) -> None:
    """Write ``doc`` as the run file ``path`` (atomically, as JSON; ``indent`` and ``default`` as
    for :func:`json.dumps`), read back through the records of its name first (see the module
    docstring); KeyError for a name that is not a file of :data:`READERS`."""
    path = Path(path)
    back = typed_doc(path.name, doc, path)
    where = None if back == doc else first_difference(_as_json(doc, default), _as_json(back, default))
    if where is not None:
        log.warning("%s: its record does not give back what vistrain wrote (at %s); the file holds "
                    "what the record reads (a bug of vistrain: add the key to the record)", path, where)
        doc = back
    atomic_write_json(path, doc, indent=indent, default=default)


def _as_json(doc, default):
    return json.loads(json.dumps(doc, default=default))


def first_difference(a, b, where: str = "") -> str | None:
    """The first place (``test/per_class[0]/f1``; ``/`` for the whole document) where the JSON
    values ``a`` and ``b`` differ, None where they are equal (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            d = f"{where}/{k}" if k not in a or k not in b else first_difference(a[k], b[k], f"{where}/{k}")
            if d is not None:
                return d.lstrip("/") or "/"
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((d for i, (x, y) in enumerate(zip(a, b))
                     if (d := first_difference(x, y, f"{where}[{i}]")) is not None), None)
    same = (type(a) is type(b) or (_number(a) and _number(b))) and (
        a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)))
    return None if same else (where.lstrip("/") or "/")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
