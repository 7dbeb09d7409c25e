"""``strategy=auto``: the training recipe chosen by measurement, within a wall-clock budget.

Before any image is decoded for training, :func:`choose_recipe` looks at the data and the machine:

1. **Profile** a stratified sample of at most ``SAMPLE`` training images (file headers and
   pixels): their native size (median shorter side) and whether they are grey.
2. **Similarity** to the pretraining domain, two ways on the same sample:
   leave-one-out cosine 5-NN accuracy on the frozen pretrained features, and the same on the raw
   pixels (at most 32 px, each image standardized), both as *skill* over chance
   (:mod:`vistrain.training.similarity`).  Their difference, the **feature gain**, is what
   pretraining adds over the pixels themselves: large on photos (CIFAR-10: ~0.6), small on a
   domain the pretrained features do not know (Fashion-MNIST's grey 28 px product shots: ~0.1,
   though the features alone score well there).  The domain is *far* when the gain is below
   ``FAR_GAIN``.  The first-BatchNorm distance is recorded too.
3. **Throughput** of each candidate on this hardware: a few training steps (forward + backward,
   a deep copy, random pixels of the candidate's input size) give images/s; the frozen forward
   pass of step 2 gives the feature extractor's.
4. **Candidates** and their cost (decode + epochs x (train + val) + test, or one feature pass):

   ==========================  =====================================================================
   ``scratch``                 ``vistrain/resnet20`` (``vistrain/resnet-small`` from 10,000 training
                               images) trained from scratch at the images' native size, grey when
                               they are grey; only for small images (<= ``SMALL_IMAGE`` px) of a far
                               domain, ``SCRATCH_MIN_PER_CLASS`` training images per class or more
   ``finetune``                every layer of the pretrained model; small images at 4x their size
                               (multiple of 16, 96 px at least, the model's size at most) instead of
                               the model's 224: upsampling further adds cost, not detail
   ``gradual``                 gradual unfreezing at the same size (cost bounded by fine-tuning's)
   ``feature-extraction``      frozen backbone at the model's size, a new head: one forward pass
   ==========================  =====================================================================

5. **Choice**: the candidates are ranked by what is expected to be most accurate for this data
   (the size x similarity rule on images per class, plus ``scratch`` first for small images of a
   far domain), and the first whose cost fits ``BUDGET_SHARE`` of ``train.budget`` wins; an
   end-to-end candidate may drop epochs to fit (never below ``MIN_EPOCHS``).  Candidates are
   measured in rank order and only until one fits.  Feature extraction, the cheapest, is the
   fallback.  During training the run stops at the budget if the estimate was short.

The choice becomes settings (``strategy.name``, ``model.name``, ``preprocess.size``, ``grayscale``,
``optim.lr``, ``train.epochs``) of a copy of the config, which the run saves as its
``config.yaml``: resuming re-runs the chosen recipe without measuring again.  The reasoning, in
plain words, and every measurement go into run.json (``strategy.reasoning``) and the report.

Example (the ranking rule alone):
    >>> ranking(native=28, per_class=700, skill=0.75, gain=0.05)[0]
    ['scratch', 'finetune', 'gradual', 'feature-extraction']
    >>> ranking(native=28, per_class=140, skill=0.75, gain=0.05)[0]
    ['feature-extraction', 'gradual']
    >>> ranking(native=500, per_class=500, skill=0.3, gain=0.2)[0]
    ['finetune', 'gradual', 'feature-extraction']
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from vistrain import fsutil
from vistrain.config import TrainConfig
from vistrain.data.cache.budget import default_cache_dir, mark_used, record_entry
from vistrain.data.cache.decode import num_workers
from vistrain.data.cache.fingerprint import cache_key
from vistrain.data.loader import ArrayBatches
from vistrain.data.scan import ImageIndex
from vistrain.data.splits import make_parts
from vistrain.data.stream import open_images, shards_digest
from vistrain.data.stats import GREY_MODES
from vistrain.device import Runtime, cpu_has_native_bf16, unwrap
from vistrain.models import create
from vistrain.progress import progress_bar
from vistrain.training.context import spatial_preprocess
from vistrain.training.feature_engine import return_freed_memory
from vistrain.training.features import extract_features, remember_features
from vistrain.training.similarity import (K, RATES, SIMILAR_SKILL, FirstBNStats, knn_loo_accuracy,
                                          skill_over_chance, stratified_sample)
from vistrain.transforms.normalize import resolve_normalization
from vistrain.transforms.preprocess import Preprocess

log = logging.getLogger("vistrain")

SAMPLE = 200             # images measured (similarity, size, grey)
SMALL_IMAGE = 64         # native shorter side (px) at or below which from scratch is a candidate
FAR_GAIN = 0.3           # feature gain (skill of features - skill of pixels) below this: far domain
# training images per class: below SMALL_PER_CLASS a new head on frozen features (or gradual
# unfreezing) beats training more weights; from scratch needs SCRATCH_MIN_PER_CLASS.  Measured on
# Fashion-MNIST (28 px, far): at 140 per class (the shipped data) frozen features 0.870 vs
# vistrain/resnet20 from scratch 0.845 (val + test); at 700 per class from scratch wins
# (docs/benchmarks.md, "strategy auto").
SMALL_PER_CLASS = 200
SCRATCH_MIN_PER_CLASS = 500
SCRATCH_MODEL, SCRATCH_MODEL_LARGE, LARGE_TRAIN = "vistrain/resnet20", "vistrain/resnet-small", 10_000
MIN_EPOCHS = 5           # fewer end-to-end epochs than this do not fit: the next candidate is tried
BUDGET_SHARE = 0.9       # of train.budget planned; the rest is slack for the report and estimates
# an epoch costs more than its forward + backward passes: batch augmentation, loading and the
# optimizer step added 32-38 % (vistrain/resnet20 at 28 px on 1,400 and 7,000 images, 2 vCPUs)
EPOCH_OVERHEAD = 1.35
PIXEL_KNN_SIZE = 32
SIMILARITY_VERSION = 1   # bump when measure() changes what it returns


@dataclass
class Candidate:
    """One recipe with its measured throughput and estimated cost (seconds)."""
    recipe: str          # scratch | finetune | gradual | feature-extraction
    model: str
    size: int
    grey: bool
    images_per_second: float   # training (end to end) or forward (feature extraction)
    epochs: int
    seconds: float
    fits: bool
    epoch_seconds: float = 0.0   # one epoch (train + val); 0 for feature extraction's head
    fixed_seconds: float = 0.0   # decoding, the test pass, feature extraction's forward pass

    @property
    def name(self) -> str:
        """The race's name of the candidate: the recipe, with the input size where a recipe
        runs at several (``finetune@112``)."""
        return f"{self.recipe}@{self.size}" if self.recipe in ("finetune", "gradual") else self.recipe


def ranking(native: int, per_class: float, skill: float, gain: float) -> tuple[list[str], str]:
    """``(recipes, why)``: the candidates in the order they are expected to be accurate, from the
    images' native size (px), training images per class, the 5-NN skill of the frozen features
    and the feature gain over raw pixels."""
    small_images, far = native <= SMALL_IMAGE, gain < FAR_GAIN
    if small_images and far and per_class >= SCRATCH_MIN_PER_CLASS:
        return (["scratch", "finetune", "gradual", "feature-extraction"],
                f"small images ({native} px) of a domain the pretrained features add little to "
                f"(feature gain {gain:.2f} < {FAR_GAIN}) and enough of them ({per_class:.0f} per class "
                f">= {SCRATCH_MIN_PER_CLASS}): a network trained from scratch at their own size learns "
                "what matters, at a fraction of the cost of a pretrained one at its input size")
    if per_class < SMALL_PER_CLASS:
        if skill >= SIMILAR_SKILL:
            return (["feature-extraction", "gradual"],
                    f"few images per class ({per_class:.0f} < {SMALL_PER_CLASS}) and the frozen features "
                    f"already separate the classes (5-NN skill {skill:.2f} >= {SIMILAR_SKILL}): a new head "
                    "on them; training more weights on little data would overfit")
        return (["gradual", "feature-extraction"],
                f"few images per class ({per_class:.0f} < {SMALL_PER_CLASS}) that the frozen features "
                f"separate poorly (5-NN skill {skill:.2f} < {SIMILAR_SKILL}): unfreeze from the top down, "
                "one group at a time")
    return (["finetune", "gradual", "feature-extraction"],
            f"enough images per class ({per_class:.0f} >= {SMALL_PER_CLASS}) to adapt every layer of "
            "the pretrained model")


def race_candidates(order: list[str], native: int, model_size: int) -> list[tuple[str, int | None]]:
    """``[(recipe, input size or None), ...]``: every candidate of the race, those of ``order``
    (the rule's) first, then the others; fine-tuning of small images at 4x and 2x their size, and
    from scratch wherever the images are small (its networks are made for small inputs).

    Example:
        >>> race_candidates(["feature-extraction", "gradual"], 28, 224)
        [('feature-extraction', None), ('gradual', 112), ('finetune', 112), ('scratch', None), ('finetune', 64)]
    """
    recipes = list(order) + [r for r in ("finetune", "gradual", "feature-extraction") if r not in order]
    if native <= SMALL_IMAGE and "scratch" not in recipes:
        recipes.append("scratch")
    size = finetune_size(native, model_size)
    out = [(r, size if r in ("finetune", "gradual") else None) for r in recipes]
    half = finetune_size(native, model_size, factor=2, floor=64)
    if half < size:  # the second size comes last: one of each recipe first
        out.append(("finetune", half))
    return out


def finetune_size(native: int, model_size: int, *, factor: int = 4, floor: int = 96) -> int:
    """Input size for fine-tuning: the model's, or for small images 4x theirs (a multiple of 16,
    >= 96).  Example: ``finetune_size(28, 224)`` is 112; ``finetune_size(32, 224)`` is 128."""
    if native * factor >= model_size:
        return model_size
    return int(min(model_size, max(floor, 16 * round(factor * native / 16))))


def choose_recipe(cfg: TrainConfig, index: ImageIndex, rt: Runtime, *, parts=None,
                  started: float | None = None) -> tuple[TrainConfig, dict]:
    """``(config of the chosen recipe, reasoning)`` for ``cfg.strategy.name == "auto"``; ``cfg``
    is not changed.  Every process of a distributed run gets rank 0's choice."""
    box = [None]
    if rt.is_main:
        box[0] = _choose(cfg, index, rt, parts, started or time.monotonic())
    if rt.distributed:
        dist.broadcast_object_list(box, src=0)
    changes, reasoning = box[0]
    return apply_choice(cfg, changes), reasoning


def apply_choice(cfg: TrainConfig, changes: dict) -> TrainConfig:
    """A copy of ``cfg`` with ``changes`` (``{"section.key": value}``) set and resolved."""
    new = copy.deepcopy(cfg)
    for key, value in changes.items():
        section, _, name = key.partition(".")
        setattr(getattr(new, section), name, value)
    new.__dict__.pop("_filled", None)  # the choice is explicit now, not a default to re-derive
    return new.check()


def _choose(cfg: TrainConfig, index: ImageIndex, rt: Runtime, parts, started: float) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    m = cfg.model
    if not (m.pretrained or m.weights) or m.name.startswith("vistrain/"):
        why = "no pretrained weights, so nothing to transfer: every layer trains (finetune)"
        log.info("auto: %s", why)
        return {"strategy.name": "finetune"}, {"decision": f"finetune: {why}", "plain": [why]}
    train_ids = _train_ids(cfg, index, parts)
    labels = np.asarray(index.labels, np.int64)
    pick = train_ids[stratified_sample(labels[train_ids], SAMPLE, cfg.data.split_seed)]
    log.info("auto: measuring the data and this machine to choose the recipe (%d sample images)", len(pick))
    # a bar over the steps: the measuring takes half a minute before the first epoch
    bar = progress_bar(total=3, desc="auto: measuring", unit="step", leave=False, enabled=rt.is_main)
    bar.set_postfix_str("image sizes")
    paths = open_images(index, pick)  # files, or images read from shards
    native, grey = profile_images(paths)
    pretrained = PretrainedModel(cfg, len(index.classes))
    key = None if index.shards is None else \
        shards_digest(index.shards) + ",".join(str(i) for i in pick)
    bar.update(1)
    bar.set_postfix_str(f"features of {len(pick)} images")
    sim = cached_similarity(cfg, paths, labels[pick], rt, pretrained, sample_key=key)
    n_train = len(train_ids)
    per_class = n_train / max(1, len(index.classes))
    order, why = ranking(native, per_class, sim["skill"], sim["feature_gain"])
    budget_s = None if cfg.train.budget is None else cfg.train.budget * 60 * BUDGET_SHARE
    spent = time.monotonic() - started
    wanted = race_candidates(order, native, sim["input_size"])
    bar.update(1)
    bar.total = 2 + len(wanted)
    cands = []
    for recipe, size in wanted:  # every candidate is measured: the race, not the rule, decides
        bar.set_postfix_str(f"speed of {recipe}")
        cands.append(_candidate(recipe, cfg, pretrained, native, grey, n_train, len(index), sim, rt,
                                budget_s, spent, size=size))
        bar.update(1)
    bar.close()
    frozen = next((c for c in cands if c.recipe == "feature-extraction"), cands[-1])
    chosen = next((c for c in cands if c.fits), frozen)  # the cheapest is the fallback
    changes = _changes(cfg, chosen, sim, rt)
    reasoning = _reasoning(cfg, chosen, cands, why, native, grey, n_train, sim, budget_s, changes,
                           time.perf_counter() - t0, order)
    reasoning["entrants"] = [{**asdict(c), "name": c.name, "changes": _changes(cfg, c, sim, rt)}
                             for c in cands if c.fits]
    for line in reasoning["plain"]:
        log.info("auto: %s", line)
    return changes, reasoning


class PretrainedModel:
    """The configured pretrained model, loaded on first use (a cached similarity and a recipe
    that needs no throughput of it never load it); ``train_ips(size)`` is measured once per size."""

    def __init__(self, cfg: TrainConfig, num_classes: int):
        self.cfg, self.num_classes, self._loaded, self._ips = cfg, num_classes, None, {}

    def load(self):
        """``(model, pretrained_cfg)``."""
        if self._loaded is None:
            m = self.cfg.model
            self._loaded = create(m.name, self.num_classes, pretrained=True, weights=m.weights,
                                  drop_rate=m.drop_rate)
        return self._loaded

    def train_ips(self, size: int, rt: Runtime) -> float:
        """Training images per second at ``size`` px.  Speed does not depend on the weights: an
        unloaded model is timed as a fresh, randomly initialised copy (no weight file read)."""
        if size not in self._ips:
            model = self._loaded[0] if self._loaded is not None else create(
                self.cfg.model.name, self.num_classes, pretrained=False, drop_rate=self.cfg.model.drop_rate)[0]
            self._ips[size] = train_images_per_second(model, size, 3, rt)
        return self._ips[size]


def cached_similarity(cfg: TrainConfig, paths: list, labels: np.ndarray, rt: Runtime,
                      pretrained: PretrainedModel, sample_key: str | None = None) -> dict:
    """:func:`measure` of the sample, kept in the cache (``similarity`` entries, keyed by the
    sample's files, labels, the model, its weights and the preprocessing): a second run on the
    same data and model does not measure again.  ``data.cache=off`` always measures.  ``paths``
    may be opened images (shards); ``sample_key`` then names them in the key instead of files."""
    m = cfg.model
    spec = {"what": "similarity", "version": SIMILARITY_VERSION, "model": m.name, "weights": m.weights,
            "preprocess": dataclasses.asdict(cfg.preprocess), "labels": labels.tolist(),
            "sample": sample_key}
    key = cache_key([] if sample_key else paths, spec)
    path = None if cfg.data.cache == "off" else default_cache_dir() / "similarity" / f"similarity-{key}.json"
    if path is not None and path.is_file():
        try:
            sim = json.loads(path.read_text())
            mark_used(path)
            return dict(sim, cached=True)
        except (OSError, ValueError):
            pass  # damaged: measured again and rewritten
    model, pcfg = pretrained.load()
    sim = measure(cfg, model, pcfg, paths, labels, rt)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            record_entry(path)
            fsutil.atomic_write_json(path, sim)
        except OSError as err:  # a read-only or full cache only costs the next run the measurement
            log.warning("auto: similarity not cached (%s)", err)
    return sim


def _train_ids(cfg: TrainConfig, index: ImageIndex, parts) -> np.ndarray:
    """Indices of the training part, as the run will split (or was given)."""
    parts = parts(index) if callable(parts) else parts if parts is not None else make_parts(index, cfg.data)
    return np.asarray(parts["train"], dtype=np.int64)


def profile_images(paths: list) -> tuple[int, bool]:
    """``(median shorter side in px, all grey)`` of the images at ``paths`` (unreadable skipped)."""
    sides, grey = [], []
    for p in paths:
        try:
            with (nullcontext(p) if isinstance(p, Image.Image) else Image.open(p)) as im:
                sides.append(min(im.size))
                grey.append(im.mode in GREY_MODES or _rgb_is_grey(im))
        except OSError:
            continue
    if not sides:
        return 224, False
    return int(np.median(sides)), bool(all(grey))


def _rgb_is_grey(im: Image.Image) -> bool:
    if im.mode not in ("RGB", "RGBA", "P"):
        return False
    a = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.int16)
    return bool(np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2)


def _sample_pixels(pre: Preprocess, paths: list) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 (n, C, S, S) pixels, (n,) positions of the readable paths)``."""
    arrays, ok = [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(pre.pixels(p).numpy())
            ok.append(i)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return np.stack(arrays), np.asarray(ok, dtype=np.int64)


def measure(cfg: TrainConfig, model, pcfg, paths: list, labels: np.ndarray, rt: Runtime) -> dict:
    """Similarity of the sample to the pretraining domain and the frozen forward pass's speed:
    5-NN skill of the features and of the raw pixels, their difference (``feature_gain``),
    the first-BatchNorm distance, images/s of the feature extractor, images/s of decoding."""
    spatial = spatial_preprocess(cfg, pcfg)
    t = time.perf_counter()
    pixels, ok = _sample_pixels(spatial, paths)
    decode_ips = len(ok) / max(time.perf_counter() - t, 1e-6)
    labels = labels[ok]
    norm = resolve_normalization(cfg.preprocess.normalize if cfg.preprocess.normalize != "dataset" else "model",
                                 model_mean=pcfg.mean, model_std=pcfg.std, dataset_stats=None,
                                 mean=cfg.preprocess.mean, std=cfg.preprocess.std, pretrained=True,
                                 channels=spatial.channels)
    pre = replace(spatial, normalize_mode=norm.mode, scale=norm.scale, mean=norm.mean, std=norm.std)
    rt = fast_runtime(rt)  # similarity needs no float32 exactness; the measurement runs faster
    net = rt.prepare_model(model)
    batches = ArrayBatches(pixels, np.zeros(len(pixels), np.int64), batch_size=32, prefetch=0)
    t, engine = time.perf_counter(), {}
    feats = extract_features(net, batches, pre.normalize, rt, progress=False, desc="auto", record=engine)
    bn_stats = FirstBNStats(net)
    # the stem only (the features came from the engine), 8 images at a time: its statistics are
    # taken in float64, ~100 MB for 32 images at 224 px
    for start in range(0, len(pixels), 8):
        bn_stats.observe(pre.normalize(rt.to_device(torch.from_numpy(pixels[start:start + 8]))))
    return_freed_memory()  # the run that follows decodes and extracts: its peak starts lower
    forward_ips = engine.get("images_per_second") or len(pixels) / max(time.perf_counter() - t, 1e-6)
    if all(isinstance(p, (str, Path)) for p in paths):  # files (not shards): the run reuses these
        remember_features(net, pre, rt, [paths[i] for i in ok], feats)
    small = Preprocess(size=PIXEL_KNN_SIZE, resize_mode="stretch", interpolation="bilinear", crop_pct=1.0)
    raw = np.stack([small.pixels(Image.fromarray(p.transpose(1, 2, 0))).numpy() for p in pixels])
    raw = raw.reshape(len(raw), -1).astype(np.float64)
    raw = (raw - raw.mean(1, keepdims=True)) / np.maximum(raw.std(1, keepdims=True), 1e-6)
    _, counts = np.unique(labels, return_counts=True)
    chance = float(counts.max() / counts.sum())
    feature_skill = skill_over_chance(knn_loo_accuracy(feats, labels), chance)
    pixel_skill = skill_over_chance(knn_loo_accuracy(raw, labels), chance)
    return {"sample_images": int(len(pixels)), "input_size": int(pcfg.input_size[-1]),
            "knn_k": K, "chance_accuracy": round(chance, 4),
            "skill": round(feature_skill, 4), "pixel_skill": round(pixel_skill, 4),
            "feature_gain": round(feature_skill - pixel_skill, 4), "first_bn_distance": bn_stats.distance(),
            "feature_images_per_second": round(forward_ips, 1), "feature_engine": engine,
            "decode_images_per_second": round(decode_ips, 1)}


def fast_runtime(rt: Runtime) -> Runtime:
    """``rt`` with bfloat16 autocast and channels_last on a CPU that does bf16 natively (AMX,
    AVX512-BF16: 2-5x faster); else ``rt`` itself."""
    if rt.device.type != "cpu" or rt.amp_dtype is not None or not cpu_has_native_bf16():
        return rt
    return replace(rt, amp_dtype=torch.bfloat16, channels_last=True)


def train_images_per_second(model: torch.nn.Module, size: int, channels: int, rt: Runtime, *,
                            batch: int = 16, steps: int = 3) -> float:
    """Training throughput of ``model`` at ``size`` px: forward + backward of random ``(batch,
    channels, size, size)`` inputs on a deep copy (the model itself is not touched), one warm-up
    step then ``steps`` timed ones, of which the fastest counts (as ``timeit`` does: on a shared
    machine the slower steps measure the other jobs)."""
    net = rt.prepare_model(copy.deepcopy(unwrap(model))).train()
    for p in net.parameters():
        p.requires_grad_(True)
    x = rt.to_device(torch.randn(batch, channels, size, size))
    y = torch.zeros(batch, dtype=torch.long, device=rt.device)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with rt.autocast():
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        loss.backward()
        net.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return batch / float(min(times[1:]))


def epoch_seconds(n_train: int, n_val: int, n_test: int, train_ips: float) -> tuple[float, float]:
    """``(seconds per epoch, seconds of the final test pass)`` at ``train_ips`` measured training
    images/s (:func:`train_images_per_second`): an epoch trains ``n_train`` images and evaluates
    ``n_val``, a forward pass costing about a third of forward + backward, and everything else
    (augmentation, loading, the optimizer step) adds ``EPOCH_OVERHEAD``.

    Example:
        >>> [round(s, 2) for s in epoch_seconds(1000, 300, 300, 100.0)]
        [14.85, 1.0]
    """
    eval_ips = 3 * train_ips
    return (n_train / train_ips + n_val / eval_ips) * EPOCH_OVERHEAD, n_test / eval_ips


def epochs_within(seconds: float, epoch_s: float, epochs: int) -> int:
    """How many of ``epochs`` epochs of ``epoch_s`` seconds fit in ``seconds`` (may be 0 or less:
    the caller decides the floor).  Example: ``epochs_within(100, 30, 20)`` is 3."""
    return min(epochs, int(seconds // epoch_s))


def _candidate(recipe, cfg, pretrained: PretrainedModel, native, grey, n_train, n_all, sim, rt,
               budget_s, spent, size: int | None = None) -> Candidate:
    n_eval = n_all - n_train
    decode = n_all / max(sim["decode_images_per_second"] * max(1, num_workers(cfg.data.num_workers)), 1e-6)
    if recipe == "feature-extraction":  # one frozen forward pass; the head's epochs cost ~nothing
        size, ips = sim["input_size"], sim["feature_images_per_second"]
        seconds = decode + n_all / ips
        fits = budget_s is None or spent + seconds <= budget_s
        return Candidate(recipe, cfg.model.name, size, False, round(ips, 1), cfg.train.epochs,
                         round(seconds, 1), fits, 0.0, round(seconds, 1))
    if recipe == "scratch":
        name = SCRATCH_MODEL_LARGE if n_train >= LARGE_TRAIN else SCRATCH_MODEL
        size, chans = native, 1 if grey else 3
        net, _ = create(name, 2, pretrained=False, in_chans=chans, input_size=size)
        ips = train_images_per_second(net, size, chans, _scratch_runtime(cfg, rt), batch=64)
    else:  # finetune, gradual: the same network and size (gradual's cost is bounded by finetune's)
        name, size = cfg.model.name, size or finetune_size(native, sim["input_size"])
        ips = pretrained.train_ips(size, rt)
    n_val = max(0, round(n_eval / 2))
    epoch_s, test_s = epoch_seconds(n_train, n_val, n_eval - n_val, ips)
    fixed = decode * (0.2 if size < 64 else 1.0) + test_s
    epochs = cfg.train.epochs
    if budget_s is not None:
        epochs = epochs_within(budget_s - spent - fixed, epoch_s, epochs)
    fits = epochs >= min(MIN_EPOCHS, cfg.train.epochs)
    epochs = max(epochs, 1)
    return Candidate(recipe, name, size, grey and recipe == "scratch", round(ips, 1), epochs,
                     round(fixed + epochs * epoch_s, 1), fits, round(epoch_s, 3), round(fixed, 1))


def _scratch_runtime(cfg: TrainConfig, rt: Runtime) -> Runtime:
    """The runtime a from-scratch recipe trains with: bf16 autocast where the CPU does it
    natively (mixed precision is the usual way to train a network from scratch; float32 weights)."""
    return fast_runtime(rt) if cfg.train.cpu_amp == "off" else rt


def _changes(cfg: TrainConfig, c: Candidate, sim: dict, rt: Runtime) -> dict:
    """The settings that make the chosen candidate."""
    changes = {"train.epochs": c.epochs}
    if c.recipe == "scratch":
        changes.update({"strategy.name": "finetune", "model.name": c.model, "model.pretrained": False,
                        "model.weights": None, "preprocess.size": c.size, "preprocess.grayscale": c.grey})
        if _scratch_runtime(cfg, rt) is not rt:
            changes["train.cpu_amp"] = "auto"
        return changes
    changes["strategy.name"] = c.recipe
    if c.size != sim["input_size"]:
        changes["preprocess.size"] = c.size
    if c.recipe == "finetune" and cfg.optim.lr is None:
        rate = "low" if sim["skill"] >= SIMILAR_SKILL else "high"
        if (rate, cfg.optim.name) in RATES:
            changes["optim.lr"] = RATES[(rate, cfg.optim.name)]
    return changes


def _reasoning(cfg, chosen, cands, why, native, grey, n_train, sim, budget_s, changes, seconds,
               ranking_order) -> dict:
    """What was measured and why this recipe, as data and as plain sentences (run.json, report)."""
    budget = "" if budget_s is None else f"{cfg.train.budget:g} min budget ({budget_s / 60:.1f} planned)"
    plain = [f"data: {n_train} training images, median shorter side {native} px"
             + (", grey" if grey else "") + ".",
             f"similarity to {cfg.model.name}'s pretraining: 5-NN skill {sim['skill']:.2f} on its frozen "
             f"features vs {sim['pixel_skill']:.2f} on raw pixels; pretraining adds {sim['feature_gain']:.2f} "
             f"({'far' if sim['feature_gain'] < FAR_GAIN else 'near'}; far when below {FAR_GAIN})"
             + (" [measured by an earlier run on these files, cached]." if sim.get("cached") else "."),
             f"ranking: {why}.",
             *(f"candidate {c.name} ({c.model} at {c.size} px{', grey' if c.grey else ''}): "
               f"{c.images_per_second:g} images/s, "
               + ("one forward pass" if c.recipe == "feature-extraction" else f"{c.epochs} epochs")
               + f" ~{_minutes(c.seconds)}{'' if c.fits else ', does not fit the budget'}" for c in cands),
             f"chosen: {chosen.recipe} ({_describe(changes)}) "
             f"{'with no budget' if budget_s is None else 'within the ' + budget}; measuring took "
             f"{seconds:.0f} s."]
    return {"decision": f"{chosen.recipe}: {why}", "plain": plain, "budget_minutes": cfg.train.budget,
            "native_size": native, "grey": grey, "n_train": n_train, "ranking": ranking_order,
            "measurements": sim,
            "candidates": [asdict(c) for c in cands], "chosen": chosen.recipe,
            "settings": changes, "measure_seconds": round(seconds, 1)}


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _describe(changes: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items())


def budget_deadline(cfg: TrainConfig, started: float) -> float | None:
    """``time.monotonic()`` value at which training stops (``started`` + the budget), or None."""
    return None if cfg.train.budget is None else started + cfg.train.budget * 60
