"""Similarity to the pretraining domain, measured on a sample: the pieces of ``strategy=auto``.

* :func:`stratified_sample`: at most ``n`` training images, classes in proportion.
* :func:`knn_loo_accuracy`: leave-one-out cosine k-NN accuracy (``K = 5``) of a set of vectors;
  on the frozen backbone's pooled features it measures how well the pretrained representation
  separates the classes, on raw pixels how well the pixels alone do.  As *skill*
  ``(acc - chance) / (1 - chance)``: 0 = no better than chance, 1 = perfect; the data set is
  *similar* when the features' skill is at least ``SIMILAR_SKILL = 0.5``.
* :class:`FirstBNStats`: the distance between the data's statistics at the input of the first
  BatchNorm layer and that layer's running statistics from pretraining (mean over channels of
  ``|mu_data - mu_run| / sqrt(var_run)`` and ``|log(var_data / var_run)|``), near 0 for images
  like the pretraining ones; recorded, not used in the decision.
* ``RATES``: the fine-tuning learning rates for similar ("low") and different ("high") data.

:mod:`vistrain.training.auto` combines them with the data's size and the measured throughput.

Example:
    >>> import numpy as np
    >>> feats = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    >>> knn_loo_accuracy(feats, np.array([0, 0, 1, 1]), k=1)
    1.0
"""
from __future__ import annotations

import numpy as np
import torch

SIMILAR_SKILL = 0.5
K = 5
RATES = {("low", "adamw"): 1e-4, ("low", "sgd"): 1e-3, ("high", "adamw"): 1e-3, ("high", "sgd"): 1e-2}


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Positions (into ``labels``) of at most ``n`` items, classes in proportion, at least 2 each."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    if len(labels) <= n:
        return np.arange(len(labels))
    take = np.maximum(2, np.floor(counts / len(labels) * n).astype(int))
    out = [rng.choice(np.flatnonzero(labels == c), min(t, k), replace=False)
           for c, t, k in zip(classes, take, counts)]
    return np.sort(np.concatenate(out))


def skill_over_chance(accuracy: float, chance: float) -> float:
    """``(accuracy - chance) / (1 - chance)``: 0 = no better than chance, 1 = perfect."""
    return (accuracy - chance) / max(1e-12, 1 - chance)


def knn_loo_accuracy(feats: np.ndarray, labels: np.ndarray, k: int = K) -> float:
    """Leave-one-out k-NN accuracy with cosine similarity (ties: the nearest neighbour's vote wins)."""
    z = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(labels) - 1)
    nn_idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    nn_lab = labels[nn_idx]
    n_cls = int(labels.max()) + 1
    votes = np.zeros((len(labels), n_cls))
    for j in range(k):  # weights 1 + tiny decreasing bonus: nearer neighbours break ties
        votes[np.arange(len(labels)), nn_lab[:, j]] += 1 + (k - j) * 1e-6
    return float((votes.argmax(1) == labels).mean())


class _UpToFirstBN(Exception):
    """Raised by :meth:`FirstBNStats.observe`'s hook: the rest of the network is not needed."""


class FirstBNStats:
    """Context manager: accumulates per-channel statistics of the first BatchNorm layer's input
    during forward passes run inside it; ``distance()`` compares them with its running statistics.
    :meth:`observe` runs the model only up to that layer (the features themselves may come from
    another engine, e.g. ONNX Runtime)."""

    def __init__(self, model):
        self.model = model
        self.bn = next((m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                        and m.running_mean is not None), None)
        self.sum = self.sq = None
        self.n = 0

    def _hook(self, _, inputs):
        x = inputs[0].detach().double()
        h = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.sum = h.sum(1) if self.sum is None else self.sum + h.sum(1)
        self.sq = (h * h).sum(1) if self.sq is None else self.sq + (h * h).sum(1)
        self.n += h.shape[1]

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Accumulate the statistics of the normalized batch ``x`` ``(N, C, H, W)``: the forward
        pass stops at the first BatchNorm's input (for a CNN, one convolution's cost)."""
        if self.bn is None:
            return

        def hook(module, inputs):
            self._hook(module, inputs)
            raise _UpToFirstBN

        handle = self.bn.register_forward_pre_hook(hook)
        try:
            self.model(x)
        except _UpToFirstBN:
            pass
        finally:
            handle.remove()

    def __enter__(self):
        self.handle = self.bn.register_forward_pre_hook(self._hook) if self.bn is not None else None
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()

    def distance(self) -> dict | None:
        if self.bn is None or not self.n:
            return None
        mu = (self.sum / self.n).cpu()
        var = (self.sq.cpu() / self.n - mu ** 2).clamp_min(1e-12)
        rm, rv = self.bn.running_mean.double().cpu(), self.bn.running_var.double().cpu().clamp_min(1e-12)
        return {"mean_shift_in_running_sd": round(float(((mu - rm).abs() / rv.sqrt()).mean()), 4),
                "abs_log_variance_ratio": round(float((var / rv).log().abs().mean()), 4)}
