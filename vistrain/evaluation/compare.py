"""Settings to compare and how to read the runs (``vistrain compare``; the job that trains them
is :func:`vistrain.workflows.compare.run_compare`).

``--vary norm=batch,layer,instance,group,none --vary act=relu,gelu`` gives the cartesian product
of the lists; every setting is trained with the normal training path (``run_training``) into
``OUT/<setting>/`` with the same config, seed and data split (the split is a deterministic function
of the scanned folder and ``data.split_seed``; ``compare.json`` records that every run's
``splits.json`` holds the same parts).  The comparison is written to ``OUT/compare.json`` and a
self-contained ``OUT/compare.html`` (:mod:`vistrain.report.compare_report`): overlaid val-accuracy and train/val-loss curves per epoch,
the final metrics (test accuracy, macro-F1, macro AUC), the wall time per setting and, when the
normalization is varied, the normalization-axes figure.  The learning rate is the one ``train``
would use (unless varied): from-scratch ``vistrain/<name>`` models get the from-scratch default of
:func:`vistrain.training.plan.default_lr`, not the fine-tuning rate; compare.json records it.

Example:
    >>> parse_vary(["norm=batch,group", "act=relu,gelu"])
    {'norm': ['batch', 'group'], 'act': ['relu', 'gelu']}
    >>> [setting_name(s) for s in settings_product({"norm": ["batch", "group"], "act": ["relu"]})]
    ['norm-batch_act-relu', 'norm-group_act-relu']
"""
from __future__ import annotations

import copy
import itertools
import logging
import re
from pathlib import Path

from vistrain.config.settings import SETTINGS, set_text
from vistrain.errors import VistrainError
from vistrain.fsutil import atomic_write_bytes
from vistrain.evaluation.png import figure_png, new_figure
from vistrain.rundir import PartMetrics, RunFolder, RunRecord

log = logging.getLogger("vistrain")

NAMES = frozenset(s.name for s in SETTINGS)  # the settings' names --vary takes besides SECTION.KEY

def parse_vary(items: list[str]) -> dict[str, list[str]]:
    """``["norm=batch,group", ...]`` -> ``{"norm": ["batch", "group"], ...}`` (order kept).  A
    key is a setting's name, as its flag and API keyword spell it (``norm``, ``lr``,
    ``batch_size``: :data:`~vistrain.config.settings.SETTINGS`), or any ``SECTION.KEY``."""
    vary: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not key or not values:
            raise VistrainError(f"--vary {item!r}: expected KEY=V1,V2,... e.g. norm=batch,group")
        if key not in NAMES and "." not in key:
            raise VistrainError(f"--vary {item!r}: unknown key {key!r}; use a setting's name (e.g. norm, "
                                "act, model, lr, batch_size) or SECTION.KEY (e.g. optim.name)")
        if key in vary:
            raise VistrainError(f"--vary {key} given twice; put all its values in one list")
        if len(set(values)) != len(values):
            raise VistrainError(f"--vary {item!r}: repeated value")
        vary[key] = values
    if not vary:
        raise VistrainError("give at least one --vary KEY=V1,V2 (e.g. --vary norm=batch,group)")
    return vary


def settings_product(vary: dict[str, list[str]]) -> list[dict[str, str]]:
    """Cartesian product of the ``--vary`` lists, first key outermost."""
    keys = list(vary)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(vary[k] for k in keys))]


def setting_name(setting: dict[str, str]) -> str:
    """Folder-safe name of one setting: ``norm-batch_act-gelu``."""
    name = "_".join(f"{k}-{v}" for k, v in setting.items())
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", name)


def apply_setting(cfg, setting: dict[str, str]):
    """A deep copy of ``cfg`` with the setting's values set, as ``--set`` and the flags set them
    (:func:`~vistrain.config.settings.set_text`: typed from the text, a setting's name or
    config key through its entry of the settings table)."""
    cfg = copy.deepcopy(cfg)
    for key, raw in setting.items():
        try:
            set_text(cfg, key, raw)
        except VistrainError as err:
            raise VistrainError(f"--vary {key}: {err}") from None
    return cfg.check()  # resolved (a vistrain/ model fine-tunes) and validated, key named


def collect_run(run_dir: Path, name: str, setting: dict) -> dict:
    folder = RunFolder(Path(run_dir), "train")
    metrics, run = folder.metrics, folder.run
    part = "test" if "test" in metrics else "val"
    m = metrics.get(part) or PartMetrics()
    return {"name": name, "setting": setting, "run_dir": str(run_dir), "part": part,
            "n_samples": m.n_samples, "accuracy": m.accuracy,
            "macro_f1": m.macro.f1, "macro_auc": m.macro.auc_roc,
            "wall_seconds": run.wall_seconds, "lr": _base_lr(run),
            "history": [{k: getattr(h, k) for k in ("epoch", "train_loss", "val_loss", "val_accuracy")}
                        for h in folder.history]}


def _base_lr(run: RunRecord) -> float | None:
    """The largest rate of the run's optimizer groups (the base rate; None if not recorded)."""
    groups = run.strategy.settings.get("param_groups") or []
    return max((g["lr"] for g in groups), default=None)


# ---- figures and report -----------------------------------------------------------------------
def plot_compare_curves(summary: dict, path=None):
    """Val accuracy, train loss and val loss per epoch, one line per setting; PNG bytes."""
    from matplotlib.ticker import MaxNLocator
    fig = new_figure((13, 3.8), layout=None)
    panels = (("val_accuracy", "validation accuracy"), ("train_loss", "train loss"),
              ("val_loss", "validation loss"))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for run in summary["runs"]:
        epochs = [h["epoch"] for h in run["history"]]
        for ax, (key, _) in zip(axes, panels):
            values = [h[key] for h in run["history"]]
            if any(v is not None for v in values):
                ax.plot(epochs, [float("nan") if v is None else v for v in values], marker="o",
                        label=run["name"])
    for ax, (_, title) in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{summary['model']}: same split and seed, one run per setting")
    fig.tight_layout()
    png = figure_png(fig, dpi=100)
    if path is not None:
        atomic_write_bytes(path, png)
    return png


def _fmt(value, digits=4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_compare_table(summary: dict) -> str:
    """Markdown table of the final metrics and wall time per setting."""
    lines = ["| setting | part | n | accuracy | macro-F1 | macro AUC | wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(f"| {r['name']} | {r['part']} | {r['n_samples']} | {_fmt(r['accuracy'])} | "
                     f"{_fmt(r['macro_f1'])} | {_fmt(r['macro_auc'])} | "
                     f"{_fmt(r['wall_seconds'], 1)} |")
    return "\n".join(lines)
