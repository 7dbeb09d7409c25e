"""Strategy advisor for ``strategy=auto``: data-set size x *measured* similarity to pretraining.

The classic transfer-learning rule (Yosinski et al. 2014; the CS231n notes):

=====================  ==================================================================
small and similar      ``feature-extraction``: the pretrained features already separate the
                       classes; training more weights on little data would only overfit.
small and different    ``gradual``: the head first, then deeper layers from the top down
                       (the late, task-specific layers need to change; the early, generic
                       ones barely), with discriminative rates.
large and similar      ``finetune`` at a low rate (AdamW 1e-4 / SGD 1e-3): small corrections.
large and different    ``finetune`` at a higher rate (AdamW 1e-3 / SGD 1e-2): the features
                       must move further from the pretraining task.
=====================  ==================================================================

Thresholds (fixed here, not tuned per data set):

* **size**: *small* when the training split has fewer than ``SMALL_TRAIN = 1000`` images (the
  same line below which BatchNorm statistics stay frozen, see :mod:`vistrain.training.layers`).
* **similarity**: a stratified sample of at most ``SAMPLE = 300`` training images (from the pixel
  cache, un-augmented) goes once through the frozen pretrained backbone; the pooled features are
  L2-normalised and classified by leave-one-out 5-nearest-neighbour (cosine) vote.  Its accuracy is
  compared with chance (the majority-class share of the sample) as the *skill*
  ``(acc - chance) / (1 - chance)``: 0 = no better than chance, 1 = perfect.  The data set is
  *similar* when the skill is at least ``SIMILAR_SKILL = 0.5``.
* a second, reported measurement: the distance between the data's statistics at the input of the
  first BatchNorm layer and that layer's running statistics from pretraining (mean over channels of
  ``|mu_data - mu_run| / sqrt(var_run)`` and ``|log(var_data / var_run)|``), which is near 0 for
  images like the pretraining ones; it is logged and recorded, not used in the decision (the k-NN
  skill measures what matters, class separability of the features).

A model without pretrained weights has nothing to transfer: every layer is trained (``finetune``)
and nothing is measured.  The advice's learning rate is set only when ``optim.lr`` was not given;
it goes to the training plan (:func:`vistrain.training.plan.build_plan`), the config is not changed.

Example (the decision rule alone):
    >>> from vistrain.training.advisor import decide
    >>> decide(n_train=400, skill=0.8)[0], decide(n_train=400, skill=0.2)[0]
    ('feature-extraction', 'gradual')
    >>> decide(n_train=5000, skill=0.8), decide(n_train=5000, skill=0.2)
    (('finetune', 'low'), ('finetune', 'high'))
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from vistrain.data.loader import ArrayBatches
from vistrain.device import unwrap
from vistrain.training.features import extract_features

log = logging.getLogger("vistrain")

SMALL_TRAIN = 1000
SIMILAR_SKILL = 0.5
SAMPLE = 300
K = 5
RATES = {("low", "adamw"): 1e-4, ("low", "sgd"): 1e-3, ("high", "adamw"): 1e-3, ("high", "sgd"): 1e-2}


def decide(n_train: int, skill: float) -> tuple[str, str | None]:
    """``(strategy, rate)`` from the size x similarity table; rate is "low"/"high" for finetune."""
    small, similar = n_train < SMALL_TRAIN, skill >= SIMILAR_SKILL
    if small:
        return ("feature-extraction" if similar else "gradual"), None
    return "finetune", ("low" if similar else "high")


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


class FirstBNStats:
    """Context manager: accumulates per-channel statistics of the first BatchNorm layer's input
    during forward passes run inside it; ``distance()`` compares them with its running statistics."""

    def __init__(self, model):
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


def measure_similarity(model, pre, data, rt, *, sample: int = SAMPLE, seed: int = 0) -> dict:
    """k-NN skill of the frozen features and first-BatchNorm distance on a training sample."""
    net = unwrap(model)
    labels_all = data.labels()
    train_pos = np.asarray(data.parts["train"], dtype=np.int64)
    pick = train_pos[stratified_sample(labels_all[train_pos], sample, seed)]
    labels = labels_all[pick]
    rows = data.rows[pick]
    t = time.perf_counter()
    was_training = net.training
    batches = ArrayBatches(data.pixels, np.zeros(len(data.pixels), np.int64), batch_size=64,
                           indices=rows, prefetch=0)
    with FirstBNStats(net) as bn_stats:  # one pass: features and first-BN statistics together
        feats = extract_features(net, batches, pre.normalize, rt, progress=False, desc="advisor")
    dist = bn_stats.distance()
    net.train(was_training)
    _, counts = np.unique(labels, return_counts=True)
    chance = float(counts.max() / counts.sum())
    acc = knn_loo_accuracy(feats, labels)
    return {"sample_images": int(len(pick)), "knn_k": K, "knn_loo_accuracy": round(acc, 4),
            "chance_accuracy": round(chance, 4),
            "skill": round((acc - chance) / max(1e-12, 1 - chance), 4),
            "first_bn_distance": dist, "seconds": round(time.perf_counter() - t, 2)}


@dataclass
class Advice:
    """The advisor's choice: ``strategy`` (feature-extraction | gradual | finetune), ``reasoning``
    (what was measured and why, saved in run.json) and ``lr``, the base learning rate to train
    with (None: ``optim.lr`` or the strategy's default)."""
    strategy: str
    reasoning: dict
    lr: float | None = None


def advise(cfg, model, pre, data, rt) -> tuple[str, dict]:
    """``(strategy, reasoning)`` of :func:`advice`."""
    a = advice(cfg, model, pre, data, rt)
    return a.strategy, a.reasoning


def advice(cfg, model, pre, data, rt) -> Advice:
    """Pick the strategy (and, if ``optim.lr`` is unset, the rate); ``cfg`` is left as it is."""
    n_train = len(data.parts["train"])
    reasoning = {"n_train": n_train, "small_if_below": SMALL_TRAIN,
                 "similar_if_skill_at_least": SIMILAR_SKILL}
    if not _has_pretrained(cfg):
        reasoning["decision"] = "finetune: no pretrained weights, so nothing to transfer; train every layer"
        log.info("advisor: %s", reasoning["decision"])
        return Advice("finetune", reasoning)
    m = measure_similarity(model, pre, data, rt, seed=cfg.data.split_seed)
    reasoning.update(m)
    name, rate = decide(n_train, m["skill"])
    size = "small" if n_train < SMALL_TRAIN else "large"
    sim = "similar" if m["skill"] >= SIMILAR_SKILL else "different"
    why = {("small", "similar"): "the frozen features already separate the classes; with little data "
                                 "train only a new head",
           ("small", "different"): "the features separate the classes poorly but there is little data: "
                                   "unfreeze from the top down, one group at a time",
           ("large", "similar"): "enough data to adapt every layer; small corrections at a low rate",
           ("large", "different"): "enough data and the features need to move: every layer at a higher rate"}
    reasoning["size"], reasoning["similarity"] = size, sim
    lr = None
    if rate is not None:
        chosen = RATES[(rate, cfg.optim.name)] if (rate, cfg.optim.name) in RATES else None
        if cfg.optim.lr is None and chosen is not None:
            lr = chosen
            reasoning["lr"] = f"{chosen:g} ({rate} rate for {cfg.optim.name})"
        else:
            reasoning["lr"] = f"{cfg.optim.lr:g} (given)" if cfg.optim.lr else "strategy default"
    reasoning["decision"] = f"{name}: {size} ({n_train} training images) and {sim} " \
                            f"(5-NN skill {m['skill']:.2f}); {why[(size, sim)]}"
    log.info("advisor: sample of %d training images, leave-one-out %d-NN accuracy on frozen features "
             "%.3f vs chance %.3f -> skill %.2f (similar if >= %.2f); first BatchNorm input vs running "
             "stats: %s; %.1fs", m["sample_images"], K, m["knn_loo_accuracy"], m["chance_accuracy"],
             m["skill"], SIMILAR_SKILL, m["first_bn_distance"], m["seconds"])
    log.info("advisor: %s%s", reasoning["decision"], f"; lr {reasoning['lr']}" if "lr" in reasoning else "")
    return Advice(name, reasoning, lr)


def _has_pretrained(cfg) -> bool:
    return bool(cfg.model.pretrained or cfg.model.weights) and not cfg.model.name.startswith("vistrain/")
