"""``train.budget`` for a named recipe (every strategy but ``auto``, which plans into the budget
while it chooses): an estimate before the first epoch, the epochs cut to fit, and the deadline.

Once the data is decoded and the checks have run, :func:`fit_to_budget` measures the run's own
model with strategy auto's estimator (:func:`~vistrain.training.auto.train_images_per_second`:
a few forward + backward steps on a deep copy; :func:`~vistrain.training.auto.epoch_seconds`:
the epoch overhead factor auto measured) and compares the estimate with what is left of the
budget (``BUDGET_SHARE`` of it planned, as auto does, the rest is slack for the report).  An
estimate over it is said in one log line, and the epochs are cut to fit (never below 1).  In any
case the epoch driver (:mod:`vistrain.training.strategy`) stops at the deadline with the best
epoch so far, recording ``stopped_by_budget``; the final evaluation and the report follow.  That
deadline is the budget less what comes after training (``reserve_seconds``: the slack, the
estimated val pass that ends the epoch and the final val and test passes): a run whose one epoch
does not fit stops early enough for its evaluated model to be ready at the budget, not the
evaluation's minutes after it.

Feature extraction is not measured: its cost is one frozen forward pass (and head epochs on
cached features, which cost next to nothing); only the deadline holds.  ``budget=None``
(``--budget none``) measures nothing and sets no deadline.  The decision goes into run.json
(``strategy.budget``) and the report's recipe section.

Example (no budget: nothing measured, nothing changed):
    >>> from types import SimpleNamespace
    >>> ctx = SimpleNamespace(deadline=None)
    >>> fit_to_budget(ctx) == (ctx, None)
    True
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace

import torch
import torch.distributed as dist

from vistrain.training.auto import BUDGET_SHARE, epoch_seconds, epochs_within, train_images_per_second
from vistrain.training.context import RunContext

log = logging.getLogger("vistrain")

MEASURE_BATCH = 16   # images per measured step at most: the measurement stays a few seconds


def fit_to_budget(ctx: RunContext, *, resume: bool = False) -> tuple[RunContext, dict | None]:
    """``(ctx with the epochs cut to fit the budget, the budget record)`` for a named recipe;
    ``(ctx, None)`` without a deadline.  Rank 0 measures and decides for every rank."""
    if ctx.deadline is None:
        return ctx, None
    box = [None]
    if ctx.rt.is_main:
        box[0] = _decide(ctx, resume)
    if ctx.rt.distributed:
        dist.broadcast_object_list(box, src=0)
    record = box[0]
    reserve = record.get("reserve_seconds") or 0.0
    ctx = replace(ctx, deadline=ctx.deadline - reserve) if reserve else ctx
    if record.get("cut_epochs") is None:
        return ctx, record
    cfg = copy.deepcopy(ctx.cfg)
    cfg.train.epochs = record["cut_epochs"]
    return replace(ctx, cfg=cfg), record


def _decide(ctx: RunContext, resume: bool) -> dict:
    cfg = ctx.cfg
    budget_min, epochs, name = cfg.train.budget, cfg.train.epochs, cfg.strategy.name
    left_s = ctx.deadline - time.monotonic()  # the budget less the scan, decoding and checks
    record = {"budget_minutes": budget_min, "left_seconds": round(left_s, 1), "epochs": epochs,
              "estimate_seconds": None, "cut_epochs": None}
    if resume:
        return {**record, "decision": "resumed: the epochs saved in config.yaml, not estimated "
                                      "again; training stops at the budget"}
    if name == "feature-extraction":
        return {**record, "decision": "not estimated (one frozen feature pass, then a head on the "
                                      "cached features); training stops at the budget"}
    return _estimate(ctx, record, left_s - slack_seconds(budget_min))


def slack_seconds(budget_min: float) -> float:
    """The part of a budget of ``budget_min`` minutes not planned for training and evaluation
    (``1 - BUDGET_SHARE``): the report, and the estimate's error."""
    return budget_min * 60 * (1 - BUDGET_SHARE)


def _estimate(ctx: RunContext, record: dict, planned_s: float) -> dict:
    """The measured estimate against ``planned_s`` seconds, and the cut (with its log line)."""
    cfg, data, epochs = ctx.cfg, ctx.data, ctx.cfg.train.epochs
    n_train, n_val = len(data.part_ids("train")), len(data.part_ids("val"))
    n_test = sum(len(data.part_ids(p)) for p in data.parts if p not in ("train", "val"))
    with torch.random.fork_rng():  # the measurement's random inputs and dropout leave the seeded
        # stream as it was: a run trains the same with or without a budget
        ips = train_images_per_second(ctx.model, ctx.pre.size, ctx.pre.channels, ctx.rt,
                                      batch=max(1, min(cfg.data.batch_size, MEASURE_BATCH)))
    epoch_s, test_s = epoch_seconds(n_train, n_val, n_test, ips)
    estimate = epochs * epoch_s + test_s
    # after the stop: the val pass that ends the epoch, then the final val and test passes
    _, after_s = epoch_seconds(0, 0, 2 * n_val + n_test, ips)
    record.update(images_per_second=round(ips, 1), epoch_seconds=round(epoch_s, 1),
                  estimate_seconds=round(estimate, 1),
                  reserve_seconds=round(slack_seconds(cfg.train.budget) + after_s, 1))
    what = f"{cfg.strategy.name}'s {epochs} epochs estimated at {_minutes(estimate)} ({ips:.0f} images/s)"
    room = f"the {cfg.train.budget:g} min budget ({_minutes(max(planned_s, 0))} planned after preparing)"
    if estimate <= planned_s:
        record["decision"] = f"fits: {what} within {room}"
        log.info("budget: %s fit %s", what, room)
        return record
    cut = max(1, epochs_within(planned_s - test_s, epoch_s, epochs))
    if cut < epochs:
        record["cut_epochs"] = cut
    then = (f"training {cut} epoch{'s' if cut != 1 else ''} instead" if cut < epochs else
            "the epochs cannot be cut further") + ", stopping at the budget if the estimate is short"
    record["decision"] = f"over: {what}, over {room}; {then}"
    log.warning("budget: %s, over %s; %s (--budget none lifts the limit)", what, room, then)
    return record


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
