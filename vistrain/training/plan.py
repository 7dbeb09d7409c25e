"""The training plan: what a strategy decides, as one value that :func:`~vistrain.training.strategy.fit` runs.

:func:`build_plan` turns a :class:`~vistrain.training.context.RunContext` and a strategy name
into a :class:`TrainingPlan` -- the module to train and its optimizer parameter groups, the batch
pipeline, the arrays the batches are cut from (pixels or cached features), their labels and parts,
the BatchNorm policy, the gradual-unfreezing hook, epochs and batch size.  Training, the checks of
``vistrain check``, the LR range test and ``lr-find`` all build their set-up with it.

* ``feature-extraction`` (clean cache): the frozen backbone's pooled features, computed once and
  cached, standardized with the train part's statistics; a new linear head trains on them (or a
  logistic regression is solved in closed form) and ``finish`` installs it into the model.
* ``feature-extraction`` with ``feature_cache=live``: the head trains through the frozen backbone.
* ``finetune`` / ``gradual``: end to end, batch augmentation on the device; ``gradual`` unfreezes
  one layer group at a time (``on_epoch_start``) with ULMFiT's discriminative rates by default.

Building a plan never changes ``ctx.cfg``; it sets ``requires_grad`` flags (and, for feature
extraction, eval mode) on ``ctx.model``, the module it trains.

Example:
    >>> default_lr("feature-extraction", "adamw"), default_lr("finetune", "adamw")
    (0.001, 0.0001)
    >>> default_lr("finetune", "adamw", pretrained=False)  # from scratch: every weight is random
    0.001
    >>> unfreeze_plan(4, epochs=5, every=2)        # trainable_from per epoch (4 groups: 0..3)
    [3, 3, 2, 2, 1]
    >>> unfreeze_plan(4, epochs=5, at_epochs=[2, 3])
    [3, 2, 1, 1, 1]
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from torch import nn

from vistrain.data.cache.budget import default_cache_dir
from vistrain.data.loader import ArrayBatches
from vistrain.data.stream import PixelStream, in_order
from vistrain.device import Runtime, unwrap
from vistrain.errors import VistrainError
from vistrain.training.context import RunContext
from vistrain.training.features import (LinearHead, cached_features, extract_features,
                                        fit_logistic_regression, fold_standardization, install_head,
                                        known_features, run_feature_key, select_logreg_c, standardize,
                                        standardizer)
from vistrain.training.layers import bn_policy_hook, layer_groups, set_trainable, trainable_groups
from vistrain.training.loop import BatchPipeline, evaluate
from vistrain.transforms.presets import build_augmentation, describe

log = logging.getLogger("vistrain")

GRADUAL_LR_FACTOR = 2.6  # ULMFiT (Howard & Ruder 2018): lr of group i-1 = lr of group i / 2.6
BN_POLICY = {"all": "all BatchNorm statistics frozen (eval mode)",
             "frozen-layers": "BatchNorm of frozen layers in eval mode, others train"}


@dataclass
class TrainingPlan:
    """One training recipe; :func:`~vistrain.training.strategy.fit` runs it.

    ``array`` is what batches are cut from: ``(N_all, C, S, S)`` uint8 pixels (positions are rows
    of the pixel cache) or ``(N, D)`` float32 standardized features (positions are indices into
    the data set); ``labels`` is ``(len(array),)`` int64, one label per position; ``parts`` maps
    ``"train"``/``"val"`` to positions.  ``groups`` are the optimizer's parameter groups
    (``[{"name", "lr", "params"}, ...]``, stem first).  ``solve`` (a closed-form head: logistic
    regression) replaces the epoch loop and returns ``(head, history)``; ``finish(trained)`` runs
    after training (installs a feature head into the model).  ``features``: the ``(N, D)`` raw
    backbone features (feature extraction), which the final evaluation reuses.  ``record``: what
    the plan decided, for ``run.json``.
    """
    kind: str                              # "features" | "end-to-end"
    model: nn.Module | None
    groups: list[dict]
    pipe: BatchPipeline
    array: np.ndarray
    labels: np.ndarray
    parts: dict[str, np.ndarray]
    batch_size: int
    epochs: int
    train_array: np.ndarray | None = None  # same positions, larger train-time pixels
    bn_mode: str | None = None             # "all" | "frozen-layers" | None (no BatchNorm policy)
    on_epoch_start: Callable[[int], bool] | None = None  # gradual unfreezing (0-based epoch)
    solve: Callable[[], tuple[nn.Module, list[dict]]] | None = None
    finish: Callable[[nn.Module], None] | None = None
    features: np.ndarray | None = None
    record: dict = field(default_factory=dict)
    # streamed pixels (``array`` is None, positions are indices into the data set); the train
    # part is decoded as the train square when ``stream_train_square``
    stream: PixelStream | None = None
    stream_train_square: bool = False

    def train_batches(self, rt: Runtime, seed: int, *, drop_last: bool = True):
        """Shuffled batches of the train part (``train_array`` when set); ``drop_last`` drops
        a last partial batch when there is more than one batch."""
        idx = self.parts["train"]
        drop = drop_last and len(idx) > self.batch_size
        if self.stream is not None:
            return self.stream.batches(idx, part="train", train=self.stream_train_square,
                                       batch_size=self.batch_size, shuffle=True, seed=seed, drop_last=drop,
                                       rank=rt.rank, world_size=rt.world_size,
                                       pin_memory=rt.device.type == "cuda")
        return ArrayBatches(self.array if self.train_array is None else self.train_array, self.labels,
                            batch_size=self.batch_size, indices=idx, shuffle=True, seed=seed,
                            drop_last=drop, rank=rt.rank, world_size=rt.world_size,
                            pin_memory=rt.device.type == "cuda")

    def val_batches(self):
        if self.stream is not None:
            if not len(self.parts["val"]):
                return []
            return self.stream.batches(self.parts["val"], part="val", batch_size=max(self.batch_size, 64))
        return ArrayBatches(self.array, self.labels, batch_size=max(self.batch_size, 64),
                            indices=self.parts["val"])

    def train_mode_hook(self) -> Callable[[nn.Module], None] | None:
        """What runs after ``model.train()``: the BatchNorm policy (None: nothing)."""
        return bn_policy_hook(self.bn_mode)


def default_lr(strategy: str, optimizer: str, pretrained: bool = True) -> float:
    """Base learning rate when ``optim.lr`` is unset: the rate ``train``, ``compare``, ``cv`` and
    ``check`` use.  Fine-tuning pretrained weights takes small steps (AdamW 1e-4) so as not to
    destroy them; a new head (feature extraction, the first stage of gradual unfreezing) and a
    network trained from scratch (``pretrained=False``: random weights, nothing to preserve) take
    AdamW's usual 1e-3 -- at 1e-4 a from-scratch net barely learns in a few epochs."""
    if strategy in ("feature-extraction", "gradual") or not pretrained:
        return 1e-3 if optimizer == "adamw" else 1e-2
    return 1e-4 if optimizer == "adamw" else 1e-2


def configured_lr(cfg, pretrained: bool) -> float:
    """The base learning rate a run of ``cfg`` trains with: ``optim.lr``, else :func:`default_lr`
    of its strategy (``auto`` counted as fine-tuning, its choice when nothing transfers)."""
    kind = cfg.strategy.name if cfg.strategy.name in ("feature-extraction", "gradual") else "finetune"
    return cfg.optim.lr or default_lr(kind, cfg.optim.name, pretrained)


def build_plan(ctx: RunContext, strategy: str, *, lr: float | None = None,
               features: np.ndarray | None = None) -> TrainingPlan:
    """The plan of ``strategy`` (``feature-extraction``, ``finetune`` or ``gradual``, not ``auto``)
    on ``ctx``.  ``lr`` replaces the base rate (``optim.lr``, else :func:`default_lr`), e.g. the
    auto recipe's; ``features``: the ``(N, D)`` backbone features when the caller holds them."""
    cfg = ctx.cfg
    if strategy == "feature-extraction":
        for p in ctx.model.parameters():
            p.requires_grad_(False)
        ctx.model.eval()  # frozen BatchNorm: running statistics stay those of pretraining
        if cfg.strategy.feature_cache != "live":
            return _feature_plan(ctx, lr, features)
        plan = _end_to_end_plan(ctx, strategy, lr)
        plan.record = {"feature_cache": "live (augmented features recomputed every epoch)", **plan.record}
        return plan
    if strategy in ("finetune", "gradual"):
        return _end_to_end_plan(ctx, strategy, lr)
    raise VistrainError(f"no plan for strategy {strategy!r}; choose feature-extraction, finetune or gradual")


# ---- feature extraction ---------------------------------------------------------------------
def run_features(ctx: RunContext, record: dict | None = None) -> tuple[np.ndarray, bool]:
    """``(N, D)`` pooled backbone features of every indexed image (index order) and whether they
    came from the feature cache.  Features this process already computed (strategy auto's
    sample) are reused, not computed again.  ``record`` receives the engine used (run.json)."""
    data, rt = ctx.data, ctx.rt
    pin = rt.device.type == "cuda"
    record = {} if record is None else record

    def compute() -> np.ndarray:
        if data.stream is not None:  # every image; the stream's order is put back to index order
            batches, order = data.stream.eval_batches(data.rows, batch_size=64, pin_memory=pin)
            feats = extract_features(ctx.model, batches, ctx.pre.normalize, rt,
                                     progress=ctx.progress and rt.is_main, record=record)
            return in_order(feats, order, data.rows)
        known = known_features(ctx.model, ctx.pre, rt, data.index.paths[:len(data.rows)])
        todo = np.asarray([i for i in range(len(data.rows)) if i not in known], np.int64)
        batches = ArrayBatches(data.pixels, np.zeros(len(data.pixels), np.int64), batch_size=64,
                               indices=np.asarray(data.rows)[todo], pin_memory=pin)
        feats = extract_features(ctx.model, batches, ctx.pre.normalize, rt,
                                 progress=ctx.progress and rt.is_main, record=record)
        if not known:
            return feats
        out = np.empty((len(data.rows), len(next(iter(known.values())))), np.float32)
        out[todo] = feats
        for i, row in known.items():
            out[i] = row
        record["reused_sample_features"] = len(known)
        return out

    key = run_feature_key(ctx.cfg, ctx.pcfg, ctx.pre, data, rt)
    cache_dir = None if ctx.cfg.data.cache == "off" else default_cache_dir() / "features"
    dim = getattr(ctx.model, "num_features", None)  # float32 features: room checked before computing
    return cached_features(cache_dir, key, compute, rows=len(data.rows),
                           expected_bytes=len(data.rows) * dim * 4 if dim else None)


def _feature_plan(ctx: RunContext, lr: float | None, features: np.ndarray | None) -> TrainingPlan:
    cfg, data, rt = ctx.cfg, ctx.data, ctx.rt
    record = {"feature_cache": "clean (cached, un-augmented)"}
    dim = getattr(ctx.model, "num_features", None)
    if dim:  # float32 (N, D): known, and checked against the free disk, before computing
        record["feature_cache_estimate_bytes"] = len(data.rows) * dim * 4
    if features is None:
        t = time.perf_counter()
        engine: dict = {}
        features, hit = run_features(ctx, engine)
        record.update(feature_seconds=round(time.perf_counter() - t, 2), feature_cache_hit=hit)
        if engine:
            record["feature_engine"] = engine
        log.info("features: %s %s in %.1fs", features.shape, "loaded from cache" if hit else "computed",
                 record["feature_seconds"])
    train_idx, labels = data.part_ids("train"), data.labels()
    mu, sd = standardizer(features[train_idx])  # train split only, like every statistic
    z = standardize(features, mu, sd)
    parts = {"train": train_idx, "val": data.part_ids("val")}
    batch_size = max(cfg.data.batch_size, 64)
    pipe = BatchPipeline(label_smoothing=cfg.optim.label_smoothing)
    if cfg.strategy.head == "logreg":
        return TrainingPlan("features", None, [], pipe, z, labels, parts, batch_size, 1,
                            solve=lambda: _solve_logreg(ctx, features, record),
                            finish=lambda head: install_head(ctx.model, head),
                            features=features, record=record)
    head = rt.prepare_model(LinearHead(features.shape[1], data.num_classes, cfg.model.drop_rate))
    base_lr = lr or cfg.optim.lr or default_lr("feature-extraction", cfg.optim.name)
    groups = [{"params": [p for p in head.parameters() if p.requires_grad], "lr": base_lr}]
    return TrainingPlan("features", head, groups, pipe, z, labels, parts, batch_size, cfg.train.epochs,
                        finish=lambda h: install_head(ctx.model, fold_standardization(unwrap(h).cpu(), mu, sd)),
                        features=features, record=record)


def _solve_logreg(ctx: RunContext, feats: np.ndarray, record: dict) -> tuple[LinearHead, list[dict]]:
    """Logistic regression on the raw features (C from ``logreg_c``, else chosen on the validation
    part); returns ``(head acting on raw features, [one history row])``."""
    cfg, data = ctx.cfg, ctx.data
    labels, k = data.labels(), data.num_classes
    train_idx, val_idx = data.part_ids("train"), data.part_ids("val")
    c, head = cfg.strategy.logreg_c, None
    if c is None and len(val_idx):
        c, scores, head = select_logreg_c(feats[train_idx], labels[train_idx], feats[val_idx],
                                          labels[val_idx], k, seed=cfg.train.seed)
        record["logreg_c_val_accuracy"] = {str(key): v for key, v in scores.items()}
        log.info("logistic regression: C=%g chosen on the validation part (%s)", c,
                 ", ".join(f"C={key:g}: {v:.4f}" for key, v in scores.items()))
    c = 1.0 if c is None else c
    record["logreg_c"] = c
    if head is None:
        head = fit_logistic_regression(feats[train_idx], labels[train_idx], k, seed=cfg.train.seed, C=c)
    row = {"epoch": 1}
    for part, idx in (("train", train_idx), ("val", val_idx)):
        if len(idx):
            res = evaluate(head, ArrayBatches(feats, labels, batch_size=256, indices=idx),
                           BatchPipeline(), ctx.rt)
            row.update({f"{part}_loss": res["loss"], f"{part}_accuracy": res["accuracy"]})
    return head, [row]


# ---- end to end -------------------------------------------------------------------------------
def _end_to_end_plan(ctx: RunContext, strategy: str, lr: float | None) -> TrainingPlan:
    """Fine-tuning, gradual unfreezing, or a head through the frozen backbone (live features)."""
    cfg, model, data = ctx.cfg, ctx.model, ctx.data
    head_only, gradual = strategy == "feature-extraction", strategy == "gradual"
    base_lr = lr or cfg.optim.lr or default_lr(strategy, cfg.optim.name, ctx.pcfg.pretrained)
    n_groups, record, hook = len(layer_groups(unwrap(model))), {}, None
    if gradual and not (cfg.strategy.lr_factor or cfg.strategy.group_lrs):
        cfg = replace(cfg, strategy=replace(cfg.strategy, lr_factor=GRADUAL_LR_FACTOR))  # a copy
        record["lr_factor"] = f"{GRADUAL_LR_FACTOR} (ULMFiT default for gradual unfreezing)"
    groups, bn_mode = trainable_groups(cfg, model, head_only=head_only, base_lr=base_lr,
                                       n_train=len(data.parts["train"]), pretrained=ctx.pcfg.pretrained,
                                       trainable_from=n_groups - 1 if gradual else None)
    if gradual:
        hook = GradualUnfreezer(model, unfreeze_plan(n_groups, cfg.train.epochs, cfg.strategy.unfreeze_every,
                                                     cfg.strategy.unfreeze_epochs), record)
    record["param_groups"] = [{"name": g.get("name", ""), "lr": g["lr"]} for g in groups]
    record["bn_policy"] = BN_POLICY[bn_mode]
    augment, mix = build_batch_augmentation(cfg, ctx.pre, data.num_classes, record)
    pipe = BatchPipeline(normalize=ctx.pre.normalize, augment=augment, mix=mix,
                         label_smoothing=cfg.optim.label_smoothing)
    if data.stream is not None:
        return _streamed_plan(ctx, model, groups, pipe, bn_mode, hook, record, augment is not None)
    train_pixels = data.train_pixels if augment is not None else None
    if train_pixels is not None:
        record["train_pixels"] = (f"train images cached at {train_pixels.shape[-1]}px (shorter side + "
                                  f"centre square), random resized crop to {ctx.pre.size}; eval: {ctx.pre.describe()}")
    row_labels = np.zeros(len(data.pixels), np.int64)
    row_labels[data.rows] = data.labels()
    return TrainingPlan("end-to-end", model, groups, pipe, data.pixels, row_labels,
                        {"train": data.part_rows("train"), "val": data.part_rows("val")},
                        cfg.data.batch_size, cfg.train.epochs, train_array=train_pixels,
                        bn_mode=bn_mode, on_epoch_start=hook, record=record)


def _streamed_plan(ctx: RunContext, model, groups, pipe, bn_mode, hook, record, augmenting: bool):
    """The end-to-end plan over streamed pixels: the same recipe, batches decoded per step."""
    cfg, data = ctx.cfg, ctx.data
    square = augmenting and data.stream.train_size is not None
    record["pixels"] = data.stream.describe()
    if square:
        record["train_pixels"] = (f"train images decoded at {data.stream.train_size}px (shorter side + "
                                  f"centre square), random resized crop to {ctx.pre.size}; eval: {ctx.pre.describe()}")
    return TrainingPlan("end-to-end", model, groups, pipe, None, data.labels(),
                        {"train": data.part_ids("train"), "val": data.part_ids("val")},
                        cfg.data.batch_size, cfg.train.epochs, bn_mode=bn_mode, on_epoch_start=hook,
                        record=record, stream=data.stream, stream_train_square=square)


def build_batch_augmentation(cfg, pre, num_classes, record):
    """Batch augmentation (train only) and mixup/cutmix from ``cfg.augment``."""
    # no label_smoothing here: BatchPipeline.loss smooths the mixer's soft targets itself
    augment, mix = build_augmentation(cfg.augment, pre.size, num_classes)
    record["augmentation"] = describe(cfg.augment, pre.size)
    return augment, mix


# ---- gradual unfreezing ----------------------------------------------------------------------
def unfreeze_plan(n_groups: int, epochs: int, every: int = 1, at_epochs=None) -> list[int]:
    """Index of the first trainable group at each epoch (0-based list, one entry per epoch).

    Epoch 1 trains the head (group ``n_groups - 1``) alone; each unfreezing step lowers the index by
    one, down to 0 (the stem): every ``every`` epochs, or at the start of each 1-based epoch listed
    in ``at_epochs``.
    """
    if at_epochs:
        bad = [e for e in at_epochs if not isinstance(e, int) or e < 2]
        if bad:
            raise VistrainError(f"strategy.unfreeze_epochs: {bad} invalid; give 1-based epochs >= 2 "
                                "(epoch 1 always trains the head alone), e.g. [2, 4, 6]")
        starts = sorted(at_epochs)
        steps = [sum(1 for e in starts if e <= ep + 1) for ep in range(epochs)]
    else:
        if not isinstance(every, int) or every < 1:
            raise VistrainError(f"strategy.unfreeze_every={every!r}: give a whole number of epochs >= 1")
        steps = [ep // every for ep in range(epochs)]
    return [max(0, n_groups - 1 - s) for s in steps]


class GradualUnfreezer:
    """Per-epoch hook of a plan: sets ``requires_grad`` per the schedule (stateless in the epoch,
    so a resumed run lands on the same stage) and records the schedule in ``record``."""

    def __init__(self, model, plan: list[int], record: dict):
        self.groups, self.plan, self.record = layer_groups(unwrap(model)), plan, record
        self.names = [name for name, _ in self.groups]
        record["unfreeze_schedule"] = self.schedule()

    def schedule(self) -> list[dict]:
        out, last = [], None
        for ep, start in enumerate(self.plan):
            if start != last:
                out.append({"epoch": ep + 1, "trainable_from": self.names[start],
                            "trainable_groups": self.names[start:]})
                last = start
        return out

    def __call__(self, epoch: int) -> bool:
        """Apply the stage of ``epoch`` (0-based); True when the trainable set changed."""
        start = self.plan[min(epoch, len(self.plan) - 1)]
        before = [p.requires_grad for _, ps in self.groups for _, p in ps]
        set_trainable(self.groups, start)
        changed = before != [p.requires_grad for _, ps in self.groups for _, p in ps]
        if changed and (epoch == 0 or start != self.plan[epoch - 1]):
            log.info("gradual unfreezing: epoch %d trains %s", epoch + 1, ", ".join(self.names[start:]))
        return changed
