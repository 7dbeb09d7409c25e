"""Class imbalance: class-weighted loss or class-balanced sampling of the training part.

``data.balance``:

* ``weights``: cross-entropy weighted per class, ``w_c ∝ 1 / count_c`` normalized so that the
  mean weight over classes is 1 (a balanced data set gets all ones);
* ``sampler``: each epoch draws as many training indices as there are training images, with
  replacement, image ``i`` with probability ``∝ 1 / count[label_i]`` (every class equally
  likely); the draw is seeded by ``seed + epoch`` so a resumed run replays the same batches;
* ``auto``: ``weights`` when the imbalance ratio (largest / smallest class count in the training
  part) exceeds :data:`AUTO_RATIO`, else ``none``;
* ``none``.

Counts come from the training part only.  :func:`decide` says what is applied (recorded in the
run's ``run.json`` under ``strategy.balance``); :func:`apply_balance` installs it on the loss and
the training batches.

Example:
    >>> import numpy as np
    >>> d = decide("auto", np.array([0] * 80 + [1] * 20 + [2] * 10), 3)
    >>> d["applied"], round(d["imbalance_ratio"], 1), [round(w, 3) for w in d["class_weights"]]
    ('weights', 8.0, [0.231, 0.923, 1.846])
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from vistrain.data.loader import ArrayBatches
from vistrain.errors import VistrainError

log = logging.getLogger("vistrain")

MODES = ("auto", "weights", "sampler", "none")
AUTO_RATIO = 3.0


def class_counts(train_labels, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes)


def class_weights(counts) -> np.ndarray:
    """``1 / count`` per class, normalized to mean 1 over the classes present (absent: 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(counts)
    present = counts > 0
    w[present] = 1.0 / counts[present]
    return w / w[present].mean()


def imbalance_ratio(counts) -> float:
    counts = np.asarray(counts)
    present = counts[counts > 0]
    return float(present.max() / present.min()) if len(present) else 1.0


def decide(mode: str, train_labels, num_classes: int, streamed: bool = False) -> dict:
    """What ``data.balance = mode`` means for these training labels (JSON-serialisable).
    ``streamed``: the pixels are streamed, so ``sampler`` becomes ``weights`` (it needs the
    pixel cache's random access; class weights balance the expected loss the same way)."""
    if mode not in MODES:
        raise VistrainError(f"data.balance={mode!r}: choose one of {', '.join(MODES)}, "
                            "e.g. --set data.balance=weights")
    counts = class_counts(train_labels, num_classes)
    ratio = imbalance_ratio(counts)
    applied = mode if mode != "auto" else ("weights" if ratio > AUTO_RATIO else "none")
    out = {"requested": mode, "applied": applied, "imbalance_ratio": round(ratio, 4),
           "train_counts": counts.tolist()}
    if mode == "auto":
        out["reason"] = (f"imbalance ratio {ratio:.2f} {'>' if applied == 'weights' else '<='} "
                         f"{AUTO_RATIO:g}")
    if applied == "sampler" and streamed:
        applied = out["applied"] = "weights"
        out.update(streamed=True, reason="balanced sampling needs the pixel cache's random access; "
                   "the streamed data gets class weights on the loss instead")
    if applied == "weights":
        out["class_weights"] = class_weights(counts).tolist()
    return out


class BalancedBatches(ArrayBatches):
    """:class:`ArrayBatches` whose epoch order is an inverse-frequency draw with replacement."""

    def __init__(self, *args, class_of_index, **kwargs):
        super().__init__(*args, **kwargs)
        labels = np.asarray(class_of_index, dtype=np.int64)
        counts = np.bincount(labels)
        p = 1.0 / counts[labels]
        self.probabilities = p / p.sum()

    def epoch_indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 0xBA1])
        idx = self.indices[rng.choice(len(self.indices), size=len(self.indices), replace=True,
                                      p=self.probabilities)]
        if self.world_size > 1:
            pad = (-len(idx)) % self.world_size
            idx = np.concatenate([idx, idx[:pad]])[self.rank::self.world_size]
        return idx


def balanced_batches(batches: ArrayBatches) -> BalancedBatches:
    """A class-balanced copy of the (training) ``batches``, same settings."""
    return BalancedBatches(batches.array, batches.labels, batch_size=batches.batch_size,
                           indices=batches.indices, shuffle=True, seed=batches.seed,
                           drop_last=batches.drop_last, rank=batches.rank, world_size=batches.world_size,
                           pin_memory=batches.pin_memory, prefetch=batches.prefetch,
                           class_of_index=batches.labels[batches.indices])


def apply_balance(mode: str, pipe, train_b, num_classes: int, device=None, train_labels=None):
    """``(pipe, train_b)`` with ``mode`` applied (class weights on the loss or balanced batches).

    ``train_labels``: the training part's labels, for batches that do not carry them (streams).
    Balanced sampling draws images at random from the pixel cache; streamed data (read in
    sequence, or decoded per batch) gets the class weights instead, which balance the expected
    loss the same way, and the record says so."""
    labels = train_b.labels[train_b.indices] if train_labels is None else np.asarray(train_labels)
    d = decide(mode, labels, num_classes, streamed=getattr(train_b, "array", None) is None)
    if d.get("streamed"):
        log.info("class balance: %s", d["reason"])
    if d["applied"] == "weights":
        pipe = replace(pipe, class_weights=torch.tensor(d["class_weights"], dtype=torch.float32,
                                                        device=device))
    elif d["applied"] == "sampler":
        train_b = balanced_batches(train_b)
    if d["applied"] != "none" or d["imbalance_ratio"] > AUTO_RATIO:
        log.info("class balance: %s (imbalance ratio %.2f)", d["applied"], d["imbalance_ratio"])
    return pipe, train_b
