"""Everything before the first training step: seed, model, decoded pixels, split, preprocessing.

Every run starts from the same state, made here: :func:`prepare_run` returns a
:class:`~vistrain.training.context.RunContext` for ``train`` (and so for each fold of ``cv`` and
each run of ``compare``, which train through it), ``check`` and ``lr-find``.

Example:
    >>> from vistrain.config import TrainConfig
    >>> from vistrain.device import Runtime
    >>> cfg = TrainConfig.from_dict({"data": {"root": "examples/fashion-mnist-small"}})  # doctest: +SKIP
    >>> ctx = prepare_run(cfg, Runtime.create("cpu"), progress=False)                   # doctest: +SKIP
    >>> ctx.data.pixels.shape, ctx.pre.describe()                                       # doctest: +SKIP
    ((2000, 3, 224, 224), 'resize ...')
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vistrain.config import TrainConfig
from vistrain.config.spelling import option
from vistrain.data.cache.budget import CacheSpaceError, default_cache_dir, human_bytes, npy_bytes
from vistrain.data.cache.build import build_pixel_caches
from vistrain.data.cache.decode import num_workers
from vistrain.data.cache.fingerprint import cache_key
from vistrain.data.cache.pixels import EvalAndTrainPixels
from vistrain.data.doctor.run import log_quick_checks
from vistrain.imageio.read import set_max_image_pixels
from vistrain.data.scan import ImageIndex
from vistrain.data.splits import make_parts
from vistrain.data.stream import FolderStream, ShardStream, open_index, shards_digest, unreadable_headers
from vistrain.device import Runtime, keep_freed_host_memory
from vistrain.errors import DataError
from vistrain.models import PretrainedCfg, create
from vistrain.training.auto import choose_recipe
from vistrain.training.context import PreparedData, RunContext, spatial_preprocess
from vistrain.transforms.normalize import resolve_normalization
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.resize import crop_scale_size

log = logging.getLogger("vistrain")

# what a run does between its model and its pixels (:func:`prepare_run`): ``(requested config,
# chosen config, strategy auto's reasoning or None, runtime) -> (winner config or None, the
# winner's (preprocess, data) or None)``
BeforePixels = Callable[[TrainConfig, TrainConfig, dict | None, Runtime],
                        tuple[TrainConfig | None, tuple[Preprocess, PreparedData] | None]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(cfg: TrainConfig, spatial: Preprocess, rt: Runtime, progress: bool = True,
                 index: ImageIndex | None = None, parts: dict | None = None) -> PreparedData:
    """Decode every image of ``index`` once (pixel cache) and split.  ``parts`` (indices into
    ``index``, or a function of the index left after skipping unreadable files that returns them)
    replaces :func:`make_parts`, e.g. one CV fold.  Shards, ``data.cache=stream`` and a cache
    that would pass its budget (too large for memory too) give streamed data instead."""
    index = index or open_index(cfg.data.root)
    if index.shards is not None:
        return _shard_data(cfg, spatial, index, parts)
    spec = {k: v for k, v in spatial.to_dict().items()
            if k in ("size", "resize_mode", "interpolation", "crop_pct", "fill", "background", "channels")}
    if cfg.data.cache == "stream":
        return _folder_stream(cfg, spatial, index, parts, spec, {"where": "stream", "reason": "data.cache=stream"})
    cache_dir = None if cfg.data.cache == "off" else default_cache_dir() / "pixels"
    shape = (spatial.channels, spatial.size, spatial.size)
    fn, shapes, specs = spatial.pixels, [shape], [spec]
    if wants_train_pixels(cfg, spatial):
        fn = EvalAndTrainPixels.for_paths(spatial, index.paths, cache_dir)
        t = fn.train_size
        shapes.append((spatial.channels, t, t))
        specs.append(dict(spec, train_square=t))
    decoded = _decode(cfg, index, fn, shapes, specs, cache_dir, progress=progress and rt.is_main)
    if decoded[0] is None:  # past the cache budget and too large for memory
        return _folder_stream(cfg, spatial, index, parts, spec, decoded[2])
    arrays, bad, where = decoded
    pixels, train_pixels = arrays[0], (arrays[1] if len(arrays) > 1 else None)
    rows = np.arange(len(index))
    if bad:
        index, rows = _drop_unreadable(cfg, index, bad, given_parts=isinstance(parts, dict))
    parts = parts(index) if callable(parts) else parts if parts is not None else make_parts(index, cfg.data)
    return PreparedData(index, pixels, rows, parts, cache_key(index.paths, spec), train_pixels, where)


def _decode(cfg: TrainConfig, index: ImageIndex, fn, shapes, specs, cache_dir, *, progress: bool):
    """``(arrays, bad, where)``: the decoded pixels, in the disk cache (``data.cache`` auto or
    require) or in memory (``off``; or ``auto`` when the estimate, known before any decode, passes
    the cache budget or the free disk and fits in a quarter of the free memory); ``(None, None,
    where)`` when it fits nowhere: the images are then streamed.  ``where`` records the estimate
    and the choice for run.json."""
    needed = sum(npy_bytes((len(index), *s)) for s in shapes)
    where = {"estimate_bytes": needed, "where": "memory" if cache_dir is None else "disk"}
    try:
        arrays, bad = build_pixel_caches(index.paths, fn, shapes, specs=specs, cache_dir=cache_dir,
                                         workers=cfg.data.num_workers, progress=progress)
        return arrays, bad, where
    except CacheSpaceError as err:
        if cfg.data.cache == "require":
            raise
        reason = str(err).split(";")[0]
        memory = available_memory_bytes()
        if needed > memory // 4:
            log.warning("pixel cache: %s, and %s is more than a quarter of the free memory (%s): "
                        "streaming the images from the folder instead, decoded per batch "
                        "(data.cache=require stops instead)", reason, human_bytes(needed), human_bytes(memory))
            return None, None, dict(where, where="stream", reason=f"{err}; free memory {human_bytes(memory)}")
        log.warning("pixel cache: %s: decoding into memory instead (data.cache=require stops instead)", reason)
        arrays, bad = build_pixel_caches(index.paths, fn, shapes, specs=specs, cache_dir=None,
                                         workers=cfg.data.num_workers, progress=progress)
        return arrays, bad, dict(where, where="memory", reason=str(err))


def _folder_stream(cfg: TrainConfig, spatial: Preprocess, index: ImageIndex, parts, spec: dict,
                   where: dict) -> PreparedData:
    """The images decoded per batch from their files (:class:`FolderStream`); unreadable files
    are found first from their headers (skipped or fatal, as ``data.on_bad_image`` says)."""
    workers = num_workers(cfg.data.num_workers)
    bad = unreadable_headers(index.paths, workers)
    if bad:
        index, _ = _drop_unreadable(cfg, index, bad, given_parts=isinstance(parts, dict))
    train_size = None
    if wants_train_pixels(cfg, spatial):
        cache_dir = None if cfg.data.cache == "off" else default_cache_dir() / "pixels"
        train_size = EvalAndTrainPixels.for_paths(spatial, index.paths, cache_dir).train_size
    stream = FolderStream(index.paths, index.labels, spatial, train_size, workers)
    parts = parts(index) if callable(parts) else parts if parts is not None else make_parts(index, cfg.data)
    log.info("pixels: %s", stream.describe())
    return PreparedData(index, None, np.arange(len(index)), parts, cache_key(index.paths, spec),
                        cache=where, stream=stream)


def _shard_data(cfg: TrainConfig, spatial: Preprocess, index: ImageIndex, parts) -> PreparedData:
    """Data read from shards: the parts they were packed with, pixels streamed (:class:`ShardStream`)."""
    if parts is not None:
        raise DataError(f"{index.root}: shards hold the split fixed when they were packed; "
                        "cross-validation needs the image folder (vistrain cv DATA)")
    shards = index.shards
    parts = {p: [i for i, g in enumerate(index.given_split) if g == p] for p in ("train", "val", "test")}
    if not parts["train"]:
        raise DataError(f"{index.root}: the shards hold no training samples ({shards.part_counts()}); "
                        "pack the folder again with a training part")
    stream = ShardStream(shards, spatial, None, num_workers(cfg.data.num_workers))
    if wants_train_pixels(cfg, spatial):
        scale = crop_scale_size(spatial.size, spatial.crop_pct)
        largest = shards.meta.get("largest_shorter_side") or stream.largest_side(parts["train"][:64])
        stream.train_size = min(scale, largest or scale)  # as the cache: no enlarged train squares
    log.info("pixels: %s", stream.describe())
    key = cache_key([], {"preprocess": spatial.to_dict(), "shards": shards_digest(shards)})
    where = {"where": "shards", "shards": len(shards.shards),
             "shard_bytes": sum(s.bytes for s in shards.shards), "parts": shards.part_counts()}
    return PreparedData(index, None, np.arange(len(index)), parts, key, cache=where, stream=stream)


def run_quick_checks(index: ImageIndex, cfg: TrainConfig):
    """The fast data checks (:func:`log_quick_checks`) of an image folder; None for shards, whose
    files were checked when packed (``vistrain doctor DATA`` checks the folder itself)."""
    if index.shards is not None:
        log.info("data checks: not run on shards (they read the image files); run `vistrain doctor` "
                 "on the folder they were packed from")
        return None
    return log_quick_checks(index, cfg)


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (``MemAvailable``; else free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _drop_unreadable(cfg: TrainConfig, index: ImageIndex, bad: dict, *, given_parts: bool):
    """``(index without the unreadable files, their rows in the pixel array)``, or a DataError."""
    if cfg.data.on_bad_image == "fail":
        first = next(iter(bad.items()))
        raise DataError(f"{len(bad)} unreadable image(s), e.g. {first[0]}: {first[1]}; "
                        f"fix or remove them, or use {option('on_bad_image', 'skip')}")
    keep = np.array([i for i, p in enumerate(index.paths) if str(p) not in bad], dtype=np.int64)
    if given_parts:
        raise DataError(f"{len(bad)} image(s) became unreadable since the parts were made, e.g. "
                        f"{next(iter(bad))}; fix or remove them and start again")
    index = index.drop(set(bad), bad)
    for path, reason in index.skipped:
        log.warning("skipped %s: %s", path, reason)
    empty = [c for c, n in index.counts().items() if n == 0]
    if empty:
        raise DataError(f"{index.root}: every image of class(es) {', '.join(empty)} is unreadable")
    return index, keep


def wants_train_pixels(cfg: TrainConfig, spatial: Preprocess) -> bool:
    """A larger train-time cache only helps a random resized crop that trains end to end, and
    only the ``crop`` resize mode (with crop_pct < 1) discards a border to recover."""
    end_to_end = cfg.strategy.name != "feature-extraction" or cfg.strategy.feature_cache == "live"
    return (end_to_end and cfg.augment.preset != "none" and spatial.resize_mode == "crop"
            and spatial.crop_pct < 1)


def dataset_stats(pixels: np.ndarray, rows: np.ndarray, chunk: int = 256):
    """Exact per-channel mean/std (in [0,1] units) over all pixels of ``rows``; float64 sums."""
    return _stats_of(pixels[np.sort(rows[start:start + chunk])] for start in range(0, len(rows), chunk))


def stream_stats(stream, ids: np.ndarray, part: str = "train"):
    """:func:`dataset_stats` of streamed data: the same sums, over the decoded batches of ``ids``."""
    return _stats_of(x.numpy() for x, _ in stream.batches(ids, part=part, batch_size=256))


def _stats_of(batches):
    s = ss = None
    n = 0
    for batch in batches:
        x = batch.astype(np.float64) / 255.0
        if s is None:
            s, ss = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        s += x.sum(axis=(0, 2, 3))
        ss += (x * x).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    return mean.tolist(), np.sqrt(np.maximum(ss / n - mean ** 2, 0)).tolist()


def finalize_preprocess(cfg: TrainConfig, spatial: Preprocess, pcfg: PretrainedCfg,
                        data: PreparedData) -> Preprocess:
    """``spatial`` with the normalization resolved (dataset statistics from the train part only)."""
    p = cfg.preprocess
    stats = None
    needs_stats = p.normalize == "dataset" or (p.normalize == "auto" and not pcfg.pretrained)
    if needs_stats:
        stats = dataset_stats(data.pixels, data.part_rows("train")) if data.stream is None else \
            stream_stats(data.stream, data.part_ids("train"))
    norm = resolve_normalization(p.normalize, model_mean=pcfg.mean, model_std=pcfg.std,
                                 dataset_stats=stats, mean=p.mean, std=p.std,
                                 pretrained=pcfg.pretrained, channels=spatial.channels)
    extra = {"dataset_stats_from": "train split only"} if norm.mode == "dataset" else {}
    return replace(spatial, normalize_mode=norm.mode, scale=norm.scale, mean=norm.mean,
                   std=norm.std, extra=extra)


def scratch_kwargs(cfg: TrainConfig) -> dict:
    """Constructor arguments of a ``vistrain/`` from-scratch network (``{}`` for timm models)."""
    if not cfg.model.name.startswith("vistrain/"):
        return {}
    return {"norm": cfg.model.norm, "act": cfg.model.act, "init": cfg.model.init,
            "in_chans": 1 if cfg.preprocess.grayscale else 3,
            **({"input_size": cfg.preprocess.size} if cfg.preprocess.size else {})}


def create_model(cfg: TrainConfig, num_classes: int):
    """``(model, pretrained_cfg)`` of ``cfg.model`` with ``num_classes`` outputs (no seeding, no log)."""
    m = cfg.model
    return create(m.name, num_classes, pretrained=m.pretrained and not m.name.startswith("vistrain/"),
                  weights=m.weights, drop_rate=m.drop_rate, **scratch_kwargs(cfg))


def prepare_model(cfg: TrainConfig, index: ImageIndex, rt: Runtime):
    """Seed and build the model; returns ``(model, pretrained_cfg)``.  (The quick data checks run
    once per training run, before it, in :mod:`vistrain.training.run`.)"""
    seed_everything(cfg.train.seed)
    log.info("data: %d images, %d classes in %s", len(index), len(index.classes), index.root)
    model, pcfg = create_model(cfg, len(index.classes))
    log.info("model: %s, weights: %s", cfg.model.name, pcfg.weights_source)
    return model, pcfg


def prepare_pixels(cfg: TrainConfig, pcfg: PretrainedCfg, rt: Runtime, index: ImageIndex, *,
                   progress: bool = True, parts=None) -> tuple[Preprocess, PreparedData]:
    """Decode the pixels, split and resolve the preprocessing; returns ``(preprocess, data)``."""
    spatial = spatial_preprocess(cfg, pcfg)
    data = prepare_data(cfg, spatial, rt, progress, index=index, parts=parts)
    pre = finalize_preprocess(cfg, spatial, pcfg, data)
    log.info("preprocessing: %s", pre.describe())
    return pre, data


def begin_run(cfg: TrainConfig) -> None:
    """The checks and process-wide settings every run starts with (:func:`prepare_run`): every
    setting checked, the image-size limit, and the allocator's kept host memory when
    ``train.host_memory=reuse`` asks for it (it changes the whole process).  Calling it again
    changes nothing: a training run calls it first, before it looks at its output folder."""
    cfg.check()
    set_max_image_pixels(cfg.data.max_image_pixels)
    if cfg.train.host_memory == "reuse":
        keep_freed_host_memory()


def recipe_runtime(cfg: TrainConfig, rt: Runtime, *, say: bool = True) -> Runtime:
    """``rt``, or a runtime made for ``cfg``'s precision when the recipe chosen for it asks for
    another one (strategy auto's network from scratch trains in bf16 where the CPU has it): the
    one place where a chosen recipe changes the runtime -- for every run (:func:`prepare_run`),
    and for each entrant of the recipe race, which trains as its named recipe would.  ``say``:
    log the new runtime."""
    wanted = Runtime.for_train(cfg.train)
    if (wanted.amp_dtype, wanted.channels_last) == (rt.amp_dtype, rt.channels_last):
        return rt
    if say:
        log.info("runtime: %s", wanted.describe())
    return wanted


def prepare_run(cfg: TrainConfig, rt: Runtime, index: ImageIndex | None = None, parts=None, *,
                progress: bool = True, started: float | None = None, out: Path | None = None,
                deadline: float | None = None, before_pixels: BeforePixels | None = None) -> RunContext:
    """The one set-up of a run: every setting checked (:func:`begin_run`), the folder scanned
    unless ``index`` is given, strategy auto resolved, the runtime rebuilt for the chosen recipe,
    the model built, the pixels decoded and split (``parts`` unless given: :func:`prepare_data`)
    and the preprocessing resolved.  ``started``: the ``time.monotonic()`` strategy auto's budget
    counts from; ``out`` and ``deadline`` go to the context.

    ``before_pixels(requested, chosen, auto, rt)`` runs once the model is built, before any image
    is decoded: a training run makes its run folder there and races strategy auto's candidates
    in it.  It returns ``(the race's winner or None, the pixels the race decoded for it or
    None)``; a winner gets its runtime and model here, as the first choice did.  ``check`` and
    ``lr-find`` pass none: nothing is written and the rule's first choice is taken (the module's
    example)."""
    begin_run(cfg)
    index = index or open_index(cfg.data.root)
    chosen, auto = resolve_auto(cfg, index, rt, parts=parts, started=started)
    rt, model, pcfg = _recipe_model(chosen, index, rt, auto)
    winner, prepared = (None, None) if before_pixels is None else before_pixels(cfg, chosen, auto, rt)
    if winner is not None:
        chosen = winner
        rt, model, pcfg = _recipe_model(chosen, index, rt, auto)
    pre, data = prepared or prepare_pixels(chosen, pcfg, rt, index, progress=progress, parts=parts)
    return RunContext(chosen, model, pcfg, pre, data, rt, out=out, progress=progress, auto=auto,
                      deadline=deadline)


def _recipe_model(cfg: TrainConfig, index: ImageIndex, rt: Runtime, auto: dict | None):
    """``(runtime, model, pretrained_cfg)`` of the recipe ``cfg``: the runtime rebuilt for it
    where strategy auto chose it (:func:`recipe_runtime`), then its model."""
    if auto is not None:
        rt = recipe_runtime(cfg, rt)
    model, pcfg = prepare_model(cfg, index, rt)
    return rt, model, pcfg


def resolve_auto(cfg: TrainConfig, index: ImageIndex, rt: Runtime, *, parts=None,
                 started: float | None = None) -> tuple[TrainConfig, dict | None]:
    """``(cfg, None)``, or for ``strategy=auto`` ``(config of the recipe chosen by measurement,
    its reasoning)`` (:func:`vistrain.training.auto.choose_recipe`); ``cfg`` is not changed."""
    if cfg.strategy.name != "auto":
        return cfg, None
    return choose_recipe(cfg, index, rt, parts=parts, started=started)
