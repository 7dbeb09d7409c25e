"""Learning-rate range test (Smith 2017; fastai's ``lr_find``).

The learning rate grows exponentially from ``start_lr`` (1e-7) to ``end_lr`` (10) over ``steps``
(100) training steps, one batch each (batches are cycled if there are fewer).  The loss is smoothed
with an exponential moving average (``beta=0.98``, bias-corrected) and the test stops early once
the smoothed loss exceeds ``diverge`` (4) times its minimum.

Suggested rate: the point of **steepest descent** of the smoothed loss against ``log10(lr)``
(most negative finite-difference slope between the first 10% of the steps, skipped as
moving-average warm-up, and the minimum); ``min_div_10`` (the rate of the
minimum smoothed loss divided by 10) is returned too.  The model's weights, buffers, train/eval
mode, ``requires_grad`` flags and the torch RNG state are restored afterwards: the test leaves the
model exactly as it found it.

One test for every entry point: :func:`run_range_test` sets it up from a run's settings for both
``vistrain lr-find`` and the ``lr-finder`` check of ``vistrain check``, so the same settings give
the same suggestion.  With ``feature-extraction`` (cached features) it trains the new linear head
alone on the cached, standardized features -- exactly what training optimises, in seconds;
otherwise it runs through the model (fine-tuning, gradual unfreezing, ``feature_cache=live``).

Example:
    >>> import torch, numpy as np
    >>> from vistrain.data.loader import ArrayBatches
    >>> from vistrain.device import Runtime
    >>> from vistrain.training.loop import BatchPipeline
    >>> from vistrain.training.lrfind import lr_range_test
    >>> x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int64")
    >>> head = torch.nn.Linear(8, 2)
    >>> res = lr_range_test(head, ArrayBatches(x, y, batch_size=32, shuffle=True), BatchPipeline(),
    ...                     Runtime.create("cpu"))
    >>> 1e-7 <= res["suggestion"] <= 10, sorted(res)[:3]
    (True, ['diverged_at', 'losses', 'lrs'])
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import replace

import numpy as np
import torch

from vistrain.config import OptimConfig
from vistrain.device import unwrap
from vistrain.errors import VistrainError
from vistrain.evaluation.png import new_figure, save_figure
from vistrain.training import optim
from vistrain.training.context import RunContext
from vistrain.training.loop import train_step
from vistrain.training.plan import TrainingPlan, build_plan, configured_lr

log = logging.getLogger("vistrain")


def lr_range_test(model, batches, pipeline, rt, *, param_groups=None, optim_cfg=None,
                  start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
                  beta: float = 0.98, diverge: float = 4.0, on_train_mode=None) -> dict:
    """Run the range test; returns ``dict(lrs, losses, raw_losses, suggestion, min_div_10,
    steepest, diverged_at, method)`` (``losses`` smoothed, one entry per step taken).

    ``param_groups`` (optional, as for :func:`vistrain.training.optim.build_optimizer`, e.g. with
    discriminative rates) keep their *ratios*: the group with the largest rate follows the ramp.
    """
    net = unwrap(model)
    saved_state = copy.deepcopy(net.state_dict())
    saved_modes = {name: m.training for name, m in net.named_modules()}
    saved_grad = {name: p.requires_grad for name, p in net.named_parameters()}
    saved_rng = torch.get_rng_state()
    groups = param_groups or [{"params": [p for p in net.parameters() if p.requires_grad], "lr": 1.0}]
    top = max(g["lr"] for g in groups)
    groups = [{**g, "params": list(g["params"]), "lr": g["lr"] / top} for g in groups]
    optimizer = optim.build_optimizer(groups, optim_cfg or OptimConfig(), net)
    scaler = rt.grad_scaler()  # as training steps: scaled on fp16, where an unscaled loss underflows
    ratios = [g["lr"] for g in optimizer.param_groups]  # after the decay split (same per origin)
    mult = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, raw, smooth = [], [], []
    avg, best, diverged_at = 0.0, math.inf, None
    try:
        model.train()
        if on_train_mode is not None:
            on_train_mode(model)
        step, passes = 0, 0
        while step < steps:
            n_before = step
            if hasattr(batches, "set_epoch"):  # a new shuffle for each pass over few batches
                batches.set_epoch(passes)
            passes += 1
            for x, y in batches:
                lr = start_lr * mult ** step
                for g, r in zip(optimizer.param_groups, ratios):
                    g["lr"] = lr * r
                loss, _, _ = train_step(model, x, y, optimizer, pipeline, rt, scaler=scaler)
                value = loss.item()
                if not math.isfinite(value):
                    diverged_at = lr
                    break
                avg = beta * avg + (1 - beta) * value
                sm = avg / (1 - beta ** (step + 1))
                lrs.append(lr)
                raw.append(value)
                smooth.append(sm)
                best = min(best, sm)
                step += 1
                if sm > diverge * best and step > 1:
                    diverged_at = lr
                    break
                if step >= steps:
                    break
            if diverged_at is not None or step == n_before:
                break
    finally:
        net.load_state_dict(saved_state)
        for name, m in net.named_modules():
            m.train(saved_modes[name])
        for name, p in net.named_parameters():
            p.requires_grad_(saved_grad[name])
            p.grad = None
        torch.set_rng_state(saved_rng)
    out = {"lrs": lrs, "losses": smooth, "raw_losses": raw, "diverged_at": diverged_at}
    out.update(suggest(lrs, smooth))
    return out


def uses_cached_features(cfg) -> bool:
    """True when training fits the head on cached features (feature extraction, clean cache)."""
    return cfg.strategy.name == "feature-extraction" and cfg.strategy.feature_cache != "live"


def run_range_test(ctx: RunContext, *, steps: int = 100, start_lr: float = 1e-7,
                   end_lr: float = 10.0, features: np.ndarray | None = None, beta: float = 0.98) -> dict:
    """The range test of a run's settings on its training part (``vistrain lr-find`` and ``check``).

    ``ctx``: as :func:`vistrain.training.prepare.prepare_run` makes it; ``ctx.model`` is left
    as found (the test trains a copy).  The set-up is the training plan
    (:func:`~vistrain.training.plan.build_plan`): feature extraction trains a fresh linear head on
    the cached, standardized ``(N, D)`` features (``features``, when the caller holds them
    already, else the feature cache) with its batch size; every other strategy runs through the
    model with the plan's trainable groups, batch augmentation and BatchNorm policy.  Draws are
    seeded with ``train.seed``, so the same settings give the same suggestion.

    ``beta``: the loss's smoothing; a short test (the recipe race's) needs a shorter memory.
    Returns :func:`lr_range_test`'s dict plus ``trained_as`` and ``configured_lr`` (the base rate
    training would use).
    """
    cfg = ctx.cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        plan = range_test_plan(ctx, features)
        batches = plan.train_batches(ctx.rt, cfg.train.seed, drop_last=plan.kind == "features")
        result = lr_range_test(plan.model, batches, plan.pipe, ctx.rt,
                               param_groups=plan.groups if plan.kind != "features" else None,
                               optim_cfg=cfg.optim, steps=steps, start_lr=start_lr, end_lr=end_lr,
                               beta=beta, on_train_mode=plan.train_mode_hook())
    result["trained_as"] = ("linear head on the cached, standardized backbone features"
                            if plan.kind == "features" else
                            "linear head through the frozen backbone (live features)"
                            if cfg.strategy.name == "feature-extraction" else
                            "end to end through the model")
    result["configured_lr"] = configured_lr(cfg, ctx.pcfg.pretrained)
    return result


def range_test_plan(ctx: RunContext, features: np.ndarray | None = None) -> TrainingPlan:
    """The training plan the range test ramps, on a copy of ``ctx.model``, at base rate 1 (only
    the groups' ratios matter).  Two choices of its own: ``gradual`` ramps every layer at once, as
    fine-tuning does (its last stages train them all), and a head trained through the frozen
    backbone (``feature_cache=live``) keeps every BatchNorm in eval mode."""
    net = ctx.rt.prepare_model(copy.deepcopy(ctx.model))
    name = ctx.cfg.strategy.name
    name = "finetune" if name in ("gradual", "auto") else name
    plan = build_plan(ctx.with_model(net), name, lr=1.0, features=features)
    if name == "feature-extraction" and plan.kind != "features":
        plan = replace(plan, bn_mode="all")
    return plan


def suggest(lrs, losses) -> dict:
    """Steepest-descent suggestion (before the loss minimum) and min/10; see module docstring."""
    if len(lrs) < 3:
        return {"suggestion": lrs[0] if lrs else None, "steepest": None,
                "min_div_10": lrs[int(np.argmin(losses))] / 10 if lrs else None,
                "method": "too few steps for a slope: first rate"}
    lr, loss = np.log10(np.asarray(lrs)), np.asarray(losses)
    i_min = int(np.argmin(loss))
    grad = np.gradient(loss, lr)
    skip = max(1, len(lrs) // 10)  # the first steps: EMA warm-up noise, not the loss landscape
    lo, upto = min(skip, max(i_min - 1, 0)), max(i_min, min(skip, len(lrs) - 1) + 1)
    i_steep = lo + int(np.argmin(grad[lo:upto]))
    steepest, min10 = float(lrs[i_steep]), float(lrs[i_min] / 10)
    return {"suggestion": steepest, "steepest": steepest, "min_div_10": min10,
            "method": "steepest descent of the smoothed loss vs log10(lr), before its minimum"}


def plot_lr_find(result: dict, path) -> None:
    """Smoothed (and raw) loss vs learning rate on a log axis, suggestions marked (a PNG at ``path``)."""
    fig = new_figure((6, 4), layout="tight")
    ax = fig.subplots()
    ax.plot(result["lrs"], result["raw_losses"], color="0.8", lw=0.8, label="loss per batch")
    ax.plot(result["lrs"], result["losses"], color="C0", label="smoothed loss")
    if result.get("steepest"):
        ax.axvline(result["steepest"], color="C3", ls="--",
                   label=f"steepest descent {result['steepest']:.2e} (suggested)")
    if result.get("min_div_10"):
        ax.axvline(result["min_div_10"], color="C2", ls=":", label=f"min / 10 {result['min_div_10']:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = [v for v in result["losses"] if math.isfinite(v)]
    if finite:
        lo = min(finite)
        ax.set_ylim(lo - 0.1 * abs(lo), min(max(finite), lo * 4 + 0.5))
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def check_range(steps: int, start_lr: float, end_lr: float, *, flag: str = "--steps") -> None:
    """Refuse a range test that cannot run (``flag`` names its steps option), before any image is
    decoded."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 5:
        raise VistrainError(f"{flag} {steps!r}: the range test needs at least 5 steps (default 100)")
    if not (math.isfinite(start_lr) and math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise VistrainError(f"--start-lr {start_lr!r} / --end-lr {end_lr!r}: need finite rates with "
                            "0 < start-lr < end-lr (default 1e-07 to 10)")
