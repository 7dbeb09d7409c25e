"""``doctor``: check an image folder: structure, unreadable files, duplicates, leakage, and the
likely mislabelled images a cross-validation found (``vistrain doctor``).

Example:
    >>> import vistrain
    >>> report = vistrain.doctor("examples/fashion-mnist-small")     # doctest: +SKIP
    >>> report.ok, len(report.findings)                              # doctest: +SKIP
    (True, 3)
"""
from __future__ import annotations

from pathlib import Path

from vistrain import fsutil
from vistrain.config import TrainConfig
from vistrain.data.doctor.hash import NEAR_DUP_DISTANCE
from vistrain.data.doctor.report import Finding
from vistrain.data.doctor.report import DoctorReport
from vistrain.data.doctor.run import diagnose
from vistrain.errors import VistrainError
from vistrain.evaluation.label_issues import CSV_NAME, PNG_NAME, read_label_issues
from vistrain.workflows.logs import show_log_lines

LABELS_TOP = 10              # label issues listed with labels= (all of them are in ``paths``)


def doctor(data: str | Path, /, *, config=None, folds: int | None = None, workers: int = -1,
           max_distance: int | None = None, labels: str | Path | None = None,
           top: int = LABELS_TOP) -> DoctorReport:
    """Every finding about ``data`` in one list (``report.findings``; ``report.ok`` is False when
    training would fail or be unsound).  ``config`` (a YAML path or :class:`TrainConfig`) gives the
    split the leakage check looks at; ``folds`` checks classes against K-fold cross-validation;
    ``max_distance`` is the near-duplicate pHash distance; ``labels`` a ``vistrain cv`` output
    folder whose likely mislabelled images join the findings (``top`` of them listed).
    """
    show_log_lines()
    if folds is not None and folds < 2:
        raise VistrainError(f"--folds must be at least 2, got {folds}")
    if top < 1:
        raise VistrainError(f"--top must be at least 1, got {top}")
    # a damaged csv is refused before the (long) decoding of every image
    found = label_findings(labels, data, top) if labels else []
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.load(config) if config else TrainConfig()
    dist = NEAR_DUP_DISTANCE if max_distance is None else max_distance
    report = diagnose(data, cfg, folds=folds, workers=workers, max_distance=dist)
    report.findings += found
    return report


def label_findings(folder, data, top: int = LABELS_TOP) -> list[Finding]:
    """The label issues of the cross-validation folder ``folder`` as one finding: a ``warning``
    listing the ``top`` most suspicious (all files in ``paths``), an ``info`` when there are none;
    for a training run folder an ``info`` saying how to make them.

    Raises :class:`VistrainError` (one line) for a folder that is neither, or a missing or
    damaged ``label_issues.csv``.
    """
    folder, data = Path(folder), Path(data)
    kind = fsutil.vistrain_output_kind(folder) if folder.is_dir() else None
    if kind == "run":
        return [Finding("info", "label-issues-need-cv",
                        f"{folder} is a training run: label issues come from `vistrain cv`, whose "
                        "fold models each predict images they never trained on",
                        fix=f"vistrain cv {data} --out CV_DIR, then vistrain doctor {data} --labels CV_DIR")]
    if kind != "cv" and not (folder / CSV_NAME).is_file():
        raise VistrainError(f"--labels {folder}: not an output folder of `vistrain cv`; give the "
                            f"--out folder of `vistrain cv {data}`")
    rows = read_label_issues(folder)
    if not rows:
        return [Finding("info", "label-issues", f"no likely mislabelled image ({folder / CSV_NAME})")]
    gone = [r["file"] for r in rows if not (data / r["file"]).is_file()]
    lines = [f"\n    {r['file']}: {r['given_label']} -> {r['suggested_label']} "
             f"(score {r['score']:.3f}, fold {r['fold']})" for r in rows[:top]]
    more = f"\n    ... and {len(rows) - top} more" if len(rows) > top else ""
    moved = (f"; {len(gone)} of them are no longer in {data} (moved already, or another data folder)"
             if gone else "")
    return [Finding("warning", "label-issues",
                    f"{len(rows)} image(s) whose out-of-fold predictions contradict the given label "
                    f"(confident learning, {folder / CSV_NAME}; score = probability of the given "
                    f"label){moved}; most suspicious first:" + "".join(lines) + more,
                    paths=[str(data / r["file"]) for r in rows],
                    fix=f"look at them ({folder / PNG_NAME}); move a mislabelled image into its "
                        "class folder (or delete it), then run `vistrain cv` again")]
