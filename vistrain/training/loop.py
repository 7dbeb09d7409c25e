"""The training loop: ``train_step``, ``train_one_epoch``, ``predict`` and ``evaluate``, nothing else.

The loop knows nothing of strategies, data sets or files: it receives a model, batches of
``(x, y)``, an optimizer, a per-step scheduler and a :class:`BatchPipeline` that turns a raw batch
into model input on the device (augment, normalize, mix).  The same loop trains a linear head on
cached features and fine-tunes a whole network, on CPU, CUDA or under DDP.

Example (a linear head on random features):
    >>> import torch, numpy as np
    >>> from vistrain.data.loader import ArrayBatches
    >>> from vistrain.device import Runtime
    >>> from vistrain.training.loop import BatchPipeline, train_one_epoch
    >>> x, y = np.random.randn(64, 8).astype("float32"), np.arange(64) % 2
    >>> head = torch.nn.Linear(8, 2)
    >>> opt = torch.optim.SGD(head.parameters(), lr=0.1)
    >>> stats = train_one_epoch(head, ArrayBatches(x, y, batch_size=16), opt, BatchPipeline(), Runtime.create("cpu"))
    >>> sorted(stats)
    ['accuracy', 'loss', 'seconds', 'stopped']
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vistrain.device import Runtime
from vistrain.errors import TrainingError
from vistrain.progress import EpochProgress, progress_bar
from vistrain.transforms.losses import soft_target_cross_entropy
from vistrain.transforms.pipeline import AugmentPipeline
from vistrain.transforms.preprocess import Preprocess

log = logging.getLogger("vistrain")


def _normalize_stats(normalize) -> tuple | None:
    """``(scale, mean, std)`` when ``normalize`` is :meth:`Preprocess.normalize` of a record.

    Only then is the normalization known to be the plain affine ``(x * scale - mean) / std`` that
    ``AugmentPipeline.normalized`` can fold into its resampling; any other callable runs as given.
    """
    owner = getattr(normalize, "__self__", None)
    if isinstance(owner, Preprocess) and getattr(normalize, "__func__", None) is Preprocess.normalize:
        return owner.scale, owner.mean, owner.std
    return None


@dataclass
class BatchPipeline:
    """Raw batch -> model input on the device.

    ``augment(x) -> x`` runs on uint8/float batches (train only), ``normalize(x) -> float`` last,
    ``mix(x, y) -> (x, soft_targets)`` (mixup/cutmix, train only) after normalization.  When
    ``normalize`` is a :class:`~vistrain.transforms.preprocess.Preprocess`'s and ``augment`` an
    ``AugmentPipeline``, the two run as one ``augment.normalized`` call (same result up to the
    uint8 rounding it skips; faster for small images enlarged by the crop).
    """
    normalize: Callable | None = None
    augment: Callable | None = None
    mix: Callable | None = None
    label_smoothing: float = 0.0
    class_weights: torch.Tensor | None = None  # (K,) per-class loss weights (train/balance.py)

    def __call__(self, x, y, rt: Runtime, train: bool):
        x, y = rt.to_device(x), y.to(rt.device, non_blocking=True)
        stats = _normalize_stats(self.normalize)
        if train and isinstance(self.augment, AugmentPipeline) and stats:
            x = self.augment.normalized(x, *stats)  # one call; see AugmentPipeline.apply_normalized
        else:
            if train and self.augment is not None:
                x = self.augment(x)
            if self.normalize is not None:
                x = self.normalize(x)
            elif not x.is_floating_point():
                x = x.float()
        if rt.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y
        if train and self.mix is not None:
            x, target = self.mix(x, y)
        return x, y, target

    def loss(self, logits, target):
        if target.dim() == 2:  # soft targets (mixup/cutmix): cross-entropy with the mixed labels
            if self.label_smoothing:
                k = logits.shape[1]
                target = target * (1 - self.label_smoothing) + self.label_smoothing / k
            if self.class_weights is not None:  # sum_c w_c t_c (-log p_c), batch mean
                return F.cross_entropy(logits.float(), target, weight=self.class_weights)
            return soft_target_cross_entropy(logits.float(), target)
        return F.cross_entropy(logits.float(), target, weight=self.class_weights,
                               label_smoothing=self.label_smoothing)


def diverged(loss: float, optimizer, scheduler, batches_done: int) -> TrainingError:
    """The one-line error of a non-finite loss: the step (the scheduler's count, stepped once per
    batch, else the batch of this epoch), the loss (a float) and the learning rate the optimizer was given,
    e.g. ``training diverged at step 3 (loss nan); lower --lr (now 1e+30)``."""
    step = scheduler.last_epoch + 1 if scheduler is not None else batches_done + 1
    lr = optimizer.defaults.get("lr", optimizer.param_groups[0]["lr"])
    return TrainingError(f"training diverged at step {step} (loss {loss}); lower --lr "
                         f"(now {lr:g}) or check the data normalization; the last checkpoint is kept")


def train_step(model, x, y, optimizer, pipeline: BatchPipeline, rt: Runtime, *, scaler,
               grad_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on one raw batch, the one step of every training in vistrain (the loop,
    the LR range test, the checks): ``pipeline`` turns ``(x, y)`` into model input on the device
    (augmentation, normalization, mixing), the forward pass runs under the runtime's autocast,
    the loss takes hard or mixed targets, and the backward pass and step go through ``scaler``
    (``rt.grad_scaler()``: scaling for fp16, a plain step otherwise), the gradient norm clipped
    to ``grad_clip``.

    Returns ``(loss, logits, labels)``: the 0-dim loss, the ``(B, K)`` logits and the ``(B,)``
    hard labels on the device.  A non-finite loss returns before any update, so the caller
    decides: training raises, the range test stops.

    Example:
        >>> import torch
        >>> from vistrain.device import Runtime
        >>> rt, head = Runtime.create("cpu"), torch.nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(head.parameters(), lr=0.1)
        >>> loss, logits, y = train_step(head, torch.randn(8, 4), torch.arange(8) % 2, opt, BatchPipeline(),
        ...                              rt, scaler=rt.grad_scaler())
        >>> tuple(logits.shape), bool(torch.isfinite(loss))
        ((8, 2), True)
    """
    x, y, target = pipeline(x, y, rt, train=True)
    with rt.autocast():
        logits = model(x)
    loss = pipeline.loss(logits, target)
    if not torch.isfinite(loss):
        return loss, logits, y
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss, logits, y


def train_one_epoch(model, batches, optimizer, pipeline: BatchPipeline, rt: Runtime, *,
                    scheduler=None, scaler=None, grad_clip: float | None = None,
                    desc: str = "train", progress: bool = False, on_train_mode=None,
                    resume: dict | None = None, checkpoint=None, checkpoint_every_s: float | None = None,
                    epochs_after: int = 0, stop=None) -> dict:
    """One pass over ``batches``; returns ``{"loss", "accuracy", "seconds", "stopped"}`` (global
    under DDP).  ``stop()``, asked after every step (the same answer on every process), ends the
    pass early: the budget is spent (``stopped`` is then the number of batches done).

    ``on_train_mode(model)`` runs right after ``model.train()`` (e.g. to keep frozen BatchNorm
    layers in eval mode).  ``checkpoint(position)`` is called on the main process every
    ``checkpoint_every_s`` seconds, after a step, with ``{"batches_done", "totals", "seconds"}``;
    ``resume`` is such a position, to continue an epoch whose ``batches`` already skip the
    batches done (under DDP the totals before it are the main process's share).  The bar (or,
    without a terminal, a log line every 30 s) shows the loss and the run's ETA, counting
    ``epochs_after`` more epochs like this one.
    """
    model.train()
    if on_train_mode is not None:
        on_train_mode(model)
    done, before = (resume["batches_done"], resume["seconds"]) if resume else (0, 0.0)
    start = last_save = time.perf_counter()
    totals = torch.zeros(3, dtype=torch.float64, device=rt.device)  # loss sum, correct, count
    if resume and rt.is_main:
        totals += torch.tensor(resume["totals"], dtype=torch.float64, device=rt.device)
    scaler = scaler or rt.grad_scaler()
    shown = EpochProgress(batches, desc=desc, enabled=progress and rt.is_main, epochs_after=epochs_after,
                          log=log.info if rt.is_main else None, done=done)
    for x, y in shown:
        loss, logits, y = train_step(model, x, y, optimizer, pipeline, rt, scaler=scaler, grad_clip=grad_clip)
        if not torch.isfinite(loss):
            raise diverged(loss.item(), optimizer, scheduler, done)
        if scheduler is not None:
            scheduler.step()
        n = y.shape[0]
        totals += torch.tensor([loss.item() * n, (logits.argmax(1) == y).sum().item(), n],
                               dtype=torch.float64, device=rt.device)
        done += 1
        shown.step(loss=loss.item(), images=n)
        now = time.perf_counter()
        if checkpoint is not None and checkpoint_every_s and rt.is_main and now - last_save >= checkpoint_every_s:
            checkpoint({"batches_done": done, "totals": totals.tolist(), "seconds": before + now - start})
            last_save = time.perf_counter()
        if stop is not None and stop():
            stopped = done
            break
    else:
        stopped = None
    shown.close()
    loss_sum, correct, count = rt.all_reduce_sum(totals).tolist()
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1),
            "seconds": before + time.perf_counter() - start, "stopped": stopped}


@torch.no_grad()
def predict(model, batches, pipeline: BatchPipeline, rt: Runtime, *, desc: str = "eval",
            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``(N, K)`` and labels ``(N,)`` over ``batches`` (this rank's part)."""
    model.eval()
    probs, labels = [], []
    for x, y in progress_bar(batches, desc=desc, leave=False, enabled=progress and rt.is_main):
        x, y, _ = pipeline(x, y, rt, train=False)
        with rt.autocast():
            logits = model(x)
        probs.append(logits.float().softmax(1).cpu())
        labels.append(y.cpu())
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def evaluate(model, batches, pipeline: BatchPipeline, rt: Runtime, **kw) -> dict:
    """Loss and accuracy of ``model`` on ``batches`` (no augmentation, no mixing)."""
    probs, labels = predict(model, batches, pipeline, rt, **kw)
    if len(labels) == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()
    return {"loss": float(nll), "accuracy": float((probs.argmax(1) == labels).mean())}


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric == "loss" else value > best
