"""The full ``report.html`` of a run: one self-contained file, readable offline and without JS.

Every picture is embedded as a ``data:image/png;base64`` URI and the CSS is inline; the page
refers to no other file or URL.  Sections (stable ``id``s, in order): ``data``, ``checks``,
``preprocessing``, ``augmentation``, ``strategy``, ``curves``, ``metrics``, ``confusion``,
``plots``, ``gallery``, ``reproducibility``.  A section whose inputs are missing says so
instead of disappearing, so the ids are always present (the data doctor's findings are shown
when the run wrote ``doctor.json``).

Every string read from the run's files (class names, file names, messages) is HTML-escaped, and
every image file named in ``splits.json`` is opened only when it resolves (symbolic links
followed) to a path inside the data root: a crafted ``../`` or absolute name is skipped with a
warning.  Grad-CAM is computed for at most ``MAX_CAM_IMAGES`` images, so generation stays in
seconds on a CPU.

:func:`build_full_report` also accepts the output folder of ``vistrain cv``
(:mod:`vistrain.report.cv_report`) and of ``vistrain compare``
(:mod:`vistrain.report.compare_report`) and writes their ``report.html``.

Example:
    >>> from vistrain.report.html import build_full_report
    >>> build_full_report("runs/demo").name          # doctest: +SKIP
    'report.html'
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import tempfile
from pathlib import Path

import numpy as np

from vistrain.errors import RunDirError
from vistrain.report.compare_report import build_compare_report
from vistrain.report.cv_report import build_cv_report, cv_outputs_present
from vistrain.report.preprocess_preview import preview_preprocessing
from vistrain.transforms.presets import build_augmentation, describe

log = logging.getLogger("vistrain")

SECTIONS = ("data", "checks", "preprocessing", "augmentation", "strategy", "curves", "metrics",
            "confusion", "plots", "gallery", "reproducibility")
MAX_CAM_IMAGES = 12
EVAL_FIGURES = {"confusion": ("confusion_matrix_normalized", "confusion_matrix"),
                "roc": ("roc_curves",), "pr": ("pr_curves",), "reliability": ("reliability",)}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:0 auto;padding:0 16px 40px;color:#222;line-height:1.4}
h1{border-bottom:2px solid #446;padding-bottom:6px}h2{margin-top:36px;color:#335}
section{border-top:1px solid #ddd}table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th{background:#f3f4f8}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
.note{color:#666;font-style:italic}.warn{color:#a40;font-weight:bold}.ok{color:#270}
.fail{color:#b00;font-weight:bold}.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{width:250px;font-size:12px;border:1px solid #ddd;padding:4px;word-wrap:break-word}
nav a{margin-right:12px}
"""


# ---- small helpers ---------------------------------------------------------------------------
def esc(value) -> str:
    """HTML-escape anything (quotes included)."""
    return html.escape(str(value), quote=True)


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img_tag(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{int(width)}"' if width else ""
    return f'<img alt="{esc(alt)}"{w} src="{png_uri(data)}">'


def fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def array_png(arr: np.ndarray) -> bytes:
    from PIL import Image
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def chw_to_hwc(x) -> np.ndarray:
    a = np.asarray(x)
    a = np.transpose(a, (1, 2, 0))
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def _load(run_dir: Path, name: str, default=None):
    """The JSON file ``name`` of the run, or ``default`` when it is missing, unreadable or not of
    the default's type (a hand-edited file must not take the whole page down)."""
    p = run_dir / name
    try:
        value = json.loads(p.read_text()) if p.exists() else default
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("report: cannot read %s: %s", p, err)
        return default
    if default is not None and not isinstance(value, type(default)):
        log.warning("report: %s is not a JSON %s; ignored", p, type(default).__name__)
        return default
    return value


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else esc(v)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _figure(width: float, height: float):
    from vistrain.interpret._utils import new_figure
    return new_figure((width, height))


# ---- the run ---------------------------------------------------------------------------------
class _Run:
    """Everything the report reads from a run directory, loaded once."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.meta = _load(run_dir, "model.json", {})
        self.metrics = _load(run_dir, "metrics.json", {})
        self.preds = _load(run_dir, "predictions.json", {})
        self.splits = _load(run_dir, "splits.json", {})
        self.run = _load(run_dir, "run.json", {})
        self.history = _load(run_dir, "history.json", [])
        self.doctor = _load(run_dir, "doctor.json")
        self.checks = _load(run_dir, "checks.json")
        classes = self.meta.get("classes") or self.splits.get("classes") or []
        self.classes = [str(c) for c in classes] if isinstance(classes, list) else []
        self.config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
        self.part = "test" if "test" in self.preds else ("val" if "val" in self.preds else None)
        self.outside_root: list[str] = []   # file names of splits.json that were refused

    def data_root(self) -> Path | None:
        root = self.run.get("data_root")
        if not root:
            return None
        p = Path(root)
        return p if p.is_dir() else None

    def data_file(self, rel) -> Path | None:
        """The file ``rel`` (a name from splits.json, relative to the data root) if it resolves to
        a path inside the data root; None otherwise (``../`` escapes, absolute names, links out)."""
        root = self.data_root()
        if root is None or not isinstance(rel, str) or not rel:
            return None
        try:
            base = root.resolve()
            path = (base / rel).resolve()
        except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL byte
            path = None
        if path is None or not path.is_relative_to(base):
            if rel not in self.outside_root:
                self.outside_root.append(rel)
                log.warning("report: skipped %r from splits.json: it is outside the data root %s",
                            rel, root)
            return None
        return path

    def files_of(self, part: str) -> dict[int, str]:
        """Index id -> file (relative to the data root) for one part, from splits.json."""
        info = self.splits.get("parts", {}).get(part, {})
        return dict(zip(info.get("indices", []), info.get("files", [])))

    def config(self):
        if not self.config_text:
            return None
        try:
            from vistrain.config import TrainConfig
            return TrainConfig.load(self.dir / "config.yaml")
        except Exception as err:  # an old or hand-edited config must not break the report
            log.warning("report: cannot load config.yaml: %s", err)
            return None

    def preprocess(self):
        from vistrain.transforms.preprocess import Preprocess
        return Preprocess.from_dict(self.meta["preprocess"]) if "preprocess" in self.meta else None

    def sample_files(self, n: int, part: str = "train") -> list[Path]:
        """Up to ``n`` existing files, one per class in turn (class-balanced preview)."""
        root = self.data_root()
        if root is None:
            return []
        info = self.splits.get("parts", {}).get(part, {})
        by_class: dict[str, list[str]] = {}
        for f in info.get("files", []):
            if not isinstance(f, str):
                continue
            by_class.setdefault(Path(f).parts[0] if len(Path(f).parts) > 1 else "", []).append(f)
        out, i = [], 0
        while len(out) < n and any(i < len(v) for v in by_class.values()):
            for files in by_class.values():
                path = self.data_file(files[i]) if i < len(files) and len(out) < n else None
                if path is not None and path.is_file():
                    out.append(path)
            i += 1
        return out


# ---- sections --------------------------------------------------------------------------------
def section_data(run: _Run) -> str:
    parts = []
    counts = run.run.get("class_counts") or {}
    split_parts = run.splits.get("parts", {})
    if counts:
        names = list(counts)
        header = ["class", "images"] + [p for p in split_parts]
        rows = [[esc(c), esc(counts[c])] + [esc(split_parts[p].get("counts", {}).get(c, "-"))
                                            for p in split_parts] for c in names]
        rows.append(["<b>total</b>", f"<b>{esc(sum(counts.values()))}</b>"]
                    + [f"<b>{len(split_parts[p].get('indices', []))}</b>" for p in split_parts])
        parts.append(_table(header, rows))
        fig = _figure(max(4.0, 0.45 * len(names) + 2), 3.0)
        ax = fig.subplots()
        ax.bar(range(len(names)), [counts[c] for c in names], color="#4a6fa5")
        ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right", fontsize=8)
        ax.set_ylabel("images")
        ax.set_title("images per class")
        parts.append(img_tag(fig_png(fig), "images per class"))
        lo, hi = min(counts.values()), max(counts.values())
        if lo and hi / lo >= 3:
            parts.append(f'<p class="warn">class imbalance: largest/smallest class = {hi / lo:.1f}x</p>')
    else:
        parts.append(_note("no class counts recorded (run.json missing)"))
    parts.append(_image_sizes(run))
    skipped = run.run.get("skipped_files") or []
    parts.append(f"<h3>Skipped files ({len(skipped)})</h3>")
    if skipped:
        parts.append(_table(["file", "reason"], [[esc(s.get("file")), esc(s.get("reason"))]
                                                  for s in skipped[:200]]))
    if run.doctor is not None:  # written when the run's quick data checks ran (data.doctor)
        parts.append("<h3>Data doctor</h3>" + _doctor(run.doctor))
    if run.outside_root:
        parts.append(f'<p class="warn">{len(run.outside_root)} file name(s) in splits.json lie '
                     f"outside the data root and were not opened: "
                     f"{esc(', '.join(run.outside_root[:5]))}</p>")
    return "".join(parts)


def _image_sizes(run: _Run, limit: int = 400) -> str:
    from PIL import Image
    root = run.data_root()
    if root is None:
        return _note("image sizes: the data folder is not reachable from here")
    names = [f for p in run.splits.get("parts", {}).values() for f in p.get("files", [])][:limit]
    files = [f for f in map(run.data_file, names) if f is not None]
    sizes = []
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
        except Exception:  # unreadable files are listed as skipped already
            continue
    if not sizes:
        return _note("image sizes: no readable image found")
    w, h = np.array(sizes).T
    rows = [[name, str(int(a.min())), str(int(np.median(a))), str(int(a.max()))]
            for name, a in (("width", w), ("height", h))]
    return (f"<h3>Image sizes ({len(sizes)} of {len(files)} files read)</h3>"
            + _table(["", "min", "median", "max"], rows))


def _doctor(doc) -> str:
    """The findings of doctor.json: severity, code, message, fix and how many files."""
    findings = doc.get("findings") if isinstance(doc, dict) else doc
    if isinstance(findings, list) and all(isinstance(f, dict) for f in findings):
        if not findings:
            return '<p class="ok">no findings</p>'
        css = {"error": "fail", "warning": "warn"}
        rows = [[f'<span class="{css.get(f.get("severity"), "note")}">{esc(f.get("severity", ""))}</span>',
                 esc(f.get("code", "")), esc(_short(f.get("message", ""))), esc(_short(f.get("fix", ""))),
                 esc(len(f["paths"]) if isinstance(f.get("paths"), list) else "")]
                for f in findings[:200]]
        source = doc.get("source") if isinstance(doc, dict) else None
        return ((f"<p>{esc(source)}</p>" if source else "")
                + _table(["severity", "code", "finding", "fix", "files"], rows))
    return f"<pre>{esc(json.dumps(doc, indent=1)[:20000])}</pre>"


def _short(v, n: int = 300) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= n else s[:n] + "..."


def section_checks(run: _Run) -> str:
    if not run.checks:
        return _note("no pre-training checks were run (enable with --set train.checks=true or run "
                     "`vistrain check DATA`)")
    rows = []
    for c in run.checks:
        cls = {"PASS": "ok", "FAIL": "fail"}.get(c.get("status"), "note")
        rows.append([esc(c.get("name")), f'<span class="{cls}">{esc(c.get("status"))}</span>',
                     esc(c.get("message"))])
    out = _table(["check", "result", "details"], rows)
    if (run.dir / "lr_finder.png").exists():
        out += "<h3>Learning-rate range test</h3>" + img_tag((run.dir / "lr_finder.png").read_bytes(),
                                                              "learning-rate range test")
    return out


def section_preprocessing(run: _Run) -> str:
    pre = run.preprocess()
    if pre is None:
        return _note("no preprocessing record (model.json missing)")
    out = [f"<p>{esc(pre.describe())}</p>",
           _table(["setting", "value"], [[esc(k), esc(v)] for k, v in pre.to_dict().items()])]
    files = run.sample_files(6)
    if not files:
        return "".join(out) + _note("no preview: the data folder is not reachable from here")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(preview_preprocessing(files, pre, Path(tmp) / "preview.png"))
        out.append(img_tag(path.read_bytes(), "preprocessing preview"))
    return "".join(out)


def section_augmentation(run: _Run) -> str:
    cfg, pre = run.config(), run.preprocess()
    if cfg is None or pre is None:
        return _note("no augmentation preview: config.yaml or model.json missing")
    strategy = run.meta.get("strategy", {})
    import torch
    lines = describe(cfg.augment, pre.size)
    out = ["<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"]
    if strategy.get("strategy") == "feature-extraction" and "live" not in str(strategy.get("feature_cache", "")):
        out.append(_note("feature extraction on cached clean features: this augmentation was configured "
                         "but not applied during training"))
    files = run.sample_files(4)
    if not files:
        return "".join(out) + _note("no preview: the data folder is not reachable from here")
    augment, _mix = build_augmentation(cfg.augment, pre.size, max(len(run.classes), 2))
    x = torch.stack([pre.pixels(f) for f in files])
    reps = 5
    gen = torch.Generator().manual_seed(0)
    views = [x] + [augment(x.clone(), generator=gen) for _ in range(reps)]
    fig = _figure(1.8 * (reps + 1), 1.9 * len(files))
    axes = fig.subplots(len(files), reps + 1, squeeze=False)
    for j, v in enumerate(views):
        for i in range(len(files)):
            img = v[i]
            img = img.clamp(0, 255).to(torch.uint8) if img.is_floating_point() else img
            axes[i, j].imshow(chw_to_hwc(img.numpy()))
            axes[i, j].axis("off")
        axes[0, j].set_title("original" if j == 0 else f"sample {j}", fontsize=8)
    out.append(img_tag(fig_png(fig), "augmentation preview"))
    return "".join(out)


def section_strategy(run: _Run) -> str:
    rec = run.meta.get("strategy") or run.run.get("strategy")
    if not rec:
        return _note("no strategy record")
    out = [f"<p>model <b>{esc(run.meta.get('model_name', '?'))}</b>, strategy "
           f"<b>{esc(rec.get('strategy', '?'))}</b> (requested: {esc(rec.get('requested', '?'))})</p>"]
    reasoning = rec.get("reasoning")
    if reasoning:
        out.append("<h3>Advisor reasoning</h3>")
        if isinstance(reasoning, list):
            out.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasoning) + "</ul>")
        elif isinstance(reasoning, dict):
            out.append(_table(["", ""], [[esc(k), esc(_short(v))] for k, v in reasoning.items()]))
        else:
            out.append(f"<p>{esc(reasoning)}</p>")
    rest = {k: v for k, v in rec.items() if k not in ("strategy", "requested", "reasoning")}
    if rest:
        out.append(_table(["setting", "value"], [[esc(k), esc(_short(v))] for k, v in rest.items()]))
    return "".join(out)


def section_curves(run: _Run) -> str:
    out = []
    png = run.dir / "curves.png"
    if not png.exists() and run.history:
        from vistrain.evaluation.curves import plot_history
        plot_history(run.history, png)
    out.append(img_tag(png.read_bytes(), "training curves") if png.exists() else _note("no training history"))
    if run.history:
        from vistrain.evaluation.curves import overfitting_warning
        warning = overfitting_warning(run.history)
        if warning:
            out.append(f'<p class="warn">{esc(warning)}</p>')
        best = max(run.history, key=lambda h: h.get("val_accuracy") or -1)
        out.append(f"<p>{len(run.history)} epoch(s); best validation accuracy "
                   f"{_fmt(best.get('val_accuracy'))} at epoch {esc(best.get('epoch'))}</p>")
    return "".join(out)


def section_metrics(run: _Run) -> str:
    if not run.metrics:
        return _note("no metrics.json")
    out = []
    for part, m in run.metrics.items():
        ci = m.get("ci95") or {}

        def cell(v, key):
            c = ci.get(key) or {}
            return _fmt(v) + (f" <small>[{_fmt(c.get('low'))}, {_fmt(c.get('high'))}]</small>"
                              if c.get("low") is not None else "")
        rows = [["accuracy", cell(m.get("accuracy"), "accuracy")],
                ["balanced accuracy", cell(m.get("balanced_accuracy"), "balanced_accuracy")],
                ["macro F1", cell(m.get("macro", {}).get("f1"), "macro_f1")],
                ["macro AUC-ROC", cell(m.get("macro", {}).get("auc_roc"), "macro_auc_roc")],
                ["ECE", _fmt(m.get("ece"))]]
        rows += [[f"top-{esc(k)} accuracy", _fmt(v)] for k, v in (m.get("top_k_accuracy") or {}).items()
                 if k != "1"]
        out.append(f"<h3>{esc(part)} ({esc(m.get('n_samples'))} images)</h3>")
        out.append(_table(["metric", "value [95% CI]"], rows))
        pc = m.get("per_class") or []
        if pc:
            out.append(_table(["class", "support", "predicted", "precision", "recall", "F1", "AUC-ROC"],
                              [[esc(r["class"]), esc(r["support"]), esc(r["n_predicted"]),
                                _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["f1"]), _fmt(r["auc_roc"])]
                               for r in pc]))
    return "".join(out)


def _probs(run: _Run):
    p = run.preds.get(run.part) if run.part else None
    if not p:
        return None
    return (np.asarray(p["indices"], dtype=np.int64), np.asarray(p["labels"], dtype=np.int64),
            np.asarray(p["probs"], dtype=np.float64))


def _eval_figure(run: _Run, key: str, make) -> str:
    """An evaluation PNG of the run dir if present (root or figures/), else drawn now."""
    import tempfile
    for name in EVAL_FIGURES[key]:
        for folder in (run.dir, run.dir / "figures"):
            if (folder / f"{name}.png").exists():
                return img_tag((folder / f"{name}.png").read_bytes(), name)
    with tempfile.TemporaryDirectory() as tmp:
        path = make(Path(tmp) / f"{key}.png")
        return img_tag(Path(path).read_bytes(), key) if path else _note(f"no {key} plot: no predictions")


def section_confusion(run: _Run) -> str:
    m = run.metrics.get(run.part) if run.part else None
    if not m:
        return _note("no predictions to draw a confusion matrix from")
    from vistrain.evaluation.plots import plot_confusion_matrix
    return (f"<p>{esc(run.part)} part, rows = true class, columns = predicted class</p>"
            + _eval_figure(run, "confusion", lambda p: plot_confusion_matrix(
                m["confusion_matrix"], m["class_names"], p)))


def section_plots(run: _Run) -> str:
    got = _probs(run)
    m = run.metrics.get(run.part) if run.part else None
    if got is None or not m:
        return _note("no predictions.json: no ROC / PR / reliability plots")
    from vistrain.evaluation.plots import plot_pr_curves, plot_reliability, plot_roc_curves
    _, y, p = got
    return "".join([
        "<h3>ROC curves (one vs rest)</h3>", _eval_figure(run, "roc", lambda q: plot_roc_curves(y, p, run.classes, q)),
        "<h3>Precision-recall curves</h3>", _eval_figure(run, "pr", lambda q: plot_pr_curves(y, p, run.classes, q)),
        "<h3>Reliability (calibration)</h3>",
        _eval_figure(run, "reliability", lambda q: plot_reliability(m["reliability"], q))])


def gallery_items(run: _Run, n_losses: int = 8, n_pairs: int = 2, per_pair: int = 2) -> dict:
    """Top losses and most-confused pairs of the evaluated part, as dicts with the image file.

    ``predictions.json`` stores, per part, ``indices`` (ids into the scanned image index) aligned
    with ``labels`` and ``probs``; ``splits.json`` maps the same ids to file names.
    """
    got = _probs(run)
    if got is None:
        return {"losses": [], "pairs": []}
    ids, y, p = got
    files = run.files_of(run.part)
    loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))
    pred = p.argmax(1)

    def item(j):
        rel = files.get(int(ids[j]))
        return {"id": int(ids[j]), "file": rel, "path": run.data_file(rel),
                "true": int(y[j]), "pred": int(pred[j]), "p_true": float(p[j, y[j]]),
                "p_pred": float(p[j, pred[j]]), "loss": float(loss[j])}
    losses = [item(j) for j in np.argsort(-loss, kind="stable")[:n_losses]]
    k = p.shape[1]
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    np.fill_diagonal(cm, 0)
    pairs = []
    for flat in np.argsort(-cm, axis=None, kind="stable")[:n_pairs]:
        a, b = divmod(int(flat), k)
        if cm[a, b] == 0:
            break
        members = np.flatnonzero((y == a) & (pred == b))
        members = members[np.argsort(-p[members, b], kind="stable")][:per_pair]
        pairs.append({"true": a, "pred": b, "count": int(cm[a, b]), "items": [item(j) for j in members]})
    return {"losses": losses, "pairs": pairs}


def section_gallery(run: _Run, max_cam: int = MAX_CAM_IMAGES) -> str:
    g = gallery_items(run)
    if not g["losses"]:
        return _note("no predictions.json: no gallery")
    cams = _CamMaker(run, max_cam)
    name = lambda i: run.classes[i] if i < len(run.classes) else str(i)  # noqa: E731

    def card(it):
        pic = cams.render(it)
        return (f'<div class="card">{pic}<br><b>{esc(it["file"] or it["id"])}</b><br>'
                f"true: {esc(name(it['true']))} (p={it['p_true']:.3f})<br>"
                f"predicted: {esc(name(it['pred']))} (p={it['p_pred']:.3f})<br>loss {it['loss']:.3f}</div>")
    out = [f"<p>{esc(run.part)} part. Each card: the model input and its Grad-CAM heat map for the "
           f"predicted class (at most {max_cam} maps are computed).</p>", "<h3>Top losses</h3>",
           '<div class="grid">' + "".join(card(it) for it in g["losses"]) + "</div>",
           "<h3>Most-confused pairs</h3>"]
    if not g["pairs"]:
        out.append(_note("no misclassification"))
    for pair in g["pairs"]:
        out.append(f"<h4>true {esc(name(pair['true']))} &rarr; predicted {esc(name(pair['pred']))}: "
                   f"{pair['count']} image(s)</h4>")
        out.append('<div class="grid">' + "".join(card(it) for it in pair["items"]) + "</div>")
    if cams.error:
        out.append(_note(f"Grad-CAM unavailable: {cams.error}"))
    return "".join(out)


class _CamMaker:
    """Loads the model lazily and renders image + Grad-CAM overlay for up to ``limit`` images."""

    def __init__(self, run: _Run, limit: int):
        self.run, self.limit, self.done = run, limit, {}
        self.model = self.pre = None
        self.error = None

    def _ensure(self) -> bool:
        if self.model is None and self.error is None:
            try:
                from vistrain.artifact import load_model
                from vistrain.transforms.preprocess import Preprocess
                self.model, meta = load_model(self.run.dir)
                self.pre = Preprocess.from_dict(meta["preprocess"])
            except Exception as err:  # the report must still be written
                self.error = str(err)
        return self.model is not None

    def render(self, it) -> str:
        if it["id"] in self.done:
            return self.done[it["id"]]
        path = it["path"]
        if path is None or not Path(path).is_file():
            return _note("image file not reachable")
        if len(self.done) >= self.limit or not self._ensure():
            pix = chw_to_hwc(self._pixels(path))
            return img_tag(array_png(pix), str(it["file"]), width=240)
        from vistrain.interpret.cam import compute_cam, overlay
        x = self._pixels(path)
        import torch
        cam, _ = compute_cam(self.model, self.pre.normalize(torch.from_numpy(x)[None]),
                             target_class=it["pred"])
        img = chw_to_hwc(x)
        both = np.concatenate([img, overlay(img, cam[0].numpy())], axis=1)
        tag = img_tag(array_png(both), f"{it['file']} and Grad-CAM", width=240)
        self.done[it["id"]] = tag
        return tag

    def _pixels(self, path) -> np.ndarray:
        if self.pre is None:
            from vistrain.transforms.preprocess import Preprocess
            self.pre = self.run.preprocess() or Preprocess()
        return self.pre.pixels(path).numpy()


def section_reproducibility(run: _Run) -> str:
    r = run.run
    rows = [["seed", esc(r.get("seed"))], ["split seed", esc(r.get("split_seed"))],
            ["split", esc(run.splits.get("source", "-"))], ["data root", esc(r.get("data_root"))],
            ["images", esc(r.get("n_images"))], ["wall time (s)", esc(r.get("wall_seconds"))]]
    for part, info in run.splits.get("parts", {}).items():
        ids = info.get("indices", [])
        rows.append([f"{esc(part)} indices", f"{len(ids)} ids" + (f", first {esc(ids[:5])}" if ids else "")])
    versions = r.get("versions") or run.meta.get("versions") or {}
    out = [_table(["", ""], rows), "<h3>Versions</h3>",
           _table(["package", "version"], [[esc(k), esc(v)] for k, v in versions.items()]),
           "<h3>config.yaml</h3>", f"<pre>{esc(run.config_text) or 'missing'}</pre>"]
    return "".join(out)


TITLES = {"data": "Data", "checks": "Pre-training checks", "preprocessing": "Preprocessing",
          "augmentation": "Augmentation", "strategy": "Strategy", "curves": "Training curves",
          "metrics": "Metrics", "confusion": "Confusion matrix", "plots": "ROC, PR and calibration",
          "gallery": "Top losses and confusions (Grad-CAM)", "reproducibility": "Reproducibility"}
BUILDERS = {"data": section_data, "checks": section_checks, "preprocessing": section_preprocessing,
            "augmentation": section_augmentation, "strategy": section_strategy, "curves": section_curves,
            "metrics": section_metrics, "confusion": section_confusion, "plots": section_plots,
            "gallery": section_gallery, "reproducibility": section_reproducibility}


def render_report(run_dir: str | Path) -> str:
    """The report page as a string (see module docstring)."""
    run = _Run(Path(run_dir))
    body = []
    for sid in SECTIONS:
        try:
            content = BUILDERS[sid](run)
        except Exception as err:  # one broken section must not lose the whole report
            log.warning("report: section %s failed: %s", sid, err)
            content = f'<p class="fail">this section could not be built: {esc(type(err).__name__)}: {esc(err)}</p>'
        body.append(f'<section id="{sid}"><h2>{esc(TITLES[sid])}</h2>{content}</section>')
    test = run.metrics.get(run.part, {}) if run.part else {}
    summary = (f"<p>{len(run.classes)} classes: {esc(', '.join(run.classes))}. "
               + (f"Held-out {esc(run.part)} accuracy <b>{_fmt(test.get('accuracy'))}</b> "
                  f"on {esc(test.get('n_samples'))} images.</p>" if test else "</p>"))
    nav = "<nav>" + "".join(f'<a href="#{s}">{esc(TITLES[s])}</a>' for s in SECTIONS) + "</nav>"
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>vistrain report: {esc(run.meta.get('model_name', run.dir.name))}</title>"
            f"<style>{CSS}</style></head><body>"
            f"<h1>vistrain report: {esc(run.meta.get('model_name', '?'))} on {esc(run.run.get('data_root', '?'))}</h1>"
            + summary + nav + "\n".join(body) + "</body></html>")


def output_kind(out_dir: Path) -> str | None:
    """``"compare"``, ``"cv"`` or ``"train"``: which command wrote ``out_dir`` (None: none)."""
    if (out_dir / "compare.json").is_file():
        return "compare"
    if cv_outputs_present(out_dir):
        return "cv"
    if any((out_dir / n).exists() for n in ("model.json", "metrics.json", "run.json")):
        return "train"
    return None


def build_full_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and return its path; ``run_dir`` is the
    output folder of ``vistrain train``, ``vistrain cv`` or ``vistrain compare``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found; give the --out folder of `vistrain "
                          "train`, `vistrain cv` or `vistrain compare`")
    kind = output_kind(run_dir)
    if kind == "compare":
        return build_compare_report(run_dir)
    if kind == "cv":
        return build_cv_report(run_dir)
    if kind is None:
        raise RunDirError(f"{run_dir}: no model.json, metrics.json, run.json, cv_metrics.json or "
                          "compare.json; not a vistrain run directory (train one with `vistrain "
                          "train DATA --out DIR`)")
    out = run_dir / "report.html"
    out.write_text(render_report(run_dir), encoding="utf-8")
    return out
