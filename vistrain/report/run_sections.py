"""The sections of a training run's report that describe its data, setup and training.

Each ``*_blocks`` function takes the :class:`~vistrain.rundir.RunFolder` and returns the blocks
of one section (:mod:`vistrain.report.page`); a section whose inputs are missing says so in a
note.  Image files named in ``splits.json`` are opened only through
:meth:`RunFolder.data_file`, which refuses names outside the data root.

Example:
    >>> from vistrain.rundir import ModelMeta, RunFolder
    >>> blocks = strategy_blocks(RunFolder.read("runs/demo"))      # doctest: +SKIP
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.errors import VistrainError
from vistrain.evaluation.curves import overfitting_warning, plot_history
from vistrain.evaluation.png import array_png, new_figure
from vistrain.report.page import (Bullets, Cell, Heading, Preformatted, Table, Text, figure_picture,
                                  file_picture, fmt, note, picture)
from vistrain.report.preprocess_preview import preview_preprocessing
from vistrain.rundir import ModelMeta, RunFolder
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.presets import build_augmentation, describe

SEVERITY_CSS = {"error": "fail", "warning": "warn"}
NO_DATA = "no preview: the data folder is not reachable from here"
PREVIEW_IMAGES = 4  # sample images in the preprocessing preview
PREVIEW_DPI = 72    # the page shows figures at its width: more dots only cost drawing time


def sample_files(folder: RunFolder, n: int, part: str = "train") -> list[Path]:
    """Up to ``n`` existing image files of ``part``, one class after the other (a balanced preview).

    The class of a file is its first folder in ``splits.json``; only names inside the data root
    are returned.
    """
    info = folder.splits.parts.get(part)
    if folder.data_root is None or info is None:
        return []
    by_class: dict[str, list[str]] = {}
    for f in info.files:
        if isinstance(f, str):
            by_class.setdefault(Path(f).parts[0] if len(Path(f).parts) > 1 else "", []).append(f)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_class.values()):
        for files in by_class.values():
            path = folder.data_file(files[i]) if i < len(files) and len(out) < n else None
            if path is not None and path.is_file():
                out.append(path)
        i += 1
    return out


def data_blocks(folder: RunFolder) -> list:
    """Class counts per part (table and bar chart), image sizes, skipped files, data doctor."""
    counts, parts = folder.run.class_counts, folder.splits.parts
    out: list = []
    if counts:
        rows = [[c, n] + [p.counts.get(c, "-") for p in parts.values()] for c, n in counts.items()]
        rows.append([Cell("total", bold=True), Cell(str(sum(counts.values())), bold=True)]
                    + [Cell(str(len(p.indices)), bold=True) for p in parts.values()])
        out += [Table(["class", "images", *parts], rows), figure_picture(class_bar_figure(counts),
                                                                         "images per class")]
        out += [Text(line, "warn") for line in folder.splits.warnings]
        lo, hi = min(counts.values()), max(counts.values())
        if lo and hi / lo >= 3:
            out.append(Text(f"class imbalance: largest/smallest class = {hi / lo:.1f}x", "warn"))
    else:
        out.append(note("no class counts recorded (run.json missing)"))
    out += image_size_blocks(folder)
    skipped = folder.run.skipped_files
    out += [Heading(f"Skipped files ({len(skipped)})")]
    if skipped:
        out.append(Table(["file", "reason"], [[s.file, s.reason] for s in skipped[:200]]))
    if folder.doctor is not None:  # written when the run's quick data checks ran (data.doctor)
        out += [Heading("Data doctor"), *doctor_blocks(folder)]
    return out


def refused_file_blocks(folder: RunFolder) -> list:
    """A warning naming the files of splits.json that lie outside the data root (if any)."""
    bad = folder.refused_files
    return [Text(f"{len(bad)} file name(s) in splits.json lie outside the data root and were not "
                 f"opened: {', '.join(bad[:5])}", "warn")] if bad else []


def class_bar_figure(counts: dict[str, int]):
    """A bar chart of images per class (a matplotlib Figure)."""
    names = list(counts)
    fig = new_figure((max(4.0, 0.45 * len(names) + 2), 3.0))
    ax = fig.subplots()
    ax.bar(range(len(names)), [counts[c] for c in names], color="#4a6fa5")
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right", fontsize=8)
    ax.set(ylabel="images", title="images per class")
    return fig


def image_size_blocks(folder: RunFolder, limit: int = 400) -> list:
    """Min / median / max width and height of up to ``limit`` images of the split."""
    if folder.data_root is None:
        return [note("image sizes: the data folder is not reachable from here")]
    names = [f for p in folder.splits.parts.values() for f in p.files][:limit]
    files = [f for f in map(folder.data_file, names) if f is not None]
    sizes = []
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
        except Exception:  # unreadable files are listed as skipped already
            continue
    if not sizes:
        return [note("image sizes: no readable image found")]
    w, h = np.array(sizes).T
    rows = [[name, int(a.min()), int(np.median(a)), int(a.max())] for name, a in (("width", w), ("height", h))]
    return [Heading(f"Image sizes ({len(sizes)} of {len(files)} files read)"),
            Table(["", "min", "median", "max"], rows)]


def doctor_blocks(folder: RunFolder) -> list:
    """The findings of doctor.json: severity, code, message, fix and how many files."""
    doc = folder.doctor
    if not doc.findings:
        return [Text("no findings", "ok")]
    rows = [[Cell(f.severity, SEVERITY_CSS.get(f.severity, "note")), f.code, _short(f.message), _short(f.fix),
             "" if f.n_files is None else f.n_files] for f in doc.findings[:200]]
    return ([Text(doc.source)] if doc.source else []) + [
        Table(["severity", "code", "finding", "fix", "files"], rows)]


def checks_blocks(folder: RunFolder) -> list:
    if not folder.checks:
        return [note("no pre-training checks were run (enable with --set train.checks=true or run "
                     "`vistrain check DATA`)")]
    rows = [[c.name, Cell(str(c.status), {"PASS": "ok", "FAIL": "fail"}.get(c.status, "note")), c.message]
            for c in folder.checks]
    out = [Table(["check", "result", "details"], rows)]
    if (folder.path / "lr_finder.png").is_file():
        out += [Heading("Learning-rate range test"),
                file_picture(folder.path / "lr_finder.png", "learning-rate range test")]
    return out


def preprocessing_blocks(folder: RunFolder) -> list:
    if folder.meta is None:
        return [note("no preprocessing record (model.json missing)")]
    pre = Preprocess.from_dict(folder.meta.preprocess)
    out = [Text(pre.describe()), Table(["setting", "value"], [[k, v] for k, v in pre.to_dict().items()])]
    files = sample_files(folder, PREVIEW_IMAGES)
    if not files:
        return out + [note(NO_DATA)]
    with tempfile.TemporaryDirectory() as tmp:
        out.append(file_picture(preview_preprocessing(files, pre, Path(tmp) / "preview.png", dpi=PREVIEW_DPI),
                                "preprocessing preview"))
    return out


def augmentation_blocks(folder: RunFolder) -> list:
    cfg, meta = folder.config(), folder.meta
    if cfg is None or meta is None:
        return [note("no augmentation preview: config.yaml or model.json missing")]
    pre, strategy = Preprocess.from_dict(meta.preprocess), meta.strategy
    out: list = [Bullets(describe(cfg.augment, pre.size))]
    if strategy.strategy == "feature-extraction" and "live" not in str(strategy.feature_cache or ""):
        out.append(note("feature extraction on cached clean features: this augmentation was configured "
                        "but not applied during training"))
    files = sample_files(folder, 4)
    if not files:
        return out + [note(NO_DATA)]
    augment, _mix = build_augmentation(cfg.augment, pre.size, max(len(folder.classes), 2))
    x = torch.stack([pre.pixels(f) for f in files])
    gen = torch.Generator().manual_seed(0)
    views = [x] + [augment(x.clone(), generator=gen) for _ in range(5)]
    return out + [Text("Rows: sample images; columns: the model input, then 5 random augmented views."),
                  picture(array_png(views_mosaic(views)), "augmentation preview")]


def views_mosaic(views: list[torch.Tensor], tile: int = 112, gap: int = 4) -> np.ndarray:
    """``(H, W, 3)`` uint8 grid of ``views`` (each ``(N, C, S, S)``): rows = images, columns =
    views, each tile downscaled to at most ``tile`` px.  Drawn with numpy, not matplotlib: the
    24-axes figure took seconds to lay out and save for a picture shown 600 px wide."""
    n, cols = len(views[0]), len(views)
    size = views[0].shape[-1]
    step = max(1, -(-size // tile))  # integer stride: a nearest-neighbour thumbnail
    side = len(range(0, size, step))
    grid = np.full((n * (side + gap) - gap, cols * (side + gap) - gap, 3), 255, np.uint8)
    for j, v in enumerate(views):
        v = v.clamp(0, 255).to(torch.uint8) if v.is_floating_point() else v
        for i in range(n):
            img = v[i, :, ::step, ::step].permute(1, 2, 0).numpy()
            img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
            grid[i * (side + gap):i * (side + gap) + side, j * (side + gap):j * (side + gap) + side] = img
    return grid


def readable_meta(folder: RunFolder) -> ModelMeta | None:
    """model.json when it can be used, else None (for sections that do without it; the sections
    that need it show why it cannot be read)."""
    try:
        return folder.meta
    except VistrainError:
        return None


def race_blocks(race: dict) -> list:
    """The recipe race of strategy auto: a table of the entrants and validation accuracy
    against seconds for each."""
    rows = [[e.get("name"), fmt(e.get("lr"), 3), e.get("lr_source") or "-",
             f"{e.get('trained')}/{e.get('epochs')}", fmt(e.get("seconds"), 1), fmt(e.get("score"), 3),
             e.get("result")] for e in race["entrants"]]
    kept = ([Text(f"Not raced again: this run took the outcome of an earlier race of the same command on "
                  f"the same data and machine, kept in the cache ({race['reused']}); the table is that "
                  f"race's. `--set data.cache=off` races anew.")] if race.get("reused") else [])
    blocks = [Heading("The recipe race"), *kept, Text(str(race.get("plain", ""))),
              Table(["candidate", "learning rate", "from", "epochs (trained/planned)", "seconds",
                     "best val accuracy", "result"], rows)]
    curves = [e for e in race["entrants"] if e.get("curve")]
    if curves:
        blocks.append(figure_picture(race_figure(curves), "validation accuracy against seconds per candidate"))
    return blocks


def race_figure(entrants: list[dict]):
    """Validation accuracy against the race's seconds spent on each entrant (a matplotlib Figure)."""
    fig = new_figure((7.5, 3.4))
    ax = fig.subplots()
    for e in entrants:
        pts = np.asarray(e["curve"], dtype=float).reshape(-1, 2)
        ax.plot(pts[:, 0], pts[:, 1], marker="o", markersize=3,
                label=f"{e.get('name')} ({e.get('result')})")
    ax.set_xlabel("seconds spent on the candidate")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def strategy_blocks(folder: RunFolder) -> list:
    meta = readable_meta(folder)
    rec = (meta.strategy if meta else None) or folder.run.strategy
    if not rec:
        return [note("no strategy record")]
    out: list = [Text(f"model {meta.model_name if meta else '?'}, strategy {rec.strategy or '?'} "
                      f"(requested: {rec.requested or '?'})")]
    reasoning = rec.reasoning
    if isinstance(reasoning, dict) and reasoning.get("plain"):  # strategy auto: what it measured, why
        out.append(Heading("Why this recipe (strategy auto)"))
        out.append(Bullets([str(r) for r in reasoning["plain"]]))
        cands = reasoning.get("candidates") or []
        if cands:
            out.append(Table(["candidate", "model", "input px", "images/s", "epochs", "est. seconds", "fits budget"],
                             [[c.get("recipe"), c.get("model"), c.get("size"), c.get("images_per_second"),
                               c.get("epochs") if c.get("recipe") != "feature-extraction" else "-",
                               c.get("seconds"), "yes" if c.get("fits") else "no"] for c in cands]))
        race = reasoning.get("race") or {}
        if race.get("entrants"):
            out += race_blocks(race)
    elif reasoning:
        out.append(Heading("Strategy reasoning"))
        if isinstance(reasoning, list):
            out.append(Bullets([str(r) for r in reasoning]))
        elif isinstance(reasoning, dict):
            out.append(Table(["", ""], [[k, _short(v)] for k, v in reasoning.items()]))
        else:
            out.append(Text(str(reasoning)))
    budget = rec.settings.get("budget")
    if isinstance(budget, dict) and budget.get("decision"):  # a named recipe's estimate (--budget)
        out.append(Heading("Time budget"))
        out.append(Text(f"--budget {budget.get('budget_minutes')} min: {budget['decision']}",
                        "warn" if str(budget["decision"]).startswith("over") else None))
    settings = {k: v for k, v in rec.settings.items() if k != "budget" or not isinstance(v, dict)}
    if settings:
        out.append(Table(["setting", "value"], [[k, _short(v)] for k, v in settings.items()]))
    return out


def _short(v, n: int = 300) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= n else s[:n] + "..."


def curves_blocks(folder: RunFolder) -> list:
    history = [h.as_dict() for h in folder.history]
    png = folder.path / "curves.png"
    if png.is_file():
        out: list = [file_picture(png, "training curves")]
    elif history:
        with tempfile.TemporaryDirectory() as tmp:
            out = [file_picture(plot_history(history, Path(tmp) / "curves.png"), "training curves")]
    else:
        return [note("no training history")]
    if history:
        warning = overfitting_warning(history)
        if warning:
            out.append(Text(warning, "warn"))
        best = max(folder.history, key=lambda h: -1 if h.val_accuracy is None else h.val_accuracy)
        out.append(Text(f"{len(history)} epoch(s); best validation accuracy {fmt(best.val_accuracy)} "
                        f"at epoch {best.epoch}"))
    return out


def reproducibility_blocks(folder: RunFolder) -> list:
    r, splits = folder.run, folder.splits
    rows = [["seed", r.seed], ["split seed", r.split_seed], ["split", splits.method or "-"],
            ["data root", r.data_root], ["images", r.n_images], ["wall time (s)", r.wall_seconds]]
    for part, info in splits.parts.items():
        ids = info.indices
        rows.append([f"{part} indices", f"{len(ids)} ids" + (f", first {ids[:5]}" if ids else "")])
    meta = readable_meta(folder)
    versions = r.versions or (meta.versions if meta else {})
    return [Table(["", ""], rows), Heading("Versions"), Table(["package", "version"], list(versions.items())),
            Heading("config.yaml"), Preformatted(folder.config_text or "missing")]
