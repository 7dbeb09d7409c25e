"""``MODEL_CARD.md``: what a run is for and how far to trust it, in plain Markdown.

Written at the end of every training run (:func:`vistrain.workflows.train.train_run`), atomically,
from the run folder's own files (:class:`vistrain.rundir.RunFolder`) through the Jinja2 template
``templates/model_card.md``: the data (folder, classes, counts per split part), the recipe and
why (the strategy record of run.json), the test metrics with 95 % intervals, the calibration
temperature, the weakest classes (lowest recall, then F1) and the intended use and its limits.

Example:
    >>> from vistrain.report.model_card import write_model_card
    >>> write_model_card("runs/demo")                       # doctest: +SKIP
    PosixPath('runs/demo/MODEL_CARD.md')
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from vistrain import __version__
from vistrain.fsutil import atomic_write_text
from vistrain.rundir import PartMetrics, RunFolder, StrategyRecord
from vistrain.transforms.preprocess import Preprocess

MODEL_CARD = "MODEL_CARD.md"
N_WEAK = 3  # weakest classes listed
METRICS = (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
           ("macro F1", "macro_f1"), ("macro AUC-ROC", "macro_auc_roc"))


@cache
def _environment() -> jinja2.Environment:
    # Markdown, not HTML: no autoescaping; StrictUndefined so that a missing value fails the test
    return jinja2.Environment(loader=jinja2.PackageLoader("vistrain.report", "templates"),
                              autoescape=False, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def write_model_card(run_dir: str | Path) -> Path:
    """Render ``RUN/MODEL_CARD.md`` from the run's files and write it atomically; returns its path."""
    path = Path(run_dir) / MODEL_CARD
    atomic_write_text(path, render_model_card(RunFolder.read(run_dir)))
    return path


def render_model_card(folder: RunFolder) -> str:
    """The Markdown text of the card of one finished run folder."""
    meta, run = folder.meta, folder.run
    classes = folder.classes
    test = folder.metrics.get("test")
    parts = [p for p in ("train", "val", "test") if p in folder.splits.parts]
    return _environment().get_template("model_card.md").render(
        run_name=folder.path.name, run_dir=folder.path, version=__version__,
        model_name=meta.model_name if meta else "?", n_classes=len(classes),
        preprocess=Preprocess.from_dict(meta.preprocess).describe() if meta else "?",
        data_root=run.data_root or "?", n_images=run.n_images, n_skipped=len(run.skipped_files),
        split_note=split_note(folder), parts=parts, count_rows=count_rows(folder, classes, parts),
        strategy=run.strategy.strategy or "?", requested=run.strategy.requested,
        recipe=recipe_lines(run.strategy), reasoning=reasoning_lines(run.strategy.reasoning),
        test=held_out_metrics(test), calibration=calibration(test, run.strategy), weak=weak_classes(test),
        class_list=", ".join(classes))


def split_note(folder: RunFolder) -> str:
    """Where the split came from (the folder's own parts or a seeded random split)."""
    cfg = folder.config()
    if cfg is None:
        return "as recorded in splits.json"
    return (f"stratified, seed {cfg.data.split_seed}, val {cfg.data.val_fraction:.0%}, test "
            f"{cfg.data.test_fraction:.0%} (or the folder's own train/val/test parts); splits.json "
            "lists every file")


def count_rows(folder: RunFolder, classes: list[str], parts: list[str]) -> list[dict]:
    """One row per class: its number of images in each split part."""
    counts = {p: folder.splits.parts[p].counts for p in parts}
    return [{"name": c, "counts": [counts[p].get(c, 0) for p in parts]} for c in classes]


def recipe_lines(rec: StrategyRecord) -> list[str]:
    """The strategy record's settings worth a sentence (calibration has its own section)."""
    s = rec.settings
    lines = [f"augmentation: {'; '.join(map(str, s['augmentation']))}"] if s.get("augmentation") else []
    if isinstance(s.get("balance"), dict):
        b = s["balance"]
        lines.append(f"class balance: {b.get('applied')} ({b.get('reason')})")
    for key in ("bn_policy", "head", "feature_cache", "runtime"):
        if s.get(key):
            lines.append(f"{key.replace('_', ' ')}: {s[key]}")
    if isinstance(s.get("budget"), dict) and s["budget"].get("decision"):  # a named recipe's estimate
        lines.append(f"time budget ({s['budget'].get('budget_minutes')} min): {s['budget']['decision']}")
    if isinstance(s.get("param_groups"), list):
        lrs = sorted({g.get("lr") for g in s["param_groups"] if isinstance(g, dict) and g.get("lr")})
        lines.append(f"{len(s['param_groups'])} parameter groups, learning rates {', '.join(f'{lr:.3g}' for lr in lrs)}")
    return lines


def reasoning_lines(reasoning) -> list[str]:
    """The reasoning of strategy auto (``plain`` sentences) or any recorded reasoning, as lines."""
    if isinstance(reasoning, dict) and reasoning.get("plain"):
        return [str(r) for r in reasoning["plain"]]
    if isinstance(reasoning, dict):
        return [f"{k}: {v}" for k, v in reasoning.items()]
    if isinstance(reasoning, list):
        return [str(r) for r in reasoning]
    return [str(reasoning)] if reasoning else []


def held_out_metrics(test: PartMetrics | None) -> dict | None:
    """``{"n", "rows": [{"name", "value", "interval"}]}`` of the test part, None without one."""
    if test is None or test.accuracy is None:
        return None
    rows = []
    for name, key in METRICS:
        value = getattr(test, key)
        if value is None:
            continue
        ci = test.ci95.get(key)
        interval = f"{ci.low:.3f} - {ci.high:.3f}" if ci and ci.low is not None else "n/a"
        rows.append({"name": name, "value": f"{value:.3f}", "interval": interval})
    return {"n": test.n_samples, "rows": rows}


def calibration(test: PartMetrics | None, rec: StrategyRecord) -> dict | None:
    """The fitted temperature, where it was fitted and the test ECE after scaling: from the test
    metrics, else from the strategy record of run.json (None: no temperature was fitted)."""
    c = test.calibration if test is not None else None
    if c is not None and c.temperature is not None:
        return {"temperature": f"{c.temperature:.3g}", "fitted_on": c.fitted_on or "validation",
                "ece": f"{c.ece_after:.3f}" if c.ece_after is not None else None}
    recorded = rec.settings.get("calibration")
    if isinstance(recorded, dict) and isinstance(recorded.get("temperature"), (int, float)):
        return {"temperature": f"{recorded['temperature']:.3g}",
                "fitted_on": recorded.get("fitted_on") or "validation", "ece": None}
    return None


def weak_classes(test: PartMetrics | None) -> list[dict]:
    """The :data:`N_WEAK` classes of lowest recall (then F1) on the test part."""
    if test is None:
        return []
    rated = [c for c in test.per_class if c.recall is not None]
    rated.sort(key=lambda c: (c.recall, c.f1 if c.f1 is not None else 0.0))
    return [{"name": c.name, "recall": _fmt(c.recall), "precision": _fmt(c.precision), "f1": _fmt(c.f1),
             "support": c.support if c.support is not None else "?"} for c in rated[:N_WEAK]]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
