"""Transfer-learning strategies on top of the generic loop, and the epoch driver ``fit``.

* ``feature-extraction``: backbone frozen (BatchNorm statistics too); pooled features computed once
  and cached (``feature_cache=clean``) or recomputed with augmentation each epoch (``live``); a new
  linear head (optionally with dropout, or a logistic regression) trained on them, then installed
  as the model's classifier.
* ``finetune``: every layer trainable at a low learning rate, batch augmentation on the device.
* ``gradual``: ULMFiT-style gradual unfreezing. The head trains alone first, then one layer group
  at a time joins, from the last block back to the stem, every ``strategy.unfreeze_every`` epochs
  or at the 1-based epochs listed in ``strategy.unfreeze_epochs`` (epoch ``e`` in the list: the
  next group is unfrozen at the start of epoch ``e``).  The optimizer holds every group from the
  start (frozen parameters get no gradient, and AdamW/SGD skip parameters whose ``grad`` is None,
  weight decay included); unless ``lr_factor``/``group_lrs`` are given, discriminative rates with
  ULMFiT's factor 2.6 are used.  The schedule actually followed is in the run record.

Example:
    >>> from vistrain.training.strategy import default_lr
    >>> default_lr("feature-extraction", "adamw"), default_lr("finetune", "adamw")
    (0.001, 0.0001)
    >>> default_lr("finetune", "adamw", pretrained=False)  # from scratch: every weight is random
    0.001
    >>> from vistrain.training.strategy import unfreeze_plan
    >>> unfreeze_plan(4, epochs=5, every=2)        # trainable_from per epoch (4 groups: 0..3)
    [3, 3, 2, 2, 1]
    >>> unfreeze_plan(4, epochs=5, at_epochs=[2, 3])
    [3, 2, 1, 1, 1]
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from vistrain.data.loader import ArrayBatches
from vistrain import fsutil
from vistrain.config import choices
from vistrain.device import Runtime, unwrap
from vistrain.errors import VistrainError
from vistrain.transforms.presets import build_augmentation, describe
from vistrain.training import checkpoint as ckpt
from vistrain.training.loop import BatchPipeline, evaluate, is_better, train_one_epoch
from vistrain.training.optim import build_optimizer, build_scheduler

log = logging.getLogger("vistrain")

STRATEGIES = choices("strategy.name")  # one table: vistrain.config


GRADUAL_LR_FACTOR = 2.6  # ULMFiT (Howard & Ruder 2018): lr of group i-1 = lr of group i / 2.6


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
    of its strategy (``auto`` counted as fine-tuning, the advisor's choice when nothing transfers)."""
    kind = cfg.strategy.name if cfg.strategy.name in ("feature-extraction", "gradual") else "finetune"
    return cfg.optim.lr or default_lr(kind, cfg.optim.name, pretrained)


def train_model(cfg, model, pcfg, pre, data, rt: Runtime, out: Path, *, resume=False, progress=True):
    """Dispatch on ``cfg.strategy.name``; returns ``(history, record)`` (record: what was done)."""
    name = cfg.strategy.name
    if name not in STRATEGIES:
        raise VistrainError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    record = {"requested": name}
    from vistrain.training.balance import decide  # what fit's apply_balance applies (train part counts)
    record["balance"] = decide(cfg.data.balance, data.labels()[np.asarray(data.parts["train"], dtype=np.int64)],
                               len(data.index.classes))
    if name == "auto":
        name, reasoning = choose_strategy(cfg, model, pre, data, rt)
        record["reasoning"] = reasoning
    if name != "feature-extraction" and not pcfg.pretrained:
        log.info("training from scratch: every layer trainable")
    elif name == "feature-extraction" and not pcfg.pretrained:
        record["warning"] = "feature extraction on a randomly initialised backbone"
        log.warning("feature extraction with a randomly initialised backbone: the frozen features "
                    "are random, so only a linear head on noise is trained; use strategy finetune "
                    "(the CLI's default for vistrain/ models) or pretrained weights")
    record["strategy"] = name
    if name == "feature-extraction":
        history = train_on_features(cfg, model, pcfg, pre, data, rt, out, resume=resume,
                                    progress=progress, record=record)
    else:
        history = train_end_to_end(cfg, model, pcfg, pre, data, rt, out, resume=resume,
                                   progress=progress, record=record, gradual=name == "gradual")
    return history, record


def choose_strategy(cfg, model, pre, data, rt):
    """Size x similarity advisor (see vistrain.training.advisor)."""
    from vistrain.training.advisor import advise
    return advise(cfg, model, pre, data, rt)


# ---- feature extraction ---------------------------------------------------------------------
def run_features(cfg, model, pcfg, pre, data, rt, *, progress: bool) -> tuple[np.ndarray, bool]:
    """``(N, D)`` pooled backbone features of every indexed image (index order) and whether they
    came from the feature cache: what the feature-extraction head trains on, and what
    ``vistrain check`` and ``lr-find`` test it on.  ``model`` is set to eval / channels_last."""
    from vistrain.data.cache import default_cache_dir
    from vistrain.training.features import cached_features, extract_features, run_feature_key
    batches = ArrayBatches(data.pixels, np.zeros(len(data.pixels), np.int64), batch_size=64,
                           indices=data.rows, pin_memory=rt.device.type == "cuda")
    key = run_feature_key(cfg, pcfg, pre, data, rt)
    cache_dir = None if cfg.data.cache == "off" else default_cache_dir() / "features"
    dim = getattr(model, "num_features", None)  # float32 features: room checked before computing
    return cached_features(cache_dir, key, lambda: extract_features(
        model, batches, pre.normalize, rt, progress=progress and rt.is_main),
        rows=len(data.rows), expected_bytes=len(data.rows) * dim * 4 if dim else None)


def train_on_features(cfg, model, pcfg, pre, data, rt, out, *, resume, progress, record):
    from vistrain.training.features import (LinearHead, fit_logistic_regression, select_logreg_c,
                                         fold_standardization, install_head, standardize,
                                         standardizer)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()  # frozen BatchNorm: running statistics stay those of pretraining
    if cfg.strategy.feature_cache == "live":
        record["feature_cache"] = "live (augmented features recomputed every epoch)"
        return train_end_to_end(cfg, model, pcfg, pre, data, rt, out, resume=resume,
                                progress=progress, record=record, head_only=True)
    t = time.perf_counter()
    feats, hit = run_features(cfg, model, pcfg, pre, data, rt, progress=progress)
    record["feature_cache"] = "clean (cached, un-augmented)"
    record["feature_seconds"] = round(time.perf_counter() - t, 2)
    record["feature_cache_hit"] = hit
    log.info("features: %s %s in %.1fs", feats.shape, "loaded from cache" if hit else "computed",
             record["feature_seconds"])
    labels, k = data.labels(), len(data.index.classes)
    train_idx = np.asarray(data.parts["train"])
    if cfg.strategy.head == "logreg":
        c, head = cfg.strategy.logreg_c, None
        val_idx = np.asarray(data.parts.get("val", []))
        if c is None and len(val_idx):
            c, scores, head = select_logreg_c(feats[train_idx], labels[train_idx], feats[val_idx],
                                              labels[val_idx], k, seed=cfg.train.seed)
            record["logreg_c_val_accuracy"] = {str(key): v for key, v in scores.items()}
            log.info("logistic regression: C=%g chosen on the validation part (%s)", c,
                     ", ".join(f"C={key:g}: {v:.4f}" for key, v in scores.items()))
        c = 1.0 if c is None else c
        record["logreg_c"] = c
        if head is None:
            head = fit_logistic_regression(feats[train_idx], labels[train_idx], k,
                                           seed=cfg.train.seed, C=c)
        history = [_feature_epoch_metrics(head, feats, labels, data, rt)]
    else:
        mu, sd = standardizer(feats[train_idx])  # train split only, like every statistic
        z = standardize(feats, mu, sd)
        head = rt.prepare_model(LinearHead(feats.shape[1], k, cfg.model.drop_rate))
        history = fit(cfg, head, z, labels, data, BatchPipeline(label_smoothing=cfg.optim.label_smoothing),
                      rt, out, resume=resume, progress=progress,
                      lr=cfg.optim.lr or default_lr("feature-extraction", cfg.optim.name),
                      batch_size=max(cfg.data.batch_size, 64), indices_are_rows=False)
        head = fold_standardization(unwrap(head).cpu(), mu, sd)
    install_head(model, head)
    record["eval_features"] = feats  # final evaluation reuses them (popped before saving)
    return history


def _feature_epoch_metrics(head, feats, labels, data, rt):
    out = {"epoch": 1}
    for part in ("train", "val"):
        idx = np.asarray(data.parts.get(part, []))
        if len(idx):
            res = evaluate(head, ArrayBatches(feats, labels, batch_size=256, indices=idx),
                           BatchPipeline(), rt)
            out.update({f"{part}_loss": res["loss"], f"{part}_accuracy": res["accuracy"]})
    return out


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
    """Per-epoch hook for :func:`fit`: sets ``requires_grad`` per the plan (stateless in the epoch,
    so a resumed run lands on the same stage) and records the schedule."""

    def __init__(self, model, plan: list[int], record: dict):
        from vistrain.training.layers import layer_groups
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
        from vistrain.training.layers import set_trainable
        start = self.plan[min(epoch, len(self.plan) - 1)]
        before = [p.requires_grad for _, ps in self.groups for _, p in ps]
        set_trainable(self.groups, start)
        changed = before != [p.requires_grad for _, ps in self.groups for _, p in ps]
        if changed and (epoch == 0 or start != self.plan[epoch - 1]):
            log.info("gradual unfreezing: epoch %d trains %s", epoch + 1, ", ".join(self.names[start:]))
        return changed


# ---- end to end -------------------------------------------------------------------------------
def train_end_to_end(cfg, model, pcfg, pre, data, rt, out, *, resume, progress, record,
                     head_only=False, gradual=False):
    from vistrain.training.layers import layer_groups, trainable_groups
    kind = "feature-extraction" if head_only else "gradual" if gradual else "finetune"
    base_lr = cfg.optim.lr or default_lr(kind, cfg.optim.name, pcfg.pretrained)
    hook, n_groups = None, len(layer_groups(unwrap(model)))
    if gradual and not (cfg.strategy.lr_factor or cfg.strategy.group_lrs):
        cfg.strategy.lr_factor = GRADUAL_LR_FACTOR
        record["lr_factor"] = f"{GRADUAL_LR_FACTOR} (ULMFiT default for gradual unfreezing)"
    groups, bn_mode = trainable_groups(cfg, model, head_only=head_only, base_lr=base_lr,
                                       n_train=len(data.parts["train"]), pretrained=pcfg.pretrained,
                                       trainable_from=n_groups - 1 if gradual else None)
    if gradual:
        plan = unfreeze_plan(n_groups, cfg.train.epochs, cfg.strategy.unfreeze_every,
                             cfg.strategy.unfreeze_epochs)
        hook = GradualUnfreezer(model, plan, record)
    record["param_groups"] = [{"name": g.get("name", ""), "lr": g["lr"]} for g in groups]
    record["bn_policy"] = {"all": "all BatchNorm statistics frozen (eval mode)",
                           "frozen-layers": "BatchNorm of frozen layers in eval mode, others train"}[bn_mode]
    augment, mix = build_batch_augmentation(cfg, pre, len(data.index.classes), record)
    pipe = BatchPipeline(normalize=pre.normalize, augment=augment, mix=mix,
                         label_smoothing=cfg.optim.label_smoothing)
    train_pixels = getattr(data, "train_pixels", None) if augment is not None else None
    if train_pixels is not None:
        record["train_pixels"] = (f"train images cached at {train_pixels.shape[-1]}px (shorter side + "
                                  f"centre square), random resized crop to {pre.size}; eval: {pre.describe()}")
    return fit(cfg, model, data.pixels, data.labels(), data, pipe, rt, out, resume=resume,
               progress=progress, groups=groups, batch_size=cfg.data.batch_size,
               indices_are_rows=True, bn_mode=bn_mode, on_epoch_start=hook, train_array=train_pixels)


def build_batch_augmentation(cfg, pre, num_classes, record):
    """Batch augmentation (train only) and mixup/cutmix from ``cfg.augment``."""
    # no label_smoothing here: BatchPipeline.loss smooths the mixer's soft targets itself
    augment, mix = build_augmentation(cfg.augment, pre.size, num_classes)
    record["augmentation"] = describe(cfg.augment, pre.size)
    return augment, mix


# ---- the epoch driver -------------------------------------------------------------------------
def fit(cfg, model, array, labels, data, pipe, rt, out, *, resume, progress, batch_size,
        indices_are_rows, lr=None, groups=None, bn_mode=None, on_epoch_start=None, train_array=None):
    """Train for ``cfg.train.epochs`` with best-checkpointing, early stopping and exact resume.

    ``train_array`` (same rows as ``array``, e.g. larger train-time pixels) feeds the train batches.

    ``on_epoch_start(epoch) -> bool`` (0-based epoch) runs before each epoch, resumed ones included
    (gradual unfreezing); True means it changed which parameters are trainable, so the DDP wrapper
    (which registers gradient hooks for the trainable parameters it was built with) is rebuilt.
    """
    part = (lambda n: data.part_rows(n)) if indices_are_rows else (lambda n: np.asarray(data.parts[n]))
    row_labels = np.zeros(len(array), np.int64)
    if indices_are_rows:
        row_labels[data.rows] = labels
    else:
        row_labels = labels
    train_b = ArrayBatches(array if train_array is None else train_array, row_labels, batch_size=batch_size, indices=part("train"), shuffle=True,
                           seed=cfg.train.seed, drop_last=len(part("train")) > batch_size,
                           rank=rt.rank, world_size=rt.world_size, pin_memory=rt.device.type == "cuda")
    val_b = ArrayBatches(array, row_labels, batch_size=max(batch_size, 64), indices=part("val"))
    from vistrain.training.balance import apply_balance  # data.balance: class weights or balanced batches
    pipe, train_b = apply_balance(cfg.data.balance, pipe, train_b, len(data.index.classes), rt.device)
    groups = groups or [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    optimizer = build_optimizer(groups, cfg.optim, unwrap(model))
    epochs = cfg.train.epochs
    scheduler = build_scheduler(optimizer, cfg.schedule, len(train_b), epochs)
    train_model_ = rt.wrap_ddp(model)
    state = _resume_state(out, model, optimizer, scheduler) if resume else None
    history, best, best_state, bad_epochs = [], None, None, 0
    start_epoch = 0
    if state:
        history, best, best_state = state["history"], state["best"], state["best_state"]
        bad_epochs, start_epoch = state["bad_epochs"], state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        log.info("resumed from epoch %d", start_epoch)
    monitor = monitored_metric(cfg.train.monitor)
    for epoch in range(start_epoch, epochs):
        train_b.set_epoch(epoch)
        if on_epoch_start is not None and on_epoch_start(epoch) and rt.distributed:
            train_model_ = rt.wrap_ddp(unwrap(model))
        tr = train_one_epoch(train_model_, train_b, optimizer, pipe, rt, scheduler=scheduler,
                             grad_clip=cfg.optim.grad_clip, desc=f"epoch {epoch + 1}/{epochs}",
                             progress=progress, on_train_mode=_bn_hook(bn_mode))
        va = evaluate(model, val_b, BatchPipeline(normalize=pipe.normalize), rt)
        row = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
               "val_loss": va["loss"], "val_accuracy": va["accuracy"],
               "lr": optimizer.param_groups[-1]["lr"], "seconds": round(tr["seconds"], 3),
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        history.append(row)
        score = va[monitor]
        if is_better(score, best, monitor):
            best, best_state, bad_epochs = score, ckpt.cpu_state(unwrap(model)), 0
        else:
            bad_epochs += 1
        if rt.is_main:
            _log_epoch(row, epochs)
            ckpt.save_checkpoint(out / "checkpoints" / "last.pt", {
                "model": ckpt.cpu_state(unwrap(model)), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                "best": best, "best_state": best_state, "bad_epochs": bad_epochs,
                "rng": torch.get_rng_state()})
            if epoch == start_epoch:  # resumable now: a run this one replaced is no longer needed
                fsutil.discard_replaced(out)
        if cfg.train.patience and bad_epochs >= cfg.train.patience:
            log.info("early stopping: val %s did not improve for %d epochs", monitor, bad_epochs)
            break
    if best_state is not None:
        unwrap(model).load_state_dict(best_state)
    return history


def _bn_hook(bn_mode):
    if bn_mode is None:
        return None
    from vistrain.training.layers import apply_bn_policy
    return lambda m: apply_bn_policy(unwrap(m), bn_mode)


def monitored_metric(monitor: str) -> str:
    """The key of :func:`evaluate`'s result that ``train.monitor`` names (``val_loss`` -> ``loss``)."""
    metric = monitor[len("val_"):] if monitor.startswith("val_") else monitor
    if metric not in ("loss", "accuracy"):
        raise VistrainError(f"train.monitor={monitor!r}: choose one of {', '.join(choices('train.monitor'))}")
    return metric


def _resume_state(out, model, optimizer, scheduler):
    """Load the newest usable checkpoint (a damaged last.pt falls back to prev.pt) into the model,
    optimizer and scheduler; None when the run has none yet (it then starts from epoch 1)."""
    path = out / "checkpoints"
    state = ckpt.load_resume_checkpoint(path)
    if state is None:
        return None
    try:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:160]
        raise ckpt.CheckpointError(f"{path}: the checkpoint does not fit this model and these settings "
                                   f"({type(err).__name__}: {reason}); resume with the run's own "
                                   "config.yaml or start again with --overwrite") from None
    return state


def _log_epoch(row: dict, epochs: int) -> None:
    log.info("epoch %3d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f | lr %.2e | %.1fs",
             row["epoch"], epochs, row["train_loss"], row["train_accuracy"], row["val_loss"],
             row["val_accuracy"], row["lr"], row["seconds"])
