"""Optimizers and learning-rate schedules (stepped once per batch).

Weight decay is applied to weights of convolutions and linear layers only: decaying the scale and
shift of normalization layers or biases pulls them toward zero for no regularisation benefit, and
hurts (Goyal et al. 2017; the timm and torchvision references do the same).

Example:
    >>> import torch
    >>> from vistrain.config import OptimConfig, ScheduleConfig
    >>> from vistrain.training.optim import build_optimizer, build_scheduler, split_decay
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    >>> opt = build_optimizer([{"params": list(model.parameters()), "lr": 0.1}], OptimConfig())
    >>> [g["weight_decay"] for g in opt.param_groups]
    [0.0001, 0.0]
"""
from __future__ import annotations

import math

import torch
from torch import nn

from vistrain.config import OptimConfig, ScheduleConfig
from vistrain.errors import VistrainError


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")


def split_decay(groups: list[dict], weight_decay: float, names: dict[int, str] | None = None) -> list[dict]:
    """Split each param group into a decayed and a non-decayed part (norms, biases, 1-D)."""
    names = names or {}
    out = []
    for g in groups:
        params = list(g["params"])  # frozen ones stay: gradual unfreezing turns them on later
        decay = [p for p in params if not _no_decay(names.get(id(p), ""), p)]
        rest = [p for p in params if _no_decay(names.get(id(p), ""), p)]
        extra = {k: v for k, v in g.items() if k != "params"}
        if decay:
            out.append({**extra, "params": decay, "weight_decay": weight_decay})
        if rest:
            out.append({**extra, "params": rest, "weight_decay": 0.0})
    return out


def build_optimizer(groups: list[dict], cfg: OptimConfig, model: nn.Module | None = None):
    """AdamW or SGD over ``groups`` (each with its own ``lr``), weight decay split as above."""
    names = {id(p): n for n, p in model.named_parameters()} if model is not None else None
    groups = split_decay(groups, cfg.weight_decay, names)
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise VistrainError("no trainable parameters: check the strategy / freezing settings")
    for g in groups:
        g.setdefault("initial_lr", g["lr"])
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"])
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    raise VistrainError(f"unknown optimizer {cfg.name!r}; choose adamw or sgd")


def lr_factor(step: int, total: int, warmup: int, cfg: ScheduleConfig, steps_per_epoch: int) -> float:
    """Multiplier of each group's base LR at ``step`` (0-based) for cosine/step/constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.name == "cosine":
        t = (step - warmup) / max(1, total - warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.name == "step":
        return cfg.gamma ** ((step // max(1, steps_per_epoch)) // max(1, cfg.step_size))
    if cfg.name == "constant":
        return 1.0
    raise VistrainError(f"unknown schedule {cfg.name!r}; choose cosine, step, onecycle, cyclic or constant")


def build_scheduler(optimizer, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int):
    """A per-batch scheduler for ``epochs * steps_per_epoch`` steps."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    max_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total,
            pct_start=max(0.05, min(0.5, warmup / total)) if warmup else 0.25,
            cycle_momentum=isinstance(optimizer, torch.optim.SGD))
    if cfg.name == "cyclic":
        # triangular cycles between min_lr_ratio*lr and lr, one cycle every step_size epochs.
        half = max(1, cfg.step_size * steps_per_epoch // 2)
        return torch.optim.lr_scheduler.CyclicLR(
            optimizer, base_lr=[lr * cfg.min_lr_ratio for lr in max_lrs], max_lr=max_lrs,
            step_size_up=half, cycle_momentum=isinstance(optimizer, torch.optim.SGD))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg, steps_per_epoch))
