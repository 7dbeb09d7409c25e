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

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vistrain import fsutil
from vistrain.artifact import save_model, versions
from vistrain.config import TrainConfig
from vistrain.data.cache import (EvalAndTrainPixels, build_pixel_caches, cache_key,
                                 default_cache_dir)
from vistrain.data.doctor import log_quick_checks, write_doctor_json
from vistrain.data.io import set_max_image_pixels
from vistrain.data.loader import ArrayBatches
from vistrain.data.scan import ImageIndex, scan_folder
from vistrain.data.splits import make_parts, save_splits
from vistrain.device import Runtime, keep_freed_host_memory, unwrap
from vistrain.evaluation import curves
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
    parts = parts(index) if callable(parts) else parts if parts is not None else make_parts(index, cfg.data)
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


def prepare_run_dir(out: Path, *, overwrite: bool, resume: bool, data_root: str | Path | None = None,
                    fingerprint: dict | None = None) -> Path:
    """Create (or check, for ``resume``) the run directory; see :func:`fsutil.prepare_output_dir`:
    ``--overwrite`` replaces only a vistrain run, moved aside until the new one has a checkpoint,
    and never the data folder, a folder around it, the home folder or the filesystem root."""
    info = {} if fingerprint is None else {"data_root": str(Path(data_root).resolve()),
                                          "data_fingerprint": fingerprint}
    fsutil.prepare_output_dir(out, kind="run", overwrite=overwrite, resume=resume,
                              data_folder=data_root, **info)
    return Path(out)


def data_fingerprint(index: ImageIndex) -> dict:
    """What a resumed run checks its data against: the sha256 of the sorted ``relative path, size``
    lines of every file in ``index`` (``{"sha256": hex, "n_files": N}``)."""
    root = Path(index.root)
    lines = sorted(f"{Path(p).relative_to(root).as_posix()}\t{Path(p).stat().st_size}\n"
                   for p in index.paths)
    return {"sha256": hashlib.sha256("".join(lines).encode("utf-8")).hexdigest(),
            "n_files": len(lines)}


def recorded_data_root(run_dir: str | Path) -> str | None:
    """The absolute data folder a run was trained on (its marker, else run.json), or None."""
    marker = fsutil.read_marker(run_dir) or {}
    if marker.get("data_root"):
        return marker["data_root"]
    try:
        return json.loads((Path(run_dir) / "run.json").read_text()).get("data_root")
    except (OSError, ValueError, AttributeError):
        return None


def check_same_data(run_dir: Path, index: ImageIndex, fingerprint: dict) -> None:
    """On resume: stop unless ``index`` holds the files the run was started on."""
    marker = fsutil.read_marker(run_dir) or {}
    want = marker.get("data_fingerprint")
    if not isinstance(want, dict) or "sha256" not in want:
        log.warning("%s records no data fingerprint (an older run); cannot check that %s is the "
                    "data it was trained on", run_dir, index.root)
        return
    if want["sha256"] != fingerprint["sha256"]:
        was = marker.get("data_root", "?")
        raise DataError(f"{index.root}: not the data {run_dir} was trained on ({was}: "
                        f"{want.get('n_files')} files; here: {fingerprint['n_files']} files, names or "
                        "sizes differ); restore it, or give --data PATH to an unchanged copy")


def prepare_model(cfg: TrainConfig, index: ImageIndex, rt: Runtime, *, quick_checks: bool = False):
    """Seed, run the quick data checks and build the model; returns ``(model, pretrained_cfg)``."""
    from vistrain.models import create
    seed_everything(cfg.train.seed)
    log.info("data: %d images, %d classes in %s", len(index), len(index.classes), index.root)
    if quick_checks and rt.is_main:  # fast data checks, logged as warnings
        log_quick_checks(index, cfg)
    m = cfg.model
    model, pcfg = create(m.name, len(index.classes), pretrained=m.pretrained and not m.name.startswith("vistrain/"),
                         weights=m.weights, drop_rate=m.drop_rate, **scratch_kwargs(cfg))
    log.info("model: %s, weights: %s", m.name, pcfg.weights_source)
    return model, pcfg


def prepare_pixels(cfg: TrainConfig, pcfg, rt: Runtime, index: ImageIndex, *, progress: bool = True,
                   parts=None) -> tuple[Preprocess, PreparedData]:
    """Decode the pixels, split and resolve the preprocessing; returns ``(preprocess, data)``."""
    spatial = spatial_preprocess(cfg, pcfg)
    data = prepare_data(cfg, spatial, rt, progress, index=index, parts=parts)
    pre = finalize_preprocess(cfg, spatial, pcfg, data)
    log.info("preprocessing: %s", pre.describe())
    return pre, data


def prepare_model_and_data(cfg: TrainConfig, rt: Runtime, *, progress: bool = True,
                           index: ImageIndex | None = None, parts=None, quick_checks: bool = False):
    """Seed, scan, build the model, decode the pixels, split and resolve the preprocessing, exactly
    as training does; ``vistrain check`` and ``lr-find`` start from the same state.

    Returns ``(model, pretrained_cfg, preprocess, prepared_data)``.
    """
    cfg.check()
    set_max_image_pixels(cfg.data.max_image_pixels)
    index = index or scan_folder(cfg.data.root)
    model, pcfg = prepare_model(cfg, index, rt, quick_checks=quick_checks)
    pre, data = prepare_pixels(cfg, pcfg, rt, index, progress=progress, parts=parts)
    return model, pcfg, pre, data


def run_training(cfg: TrainConfig, out_dir: str | Path, *, overwrite: bool = False,
                 resume: bool = False, progress: bool = True, index: ImageIndex | None = None,
                 parts: dict[str, list[int]] | None = None) -> RunResult:
    """Train per ``cfg`` into ``out_dir`` (see module docstring); returns the test metrics.

    Everything that can be checked without decoding an image (every setting, the data folder,
    the output folder, the model name, on resume the data's fingerprint) is checked before the
    run directory is touched.  ``index`` and ``parts`` (``{"train", "val", "test", ...}`` indices
    into ``index``) bypass the scan and :func:`make_parts`: ``vistrain cv`` trains each fold this
    way.  Parts other than train/val/test are evaluated too (e.g. the user's test folder next to a
    fold's test part).
    """
    t0 = time.perf_counter()
    cfg.check()
    set_max_image_pixels(cfg.data.max_image_pixels)
    out = Path(out_dir)
    fsutil.check_output_location(out, data_folder=index.root if index else cfg.data.root)
    if cfg.train.host_memory == "reuse":  # asked for: it changes the whole process's allocator
        keep_freed_host_memory()
    rt = Runtime.create(cfg.train.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        cpu_amp=cfg.train.cpu_amp)
    log.info("runtime: %s", rt.describe())
    index = index or scan_folder(cfg.data.root)
    fingerprint = data_fingerprint(index)
    if resume:
        check_same_data(out, index, fingerprint)
    from vistrain.training.loggers import check_logging
    check_logging(cfg.logging)  # fail before training, not after it
    findings = log_quick_checks(index, cfg) if cfg.data.doctor and rt.is_main else None
    model, pcfg = prepare_model(cfg, index, rt)
    existed_empty = out.is_dir() and not any(out.iterdir())
    fresh = not resume and (existed_empty or not out.exists())
    if rt.is_main:
        prepare_run_dir(out, overwrite=overwrite, resume=resume, data_root=index.root,
                        fingerprint=fingerprint)
        if resume:  # pins the run to this copy of the data from now on (e.g. one given by --data)
            fsutil.update_marker(out, data_root=str(Path(index.root).resolve()),
                                 data_fingerprint=fingerprint)
        # written before decoding: a run killed at any point after this can be resumed
        replace(cfg, data=replace(cfg.data, root=str(Path(index.root).resolve()))).save(out / "config.yaml")
        if findings is not None:
            write_doctor_json(out, findings)
    rt.barrier()
    try:
        return _train_into(cfg, out, rt, model, pcfg, index, parts, resume=resume,
                           progress=progress, fingerprint=fingerprint, t0=t0)
    except BaseException as err:
        if rt.is_main:
            _undo_unstarted_run(out, fresh=fresh, existed_empty=existed_empty,
                                user_error=isinstance(err, VistrainError))
        raise


def _undo_unstarted_run(out: Path, *, fresh: bool, existed_empty: bool, user_error: bool) -> None:
    """A run that failed before its first checkpoint: bring back the run it replaced, or, after a
    user error (unreadable images with on_bad_image=fail, ...), remove the folder it created so
    that the corrected command needs no --overwrite.  An interrupted run stays resumable."""
    if (out / "checkpoints" / "last.pt").is_file():
        return
    if fsutil.restore_replaced(out) is None and fresh and user_error:
        if fsutil.read_marker(out) is not None:  # only what this call created
            shutil.rmtree(out)
            if existed_empty:
                out.mkdir()


def _train_into(cfg, out, rt, model, pcfg, index, parts, *, resume, progress, fingerprint, t0):
    from vistrain.training.strategy import train_model
    pre, data = prepare_pixels(cfg, pcfg, rt, index, progress=progress, parts=parts)
    m = cfg.model
    if rt.is_main:
        save_splits(out / "splits.json", data.index, data.parts, seed=cfg.data.split_seed,
                    source="given parts (cross-validation fold)" if parts is not None else
                    "given folders" if data.index.given_split else "stratified hold-out")
    if cfg.train.checks and rt.is_main and not resume:  # quick diagnostics
        from vistrain.interpret.diagnostics import run_checks
        run_checks(cfg, model, pcfg, pre, data, rt, out_dir=out, progress=progress)
    model = rt.prepare_model(model)
    history, record = train_model(cfg, model, pcfg, pre, data, rt, out, resume=resume, progress=progress)
    if rt.is_main:  # a head fitted without checkpoints (logistic regression) ends the swap here
        fsutil.discard_replaced(out)
    metrics = final_evaluation(unwrap(model), pre, data, rt, out, progress,
                               features=record.pop("eval_features", None))
    if rt.is_main:
        save_model(out, unwrap(model), model_name=m.name, classes=data.index.classes, preprocess=pre,
                   model_kwargs=scratch_kwargs(cfg), pretrained_cfg=pcfg.to_dict(),
                   extra={"strategy": record})
        record["runtime"] = rt.describe()
        write_run_record(out, cfg, data, record, time.perf_counter() - t0, history,
                         fingerprint=fingerprint)
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
        fsutil.atomic_write_json(out / "metrics.json", results)
        fsutil.atomic_write_json(out / "predictions.json", preds, indent=None)
    return results


def write_run_record(out: Path, cfg: TrainConfig, data: PreparedData, record: dict, seconds: float,
                     history: list[dict], fingerprint: dict | None = None) -> None:
    info = {"seed": cfg.train.seed, "split_seed": cfg.data.split_seed, "versions": versions(),
            "data_root": str(Path(data.index.root).resolve()), "data_fingerprint": fingerprint,
            "n_images": len(data.index),
            "class_counts": data.index.counts(),
            "skipped_files": [{"file": f, "reason": r} for f, r in data.index.skipped],
            "strategy": record, "wall_seconds": round(seconds, 1)}
    fsutil.atomic_write_json(out / "history.json", history)
    fsutil.atomic_write_json(out / "run.json", info)  # last: with metrics.json it marks a finished run
    if history:
        curves.plot_history(history, out / "curves.png", title=f"{cfg.model.name} ({record.get('strategy')})")
        warning = curves.overfitting_warning(history)
        if warning:
            log.warning(warning)
