"""The full ``report.html`` of a run: one self-contained file, readable offline and without JS.

Every picture is embedded as a ``data:image/png;base64`` URI and the CSS is inline; the page
refers to no other file or URL.  Sections (stable ``id``s, in order): ``data``, ``checks``,
``preprocessing``, ``augmentation``, ``strategy``, ``curves``, ``metrics``, ``confusion``,
``plots``, ``gallery``, ``reproducibility``.  A section whose inputs are missing says so instead
of disappearing, so the ids are always present; a section that fails (a damaged file) shows the
one-line reason and the rest of the page is still written.

The run's files are read only through :class:`vistrain.rundir.RunFolder`; the page is the one
Jinja2 template of :mod:`vistrain.report.page` (autoescaped).  :func:`build_full_report` also
takes the output folder of ``vistrain cv`` (:mod:`~vistrain.report.cv_report`) and of
``vistrain compare`` (:mod:`~vistrain.report.compare_report`).

Example:
    >>> from vistrain.report.html import build_full_report
    >>> build_full_report("runs/demo").name          # doctest: +SKIP
    'report.html'
"""
from __future__ import annotations

import logging
from pathlib import Path

from vistrain.errors import RunDirError, VistrainError
from vistrain.fsutil import atomic_write_bytes
from vistrain.progress import progress_bar
from vistrain.report import eval_sections, run_sections
from vistrain.report.compare_report import render_compare_page
from vistrain.report.cv_report import render_cv_page
from vistrain.report.gallery import gallery_blocks
from vistrain.report.page import Section, Text, fmt, render_page
from vistrain.rundir import RunFolder

log = logging.getLogger("vistrain")

SECTIONS = ("data", "checks", "preprocessing", "augmentation", "strategy", "curves", "metrics",
            "confusion", "plots", "gallery", "reproducibility")
TITLES = {"data": "Data", "checks": "Pre-training checks", "preprocessing": "Preprocessing",
          "augmentation": "Augmentation", "strategy": "Strategy", "curves": "Training curves",
          "metrics": "Metrics", "confusion": "Confusion matrix", "plots": "ROC, PR and calibration",
          "gallery": "Top losses and confusions (Grad-CAM)", "reproducibility": "Reproducibility"}
BLOCKS = {"data": run_sections.data_blocks, "checks": run_sections.checks_blocks,
          "preprocessing": run_sections.preprocessing_blocks,
          "augmentation": run_sections.augmentation_blocks, "strategy": run_sections.strategy_blocks,
          "curves": run_sections.curves_blocks, "metrics": eval_sections.metrics_blocks,
          "confusion": eval_sections.confusion_blocks, "plots": eval_sections.roc_pr_reliability_blocks,
          "gallery": gallery_blocks, "reproducibility": run_sections.reproducibility_blocks}


def section(folder: RunFolder, sid: str) -> Section:
    """Section ``sid`` of the run; when it cannot be built, a section saying why."""
    try:
        blocks = BLOCKS[sid](folder)
    except VistrainError as err:  # a damaged or missing file: its one-line message says what to do
        log.warning("report: section %s: %s", sid, err)
        blocks = [Text(str(err), "warn")]
    except Exception as err:  # one broken section must not lose the whole report
        log.warning("report: section %s failed: %s", sid, err)
        blocks = [Text(f"this section could not be built: {type(err).__name__}: {err}", "fail")]
    return Section(sid, TITLES[sid], blocks)


def summary_blocks(folder: RunFolder) -> list:
    """One line above the contents: the classes and the held-out accuracy."""
    classes = folder.classes
    line = f"{len(classes)} classes: {', '.join(classes)}."
    try:
        part = folder.evaluated_part()
        m = folder.metrics.get(part) if part else None
    except VistrainError:
        m = None
    if m is not None:
        line += f" Held-out {part} accuracy {fmt(m.accuracy)} on {m.n_samples} images."
    return [Text(line)]


def model_name(folder: RunFolder) -> str:
    meta = run_sections.readable_meta(folder)
    return meta.model_name if meta else "?"


def render_report(run_dir: str | Path, *, progress: bool = True) -> str:
    """The report page of a training run as a string (see module docstring); a bar shows the
    sections being built on a terminal (:func:`vistrain.progress.progress_bar`)."""
    folder = RunFolder.read(run_dir)
    bar = progress_bar(SECTIONS, desc="report.html", unit="section", leave=False, enabled=progress)
    sections = []
    for sid in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(sid)
        sections.append(section(folder, sid))
    # names refused while the sections opened files are reported under the data section
    sections[0].blocks.extend(run_sections.refused_file_blocks(folder))
    try:
        summary = summary_blocks(folder)
    except VistrainError as err:
        summary = [Text(str(err), "warn")]
    name = model_name(folder)
    return render_page(f"vistrain report: {name if name != '?' else folder.path.name}",
                       f"vistrain report: {name} on {folder.run.data_root or '?'}", summary, sections)


def output_kind(out_dir: Path) -> str | None:
    """``"compare"``, ``"cv"`` or ``"train"``: which command wrote ``out_dir`` (None: none)."""
    return RunFolder.read(out_dir).kind


def build_full_report(run_dir: str | Path, *, progress: bool = True) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and return its path; ``run_dir`` is the
    output folder of ``vistrain train``, ``vistrain cv`` or ``vistrain compare``.  ``progress``:
    a bar over the sections of a training run's page where a person watches."""
    folder = RunFolder.read(run_dir)
    if folder.kind == "compare":
        page = render_compare_page(folder)
    elif folder.kind == "cv":
        page = render_cv_page(folder)
    elif folder.kind == "train":
        page = render_report(folder.path, progress=progress)
    else:
        raise RunDirError(f"{folder.path}: no model.json, metrics.json, run.json, cv_metrics.json or "
                          "compare.json; not a vistrain run directory (train one with `vistrain "
                          "train DATA --out DIR`)")
    out = folder.path / "report.html"
    # a file name that is not UTF-8 (os.fsdecode's surrogates) shows as \\udcff, not a crash
    atomic_write_bytes(out, page.encode("utf-8", "backslashreplace"))
    return out
