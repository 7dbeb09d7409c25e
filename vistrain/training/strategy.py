"""Transfer-learning strategies: pick one, build its plan, and run it with the one epoch driver ``fit``.

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
* ``auto``: :mod:`vistrain.training.auto` picks one of these (or a from-scratch network) by
  measurement before the data is prepared; ``ctx.auto`` holds its reasoning.

What each strategy does is a :class:`~vistrain.training.plan.TrainingPlan`
(:func:`~vistrain.training.plan.build_plan`); :func:`fit` runs any plan, with best-checkpointing,
early stopping and exact resume, and returns a :class:`FitResult`.

Example:
    >>> from vistrain.training.strategy import STRATEGIES
    >>> "finetune" in STRATEGIES and "gradual" in STRATEGIES
    True
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from vistrain import fsutil
from vistrain.config import choices
from vistrain.config.spelling import option
from vistrain.device import unwrap
from vistrain.errors import VistrainError
from vistrain.training import checkpoint as ckpt
from vistrain.training.balance import apply_balance, decide
from vistrain.training.context import RunContext
from vistrain.training.loop import BatchPipeline, diverged, evaluate, is_better, train_one_epoch
from vistrain.training.optim import build_optimizer, build_scheduler
from vistrain.training.plan import TrainingPlan, build_plan

log = logging.getLogger("vistrain")

STRATEGIES = choices("strategy.name")  # one table: vistrain.config


@dataclass
class FitResult:
    """What training produced besides the weights (left in the model).

    ``history``: one row per epoch (``{"epoch", "train_loss", "val_accuracy", ...}``);
    ``record``: what was done (strategy, reasoning, parameter groups, ...), saved in run.json;
    ``features``: the ``(N, D)`` backbone features of every image when a frozen backbone's features
    were used (the final evaluation goes through the installed head only), else None.
    """
    history: list[dict]
    record: dict = field(default_factory=dict)
    features: np.ndarray | None = None


def train_model(ctx: RunContext, *, resume: bool = False, features: np.ndarray | None = None) -> FitResult:
    """Resolve ``ctx.cfg.strategy.name`` (``auto`` is resolved before, by :mod:`vistrain.training.auto`),
    build its plan and fit it.  ``features``: the frozen backbone's ``(N, D)`` features when the
    caller holds them (the recipe race computed them), so they are not computed again."""
    cfg, data = ctx.cfg, ctx.data
    name = cfg.strategy.name
    if name not in STRATEGIES:
        raise VistrainError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "auto":
        raise VistrainError("strategy auto is resolved before the data is prepared "
                            "(vistrain.training.prepare.resolve_auto); prepare the run with it")
    record = {"requested": "auto" if ctx.auto else name}
    if ctx.auto:
        record["reasoning"] = ctx.auto
    record["balance"] = decide(cfg.data.balance, data.labels()[data.part_ids("train")], data.num_classes,
                                streamed=data.stream is not None and name != "feature-extraction")
    if name != "feature-extraction" and not ctx.pcfg.pretrained:
        log.info("training from scratch: every layer trainable")
    elif name == "feature-extraction" and not ctx.pcfg.pretrained:
        record["warning"] = "feature extraction on a randomly initialised backbone"
        log.warning("feature extraction with a randomly initialised backbone: the frozen features "
                    "are random, so only a linear head on noise is trained; use strategy finetune "
                    "(the CLI's default for vistrain/ models) or pretrained weights")
    record["strategy"] = name
    plan = build_plan(ctx, name, features=features if name == "feature-extraction" else None)
    result = fit(plan, ctx, resume=resume)
    return FitResult(result.history, {**record, **result.record}, result.features)


# ---- the epoch driver -------------------------------------------------------------------------
def fit(plan: TrainingPlan, ctx: RunContext, *, resume: bool = False, until: int | None = None) -> FitResult:
    """Run ``plan`` for ``plan.epochs`` with best-checkpointing into ``ctx.out``, early stopping
    and exact resume; the best weights are left in ``plan.model``, then ``plan.finish`` runs.

    ``until``: pause after that many epochs (of ``plan.epochs``: the learning-rate schedule is the
    whole run's); ``fit(..., resume=True)`` later continues from the checkpoint, as the recipe
    race (:mod:`vistrain.training.race`) does with the candidates it keeps.

    ``plan.on_epoch_start(epoch) -> bool`` (0-based epoch) runs before each epoch, resumed ones
    included (gradual unfreezing); True means it changed which parameters are trainable, so the
    DDP wrapper (which registers gradient hooks for the trainable parameters it was built with)
    is rebuilt.  A plan with ``solve`` (closed-form head) has no epoch loop.
    """
    if plan.solve is not None:
        model, history = plan.solve()
    else:
        model, history = plan.model, _epochs(plan, ctx, resume, until)
    if plan.finish is not None:
        plan.finish(model)
    return FitResult(history, plan.record, plan.features)


def _epochs(plan: TrainingPlan, ctx: RunContext, resume: bool, until: int | None = None) -> list[dict]:
    cfg, rt, out, model = ctx.cfg, ctx.rt, ctx.out, plan.model
    train_b, val_b = plan.train_batches(rt, cfg.train.seed), plan.val_batches()
    pipe, train_b = apply_balance(cfg.data.balance, plan.pipe, train_b, ctx.data.num_classes, rt.device,
                                  train_labels=plan.labels[plan.parts["train"]])
    optimizer = build_optimizer(plan.groups, cfg.optim, unwrap(model))
    epochs = plan.epochs
    scheduler = build_scheduler(optimizer, cfg.schedule, len(train_b), epochs)
    train_model_ = rt.wrap_ddp(model)
    state = _resume_state(out, model, optimizer, scheduler) if resume else None
    history, best, best_state, bad_epochs, start_epoch, within = [], None, None, 0, 0, None
    if state:
        history, best, best_state = state["history"], state["best"], state["best_state"]
        within = state.get("within")  # a checkpoint taken during epoch state["epoch"]
        bad_epochs, start_epoch = state["bad_epochs"], state["epoch"] + (0 if within else 1)
        torch.set_rng_state(state["rng"])
        if within:
            log.info("resumed in epoch %d after batch %d of %d", start_epoch + 1, within["batches_done"],
                     len(train_b))
        else:
            log.info("resumed from epoch %d", start_epoch)
    monitor = monitored_metric(cfg.train.monitor)
    every = cfg.train.checkpoint_minutes * 60 if cfg.train.checkpoint_minutes else None
    for epoch in range(start_epoch, epochs):
        train_b.set_epoch(epoch)
        resume_at = within if epoch == start_epoch else None
        if resume_at:
            train_b.load_state_dict({"epoch": epoch, "batches_done": resume_at["batches_done"]})
        if plan.on_epoch_start is not None and plan.on_epoch_start(epoch) and rt.distributed:
            train_model_ = rt.wrap_ddp(unwrap(model))

        def save(within=None, epoch=epoch):
            """last.pt after ``epoch`` (0-based), or within it at position ``within``."""
            state = {"model": ckpt.cpu_state(unwrap(model)), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                     "best": best, "best_state": best_state, "bad_epochs": bad_epochs,
                     "rng": torch.get_rng_state()}
            ckpt.save_checkpoint(out / "checkpoints" / "last.pt", state if within is None else
                                 dict(state, within=within))

        tr = train_one_epoch(train_model_, train_b, optimizer, pipe, rt, scheduler=scheduler,
                             grad_clip=cfg.optim.grad_clip, desc=f"epoch {epoch + 1}/{epochs}",
                             progress=ctx.progress, on_train_mode=plan.train_mode_hook(),
                             resume=resume_at, checkpoint=save, checkpoint_every_s=every,
                             epochs_after=epochs - epoch - 1,
                             stop=(lambda: _budget_spent(ctx, rt)) if ctx.deadline is not None else None)
        va = evaluate(model, val_b, BatchPipeline(normalize=pipe.normalize), rt)
        if not math.isfinite(va["loss"]):  # finite training losses, but the weights blew up
            raise diverged(va["loss"], optimizer, scheduler, len(train_b))
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
            save()
            if epoch == start_epoch:  # resumable now: a run this one replaced is no longer needed
                fsutil.discard_replaced(out)
        if cfg.train.patience and bad_epochs >= cfg.train.patience:
            log.info("early stopping: val %s did not improve for %d epochs", monitor, bad_epochs)
            break
        if tr["stopped"] is not None:  # the budget ran out within the epoch: it ends there
            log.warning("budget: training time up after %d of %d batches of epoch %d of %d (%g min "
                        "budget); stopping with the best epoch so far (--budget none lifts the limit)",
                        tr["stopped"], len(train_b), epoch + 1, epochs, cfg.train.budget)
            plan.record["stopped_by_budget"] = {"after_epoch": epoch + 1, "of": epochs,
                                                "batches": [tr["stopped"], len(train_b)]}
            break
        if _budget_spent(ctx, rt) and epoch + 1 < epochs:
            log.warning("budget: training time up after epoch %d of %d (%g min budget); stopping with "
                        "the best epoch so far (--budget none lifts the limit)", epoch + 1, epochs,
                        cfg.train.budget)
            plan.record["stopped_by_budget"] = {"after_epoch": epoch + 1, "of": epochs}
            break
        if until is not None and epoch + 1 >= until:
            break  # paused: last.pt holds this epoch's state for a later resume
    if best_state is not None:
        unwrap(model).load_state_dict(best_state)
    return history


def _budget_spent(ctx: RunContext, rt) -> bool:
    """Whether the budget (``ctx.deadline``) is spent (rank 0's clock decides for every rank)."""
    if ctx.deadline is None:
        return False
    spent = torch.tensor([float(time.monotonic() >= ctx.deadline)], device=rt.device)
    if rt.distributed:
        torch.distributed.broadcast(spent, src=0)
    return bool(spent.item())


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
                                   f"config.yaml or start again with {option('overwrite')}") from None
    return state


def _log_epoch(row: dict, epochs: int) -> None:
    log.info("epoch %3d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f | lr %.2e | %.1fs",
             row["epoch"], epochs, row["train_loss"], row["train_accuracy"], row["val_loss"],
             row["val_accuracy"], row["lr"], row["seconds"])
