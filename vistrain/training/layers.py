"""Layer groups, freezing, discriminative learning rates and the BatchNorm policy.

Layer groups come generically from the model, not from per-model tables: timm models describe
themselves with ``group_matcher(coarse=True)`` (stem, each stage/block, head), and vistrain's
from-scratch models expose ``layer_groups()``.  Group 0 is the stem, the last group the head.

Discriminative learning rates: with ``lr_factor=f`` group ``i`` of ``n`` gets
``base_lr / f ** (n - 1 - i)`` (ULMFiT used 2.6); with ``group_lrs=[early, middle, late]`` the
body groups are split in three consecutive thirds (the head takes ``late``); a list as long as the
number of groups sets each one.

BatchNorm policy: frozen layers always keep their BatchNorm in eval mode (their running statistics
must not drift toward the new data while their weights stay put).  ``bn_policy=frozen`` keeps *all*
BatchNorm statistics fixed; ``auto`` does so for pretrained models fine-tuned on small training sets
(< 1,000 images), where batch statistics are noisy; ``train`` updates them.

Example:
    >>> import timm
    >>> from vistrain.training.layers import layer_groups
    >>> names = [n for n, _ in layer_groups(timm.create_model("resnet18"))]
    >>> names[0], names[-1], len(names)
    ('stem', 'head', 6)
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from vistrain.device import unwrap
from vistrain.errors import VistrainError

SMALL_DATASET = 1000
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def layer_groups(model: nn.Module) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """Ordered ``[(group_name, [(param_name, param), ...]), ...]`` from stem to head."""
    named = dict(model.named_parameters())
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters  # lazy: timm is heavy, and only timm models get here
        groups = group_parameters(model, model.group_matcher(coarse=True))
        ids = sorted(groups)
        out = []
        for pos, gid in enumerate(ids):
            label = "stem" if pos == 0 else "head" if pos == len(ids) - 1 else f"stage{pos}"
            out.append((label, [(n, named[n]) for n in groups[gid]]))
    elif hasattr(model, "layer_groups"):
        out = []
        for pos, (label, modules) in enumerate(_normalize_groups(model.layer_groups())):
            params = [(n, p) for m in modules for n, p in _named_in(model, m)]
            out.append((label, params))
    else:
        raise VistrainError(f"{type(model).__name__} exposes neither group_matcher nor layer_groups")
    covered = {n for _, ps in out for n, _ in ps}
    missing = set(named) - covered
    if missing:  # parameters no matcher claimed go with the head rather than being lost
        out[-1][1].extend((n, named[n]) for n in sorted(missing))
    return out


def _normalize_groups(groups):
    items = list(groups.items()) if isinstance(groups, dict) else list(groups)
    out = []
    for pos, g in enumerate(items):
        if isinstance(g, tuple) and len(g) == 2 and isinstance(g[0], str):
            label, mods = g
        else:
            label, mods = f"group{pos}", g
        out.append((label, list(mods) if isinstance(mods, (list, tuple)) else [mods]))
    return out


def _named_in(root: nn.Module, sub: nn.Module):
    prefix = next((n for n, m in root.named_modules() if m is sub), None)
    for n, p in sub.named_parameters():
        yield (f"{prefix}.{n}" if prefix else n), p


def group_learning_rates(n: int, base_lr: float, lr_factor: float | None,
                         group_lrs: list[float] | None) -> list[float]:
    """Learning rate of each of ``n`` groups (stem first), per the module docstring."""
    if group_lrs:
        if len(group_lrs) == n:
            return list(map(float, group_lrs))
        if len(group_lrs) == 3:
            body = n - 1
            third = [min(2, i * 3 // max(body, 1)) for i in range(body)]
            return [float(group_lrs[t]) for t in third] + [float(group_lrs[2])]
        raise VistrainError(f"strategy.group_lrs needs 3 values (early/middle/late) or {n} (one per group)")
    if lr_factor:
        return [base_lr / lr_factor ** (n - 1 - i) for i in range(n)]
    return [base_lr] * n


def set_trainable(groups, trainable_from: int) -> None:
    """Freeze groups ``< trainable_from``; unfreeze the rest."""
    for i, (_, params) in enumerate(groups):
        for _, p in params:
            p.requires_grad_(i >= trainable_from)


def set_frozen_bn_eval(model: nn.Module, all_bn: bool = False) -> None:
    """BatchNorm layers whose parameters are all frozen (or every one, if ``all_bn``) -> eval."""
    for m in model.modules():
        if isinstance(m, _BN_TYPES):
            params = list(m.parameters(recurse=False))
            if all_bn or not params or not any(p.requires_grad for p in params):
                m.eval()


def bn_frozen_by_policy(cfg, n_train: int, pretrained: bool) -> bool:
    policy = cfg.strategy.bn_policy
    if policy not in ("auto", "frozen", "train"):
        raise VistrainError(f"unknown bn_policy {policy!r}; choose auto, frozen or train")
    return policy == "frozen" or (policy == "auto" and pretrained and n_train < SMALL_DATASET)


def trainable_groups(cfg, model: nn.Module, *, head_only: bool, base_lr: float,
                     n_train: int = 10 ** 9, pretrained: bool = True, trainable_from: int | None = None):
    """Optimizer param groups (with names and learning rates) and whether BN stays frozen.

    ``trainable_from`` (gradual unfreezing) freezes the groups before it; ``head_only`` trains the
    head group alone.
    """
    groups = layer_groups(model)
    lrs = group_learning_rates(len(groups), base_lr, cfg.strategy.lr_factor, cfg.strategy.group_lrs)
    start = len(groups) - 1 if head_only else (trainable_from or 0)
    set_trainable(groups, start)
    all_bn = not head_only and bn_frozen_by_policy(cfg, n_train, pretrained)
    param_groups = [{"name": name, "lr": lr, "params": [p for _, p in params]}
                    for (name, params), lr in zip(groups, lrs)]
    return param_groups, "all" if all_bn else "frozen-layers"


def apply_bn_policy(model: nn.Module, bn_mode: str) -> None:
    """Call after ``model.train()``: ``all`` -> every BN in eval mode; ``frozen-layers`` -> the
    BN layers of frozen groups only."""
    set_frozen_bn_eval(model, all_bn=bn_mode == "all")


def bn_policy_hook(bn_mode: str | None) -> Callable[[nn.Module], None] | None:
    """The ``on_train_mode`` hook of the training loop that applies ``bn_mode`` (None: no hook)."""
    if bn_mode is None:
        return None
    return lambda model: apply_bn_policy(unwrap(model), bn_mode)
