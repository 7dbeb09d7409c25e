"""``OUT/report.html`` (and ``compare.html``) of ``vistrain compare``: curves, final metrics, time.

Built from ``compare.json`` alone (read by :attr:`vistrain.rundir.RunFolder.compare`) on the page
template of :mod:`vistrain.report.page`: every value is autoescaped or formatted as a number, so
a crafted file cannot inject markup, and no path named in it is opened.

Example:
    >>> from vistrain.report.compare_report import render_compare_report
    >>> run = {"name": "act-relu", "history": [{"epoch": 1, "train_loss": 0.9, "val_accuracy": 0.5}]}
    >>> page = render_compare_report({"model": "<m>", "vary": {"act": ["relu"]}, "runs": [run]})
    >>> "&lt;m&gt;" in page and "<m>" not in page
    True
"""
from __future__ import annotations

import logging

from vistrain.errors import RunDirError
from vistrain.evaluation.compare import plot_compare_curves
from vistrain.evaluation.png import figure_png
from vistrain.report.norm_axes import norm_axes_figure
from vistrain.report.page import Section, Table, Text, fmt, note, picture, render_page
from vistrain.rundir import CompareSummary, RunFolder

log = logging.getLogger("vistrain")


def curves_blocks(summary: CompareSummary) -> list:
    """The curves figure per setting, drawn from numbers only (names are legend text)."""
    clean = {"model": summary.model or "?",
             "runs": [{"name": r.name, "history": [h.as_dict() for h in r.history if h.epoch is not None]}
                      for r in summary.runs]}
    try:
        return [picture(plot_compare_curves(clean), "training curves per setting")]
    except Exception as err:  # a broken history must not lose the page
        log.warning("report: cannot draw the compare curves: %s", err)
        return [note(f"no curves: {err}")]


def metrics_table(summary: CompareSummary) -> Table:
    rows = [[r.name, r.part or "?", "?" if r.n_samples is None else r.n_samples, fmt(r.accuracy, missing="n/a"),
             fmt(r.macro_f1, missing="n/a"), fmt(r.macro_auc, missing="n/a"),
             fmt(r.wall_seconds, 1, missing="n/a"), len(r.history)] for r in summary.runs]
    return Table(["setting", "part", "n", "accuracy", "macro-F1", "macro AUC", "wall time (s)", "epochs"], rows)


def compare_sections(summary: CompareSummary) -> list[Section]:
    sections = [Section("curves", "Curves", curves_blocks(summary)),
                Section("metrics", "Final metrics", [metrics_table(summary)])]
    if "norm" in summary.vary:
        png = figure_png(norm_axes_figure(), dpi=90, bbox_inches="tight")
        sections.append(Section("normalization", "What each normalization averages over",
                                [picture(png, "normalization axes")]))
    return sections


def render_summary_page(summary: CompareSummary) -> str:
    varied = "; ".join(f"{k} = {', '.join(v)}" for k, v in summary.vary.items())
    same = {True: "yes", False: "NO"}.get(summary.same_split, "?")
    seed, split_seed, epochs = ("?" if v is None else v for v in (summary.seed, summary.split_seed, summary.epochs))
    intro = [Text(f"Data: {summary.data_root or '?'}. Varied: {varied}. Seed {seed}, split "
                  f"seed {split_seed}, {epochs} epoch(s) per run. Same split "
                  f"for every run: {same}.")]
    return render_page("vistrain compare", f"Comparison: {summary.model or '?'}", intro,
                       compare_sections(summary))


def render_compare_report(summary: dict) -> str:
    """The page (a string) for one ``compare.json`` document (``compare.html`` of the workflow)."""
    return render_summary_page(CompareSummary.from_doc(summary))


def render_compare_page(folder: RunFolder) -> str:
    """The page (a string) of the comparison folder."""
    if folder.compare is None:
        raise RunDirError(f"{folder.path}: no compare.json; run `vistrain compare` again")
    return render_summary_page(folder.compare)

