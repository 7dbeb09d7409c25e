"""The main job: a data folder in, a self-describing run directory out.

``run_training(cfg, out_dir)`` scans the folder, decodes every image once into a pixel cache
(skipping or failing on unreadable files, as configured), makes and saves a stratified split,
resolves preprocessing from the model's pretrained config, trains with the chosen strategy,
evaluates on the held-out test part and writes the artifact, metrics, curves and report.

Example:
    >>> import vistrain
    >>> result = vistrain.train("examples/fashion-mnist-small", out="runs/demo")  # doctest: +SKIP
    >>> round(result.metrics["test"]["accuracy"], 2)                            # doctest: +SKIP
    0.86
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vistrain.config import TrainConfig
from vistrain.data.cache import (EvalAndTrainPixels, build_pixel_caches, cache_key,
                                 default_cache_dir)
from vistrain.data.loader import ArrayBatches
from vistrain.data.scan import ImageIndex, scan_folder
from vistrain.data.splits import save_splits, split_from_given, stratified_holdout
from vistrain.device import Runtime, unwrap
from vistrain.errors import DataError, VistrainError
from vistrain.transforms.normalize import resolve_normalization
from vistrain.transforms.preprocess import Preprocess
from vistrain.training.loop import BatchPipeline, predict

log = logging.getLogger("vistrain")


@dataclass
class RunResult:
    run_dir: Path
    classes: list[str]
    metrics: dict          # {"test": {...}, "val": {...}}
    history: list[dict]


@dataclass
class PreparedData:
    """Decoded pixels of the usable images and the split, as rows of ``pixels``."""
    index: ImageIndex
    pixels: np.ndarray          # (N_all, C, S, S) uint8, rows of unusable files are zero
    rows: np.ndarray            # row in ``pixels`` of each image of ``index``
    parts: dict[str, list[int]]  # indices into ``index``
    pixel_key: str
    # (N_all, C, T, T) larger train-time pixels (T = floor(size / crop_pct)) for random-resized
    # crop to see beyond the eval centre crop; None: train on ``pixels`` (see data/cache.py)
    train_pixels: np.ndarray | None = None

    def labels(self) -> np.ndarray:
        return np.asarray(self.index.labels, dtype=np.int64)

    def part_rows(self, name: str) -> np.ndarray:
        return self.rows[np.asarray(self.parts[name], dtype=np.int64)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def spatial_preprocess(cfg: TrainConfig, pcfg) -> Preprocess:
    """Resize/crop settings from the config, defaulting to the model's pretrained config."""
    p = cfg.preprocess
    return Preprocess(size=p.size or pcfg.input_size[-1], resize_mode=p.resize_mode,
                      interpolation=p.interpolation or pcfg.interpolation,
                      crop_pct=p.crop_pct or pcfg.crop_pct, fill=p.fill,
                      background=tuple(p.background), channels=1 if p.grayscale else 3)


def prepare_data(cfg: TrainConfig, spatial: Preprocess, rt: Runtime, progress: bool = True,
                 index: ImageIndex | None = None, parts: dict | None = None) -> PreparedData:
    """``parts`` (indices into ``index``, or a function of the index left after skipping
    unreadable files that returns them) replaces :func:`make_parts`, e.g. one CV fold."""
    index = index or scan_folder(cfg.data.root)
    spec = {k: v for k, v in spatial.to_dict().items()
            if k in ("size", "resize_mode", "interpolation", "crop_pct", "fill", "background", "channels")}
    cache_dir = None if cfg.data.cache == "off" else default_cache_dir() / "pixels"
    shape = (spatial.channels, spatial.size, spatial.size)
    fn, shapes, specs = spatial.pixels, [shape], [spec]
    if wants_train_pixels(cfg, spatial):
        fn = EvalAndTrainPixels.for_paths(spatial, index.paths, cache_dir)
        t = fn.train_size
        shapes.append((spatial.channels, t, t))
        specs.append(dict(spec, train_square=t))
    arrays, bad = build_pixel_caches(index.paths, fn, shapes, specs=specs, cache_dir=cache_dir,
                                     workers=cfg.data.num_workers, progress=progress and rt.is_main)
    pixels, train_pixels = arrays[0], (arrays[1] if len(arrays) > 1 else None)
    rows = np.arange(len(index))
    if bad:
        if cfg.data.on_bad_image == "fail":
            first = next(iter(bad.items()))
            raise DataError(f"{len(bad)} unreadable image(s), e.g. {first[0]}: {first[1]}; "
                            "fix or remove them, or use --on-bad-image skip")
        keep = np.array([i for i, p in enumerate(index.paths) if str(p) not in bad], dtype=np.int64)
        if isinstance(parts, dict):
            raise DataError(f"{len(bad)} image(s) became unreadable since the parts were made, e.g. "
                            f"{next(iter(bad))}; fix or remove them and start again")
        index, rows = index.drop(set(bad), bad), keep
        for path, reason in index.skipped:
            log.warning("skipped %s: %s", path, reason)
        _check_after_skip(index)
    parts = parts(index) if callable(parts) else parts if parts is not None else make_parts(index, cfg)
    return PreparedData(index, pixels, rows, parts, cache_key(index.paths, spec),
                        train_pixels)


def wants_train_pixels(cfg: TrainConfig, spatial: Preprocess) -> bool:
    """A larger train-time cache only helps a random resized crop that trains end to end, and
    only the ``crop`` resize mode (with crop_pct < 1) discards a border to recover."""
    end_to_end = cfg.strategy.name != "feature-extraction" or cfg.strategy.feature_cache == "live"
    return (end_to_end and cfg.augment.preset != "none" and spatial.resize_mode == "crop"
            and spatial.crop_pct < 1)


def _check_after_skip(index: ImageIndex) -> None:
    empty = [c for c, n in index.counts().items() if n == 0]
    if empty:
        raise DataError(f"{index.root}: every image of class(es) {', '.join(empty)} is unreadable")


def make_parts(index: ImageIndex, cfg: TrainConfig) -> dict[str, list[int]]:
    d = cfg.data
    if index.given_split:
        return split_from_given(index.given_split, index.labels, val_fraction=d.val_fraction,
                                seed=d.split_seed, classes=index.classes)
    return stratified_holdout(index.labels, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                              seed=d.split_seed, classes=index.classes)


def dataset_stats(pixels: np.ndarray, rows: np.ndarray, chunk: int = 256):
    """Exact per-channel mean/std (in [0,1] units) over all pixels of ``rows``; float64 sums."""
    c = pixels.shape[1]
    s, ss, n = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(rows), chunk):
        x = pixels[np.sort(rows[start:start + chunk])].astype(np.float64) / 255.0
        s += x.sum(axis=(0, 2, 3))
        ss += (x * x).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    return mean.tolist(), np.sqrt(np.maximum(ss / n - mean ** 2, 0)).tolist()


def finalize_preprocess(cfg: TrainConfig, spatial: Preprocess, pcfg, data: PreparedData) -> Preprocess:
    p = cfg.preprocess
    stats = None
    needs_stats = p.normalize == "dataset" or (p.normalize == "auto" and not pcfg.pretrained)
    if needs_stats:
        stats = dataset_stats(data.pixels, data.part_rows("train"))
    norm = resolve_normalization(p.normalize, model_mean=pcfg.mean, model_std=pcfg.std,
                                 dataset_stats=stats, mean=p.mean, std=p.std,
                                 pretrained=pcfg.pretrained, channels=spatial.channels)
    extra = {"dataset_stats_from": "train split only"} if norm.mode == "dataset" else {}
    return replace(spatial, normalize_mode=norm.mode, scale=norm.scale, mean=norm.mean,
                   std=norm.std, extra=extra)


def prepare_run_dir(out: Path, *, overwrite: bool, resume: bool) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise VistrainError(f"{out}: run directory exists and is not empty; use --overwrite "
                                "to replace it, --resume to continue it, or another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare_model_and_data(cfg: TrainConfig, rt: Runtime, *, progress: bool = True,
                           index: ImageIndex | None = None, parts=None, quick_checks: bool = False):
    """Seed, scan, build the model, decode the pixels, split and resolve the preprocessing, exactly
    as training does; ``vistrain check`` and ``lr-find`` start from the same state.

    Returns ``(model, pretrained_cfg, preprocess, prepared_data)``.
    """
    from vistrain.models import create
    seed_everything(cfg.train.seed)
    index = index or scan_folder(cfg.data.root)
    log.info("data: %d images, %d classes in %s", len(index), len(index.classes), index.root)
    if quick_checks and rt.is_main:  # fast data checks (issue 3), logged as warnings
        from vistrain.data.doctor import log_quick_checks
        log_quick_checks(index, cfg)
    m = cfg.model
    model, pcfg = create(m.name, len(index.classes), pretrained=m.pretrained and not m.name.startswith("vistrain/"),
                         weights=m.weights, drop_rate=m.drop_rate, **scratch_kwargs(cfg))
    log.info("model: %s, weights: %s", m.name, pcfg.weights_source)
    spatial = spatial_preprocess(cfg, pcfg)
    data = prepare_data(cfg, spatial, rt, progress, index=index, parts=parts)
    pre = finalize_preprocess(cfg, spatial, pcfg, data)
    log.info("preprocessing: %s", pre.describe())
    return model, pcfg, pre, data


def run_training(cfg: TrainConfig, out_dir: str | Path, *, overwrite: bool = False,
                 resume: bool = False, progress: bool = True, index: ImageIndex | None = None,
                 parts: dict[str, list[int]] | None = None) -> RunResult:
    """Train per ``cfg`` into ``out_dir`` (see module docstring); returns the test metrics.

    ``index`` and ``parts`` (``{"train", "val", "test", ...}`` indices into ``index``) bypass the
    scan and :func:`make_parts`: ``vistrain cv`` trains each fold this way.  Parts other than
    train/val/test are evaluated too (e.g. the user's test folder next to a fold's test part).
    """
    from vistrain.training.strategy import train_model
    t0 = time.perf_counter()
    rt = Runtime.create(cfg.train.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        cpu_amp=cfg.train.cpu_amp)
    log.info("runtime: %s", rt.describe())
    out = prepare_run_dir(Path(out_dir), overwrite=overwrite, resume=resume) if rt.is_main else Path(out_dir)
    rt.barrier()
    model, pcfg, pre, data = prepare_model_and_data(cfg, rt, progress=progress, index=index,
                                                    parts=parts, quick_checks=cfg.data.doctor)
    m = cfg.model
    if rt.is_main:
        cfg.save(out / "config.yaml")
        save_splits(out / "splits.json", data.index, data.parts, seed=cfg.data.split_seed,
                    source="given parts (cross-validation fold)" if parts is not None else
                    "given folders" if data.index.given_split else "stratified hold-out")
    from vistrain.training.loggers import check_logging
    check_logging(cfg.logging)  # fail before training, not after it
    if cfg.train.checks and rt.is_main and not resume:  # quick diagnostics (issue 7)
        from vistrain.interpret.diagnostics import run_checks
        run_checks(cfg, model, pcfg, pre, data, rt, out_dir=out, progress=progress)
    model = rt.prepare_model(model)
    history, record = train_model(cfg, model, pcfg, pre, data, rt, out, resume=resume, progress=progress)
    metrics = final_evaluation(unwrap(model), pre, data, rt, out, progress,
                               features=record.pop("eval_features", None))
    if rt.is_main:
        from vistrain.artifact import save_model
        save_model(out, unwrap(model), model_name=m.name, classes=data.index.classes, preprocess=pre,
                   model_kwargs=scratch_kwargs(cfg), pretrained_cfg=pcfg.to_dict(),
                   extra={"strategy": record})
        record["runtime"] = rt.describe()
        write_run_record(out, cfg, data, record, time.perf_counter() - t0, history)
        from vistrain.training.loggers import write_logs
        write_logs(out, cfg.logging, history)
        from vistrain.report.build import build_report
        from vistrain.evaluation.figures import write_run_figures
        write_run_figures(out)
        build_report(out)
    rt.barrier()
    return RunResult(out, data.index.classes, metrics, history)


def scratch_kwargs(cfg: TrainConfig) -> dict:
    if not cfg.model.name.startswith("vistrain/"):
        return {}
    return {"norm": cfg.model.norm, "act": cfg.model.act, "init": cfg.model.init,
            "in_chans": 1 if cfg.preprocess.grayscale else 3,
            **({"input_size": cfg.preprocess.size} if cfg.preprocess.size else {})}


def final_evaluation(model, pre: Preprocess, data: PreparedData, rt: Runtime, out: Path,
                     progress: bool, features: np.ndarray | None = None) -> dict:
    """Metrics of the final (best) model on val and test; writes metrics.json and predictions.

    With a frozen backbone, ``features`` (cached, aligned with ``data.index``) go through the
    installed classifier only: the same logits as the full forward pass, without recomputing them.
    """
    from vistrain.evaluation.metrics import compute_metrics
    labels = data.labels()
    results, preds = {}, {}
    for part in ("val", "test", *(p for p in data.parts if p not in ("train", "val", "test"))):
        idx = np.asarray(data.parts.get(part, []), dtype=np.int64)
        if len(idx) == 0:
            continue
        if features is not None:
            with torch.no_grad():  # eval mode: timm's pre-classifier dropout is the identity
                logits = model.get_classifier()(torch.from_numpy(features[idx]).to(rt.device))
            probs = logits.float().softmax(1).cpu().numpy()
        else:
            batches = ArrayBatches(data.pixels, np.zeros(len(data.pixels), np.int64), batch_size=64,
                                   indices=data.rows[idx])
            probs, _ = predict(model, batches, BatchPipeline(normalize=pre.normalize), rt,
                               desc=f"evaluating {part}", progress=progress)
        results[part] = compute_metrics(labels[idx], probs, data.index.classes, n_bootstrap=500)
        preds[part] = {"indices": idx.tolist(), "labels": labels[idx].tolist(), "probs": probs.round(6).tolist()}
    if rt.is_main:
        (out / "metrics.json").write_text(json.dumps(results, indent=1))
        (out / "predictions.json").write_text(json.dumps(preds))
    return results


def write_run_record(out: Path, cfg: TrainConfig, data: PreparedData, record: dict, seconds: float,
                     history: list[dict]) -> None:
    from vistrain.artifact import versions
    info = {"seed": cfg.train.seed, "split_seed": cfg.data.split_seed, "versions": versions(),
            "data_root": str(Path(data.index.root).resolve()), "n_images": len(data.index),
            "class_counts": data.index.counts(),
            "skipped_files": [{"file": f, "reason": r} for f, r in data.index.skipped],
            "strategy": record, "wall_seconds": round(seconds, 1)}
    (out / "run.json").write_text(json.dumps(info, indent=1))
    (out / "history.json").write_text(json.dumps(history, indent=1))
    if history:
        from vistrain.report.curves import overfitting_warning, plot_history
        plot_history(history, out / "curves.png", title=f"{cfg.model.name} ({record.get('strategy')})")
        warning = overfitting_warning(history)
        if warning:
            log.warning(warning)
