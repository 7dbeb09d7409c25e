"""Feature extraction: run the frozen backbone once, cache its pooled features, train the head.

With a frozen backbone (and BatchNorm in eval mode) the features of an un-augmented image never
change, so computing them every epoch, as the naive loop does, repeats identical work.  Here they
are computed once per image (``forward_features`` + global average pooling = timm's
``forward_head(..., pre_logits=True)``), stored on disk keyed by model, weights, preprocessing and
files, and the head trains on them in milliseconds per epoch.

Trade-off: cached features are *clean* (no augmentation).  For small data sets where augmentation
matters more than speed, ``strategy.feature_cache=live`` recomputes augmented features every epoch.

Example:
    >>> from vistrain.training.features import extract_features
    >>> feats = extract_features(model, pixel_batches, normalize, rt)  # doctest: +SKIP
    >>> feats.shape                                                     # doctest: +SKIP
    (1500, 1280)
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vistrain.config.spelling import set_option
from vistrain.data.cache.budget import (CacheSpaceError, budget_root, ensure_free_space, mark_used, npy_bytes,
                                        prune_cache)
from vistrain.data.cache.entry import CacheDamaged, open_array_entry, remove_entry, save_array_entry, sidecar
from vistrain.device import Runtime
from vistrain.training.feature_engine import backbone_digest, choose_engine, requested_engine
from vistrain.progress import progress_bar

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(model: nn.Module, batches, normalize, rt: Runtime, *, progress: bool = True,
                     desc: str = "extracting features", record: dict | None = None) -> np.ndarray:
    """Run the frozen backbone over uint8 ``batches`` -> ``(N, D)`` float32 array.

    The engine is chosen on the first batch (:func:`~vistrain.training.feature_engine.choose_engine`:
    ONNX Runtime on the CPU, parity-checked against eager, its thread count measured; eager with
    channels_last and autocast on CUDA); ``record`` (a dict) receives what was used (engine,
    threads, parity, images/s) for run.json.
    """
    model.eval()
    out, engine, t, n = [], None, time.perf_counter(), 0
    for x, _ in progress_bar(batches, desc=desc, unit="batch", leave=False, enabled=progress):
        x = normalize(rt.to_device(x))
        if engine is None:
            engine = choose_engine(model, x, rt)
            t = time.perf_counter()  # images/s of the pass itself, the set-up is in the record
        out.append(engine(x, rt).float().cpu())
        n += len(x)
    if record is not None and engine is not None:
        record.update(engine.record, images_per_second=round(n / max(time.perf_counter() - t, 1e-6), 1))
    if not out:
        return np.zeros((0, getattr(model, "num_features", 0)), np.float32)
    return torch.cat(out).numpy()


# ---- features computed earlier in this process (auto's similarity sample) ----------------------
_KNOWN: dict[str, dict[str, np.ndarray]] = {}


def _known_key(model: nn.Module, pre, rt: Runtime) -> str:
    """What a feature row depends on besides its file: the backbone's tensors, the pixels'
    preprocessing and normalization, and the device/precision it ran in."""
    spec = {k: v for k, v in pre.to_dict().items() if k not in ("extra", "normalize_mode")}
    return json.dumps([backbone_digest(model), spec, rt.device.type, feature_precision(rt)],
                      sort_keys=True, default=str)


def remember_features(model: nn.Module, pre, rt: Runtime, files, features: np.ndarray) -> None:
    """Keep ``features`` ``(len(files), D)`` of ``files`` for :func:`known_features` in this
    process: what strategy auto measured on its sample is not computed again by the run."""
    known = _KNOWN.setdefault(_known_key(model, pre, rt), {})
    known.update({str(f): row for f, row in zip(files, np.asarray(features, np.float32))})


def known_features(model: nn.Module, pre, rt: Runtime, files) -> dict[int, np.ndarray]:
    """``{position in files: (D,) features}`` remembered by :func:`remember_features`."""
    known = _KNOWN.get(_known_key(model, pre, rt)) if _KNOWN else None
    if not known:
        return {}
    return {i: known[str(f)] for i, f in enumerate(files) if str(f) in known}


def feature_cache_key(model_name: str, weights_source: str, preprocess: dict, pixel_key: str,
                      precision: str = "float32") -> str:
    """Key of a feature array: backbone, weights, preprocessing, pixel cache and the forward
    pass's precision (bf16 autocast gives other numbers than float32)."""
    spec = [model_name, weights_source, preprocess, pixel_key]
    if precision != "float32":  # keeps the keys of float32 caches written before this field
        spec.append(precision)
    spec = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def run_feature_key(cfg, pcfg, pre, data, rt: Runtime) -> str:
    """:func:`feature_cache_key` of a training run (its model, weights, preprocessing, pixels, precision)."""
    return feature_cache_key(cfg.model.name, pcfg.weights_source, pre.to_dict(), data.pixel_key,
                             feature_precision(rt))


def feature_precision(rt: Runtime) -> str:
    """The precision features are computed in: float32 on the CPU (ONNX Runtime, or eager when
    it is asked for in float32), else the runtime's autocast dtype."""
    if rt.device.type == "cpu" and requested_engine() != "eager":
        return "float32"
    return rt.precision


def cached_features(cache_dir: Path | None, key: str, compute, *, rows: int | None = None,
                    expected_bytes: int | None = None) -> tuple[np.ndarray, bool]:
    """Load ``features-<key>.npy`` or compute and store it; returns ``(features (N, D), was_cached)``.

    The stored array is checked against its sidecar's checksums (and ``rows`` = N when given); a
    damaged entry is deleted and computed again, with a warning.  ``expected_bytes`` (e.g.
    ``N * D * 4``) checks the free disk space *before* computing and raises
    :class:`~vistrain.data.cache.budget.CacheSpaceError` when the features will not fit; without it the
    space is checked after computing, and features that do not fit are returned uncached, with a
    warning, rather than thrown away.
    """
    if cache_dir is None:
        return compute(), False
    path = Path(cache_dir) / f"features-{key}.npy"
    if path.exists():
        try:
            feats, _ = open_array_entry(path, full=True, in_memory=True,
                                        expect_shape=(rows, None) if rows is not None else None)
            mark_used(path, sidecar(path))
            return feats, True
        except CacheDamaged as err:
            log.warning("feature cache %s is damaged (%s); deleting it and computing the features "
                        "again", path, err)
            remove_entry(path)
    if expected_bytes is not None:
        ensure_free_space(path.parent, expected_bytes, "feature cache")
    feats = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ensure_free_space(path.parent, npy_bytes(feats.shape, feats.dtype), "feature cache")
        save_array_entry(path, feats)
    except (CacheSpaceError, OSError) as err:  # the features are computed: keep them, uncached
        log.warning("features not cached: %s", err if isinstance(err, CacheSpaceError) else
                    f"cannot write {path} ({err.strerror or err}); set VISTRAIN_CACHE to a "
                    f"writable folder with free space, or turn the cache off with {set_option('data.cache', 'off')}")
        return feats, False
    prune_cache(budget_root(path.parent), keep=[path, sidecar(path)])
    return feats, False


class LinearHead(nn.Module):
    """Dropout + linear layer trained on cached features; copied into the model's classifier."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.fc(self.drop(x))


def install_head(model: nn.Module, head: LinearHead) -> None:
    """Copy the trained head into the model's own classifier (timm: ``get_classifier()``)."""
    clf = model.get_classifier()
    if not isinstance(clf, nn.Linear) or clf.weight.shape != head.fc.weight.shape:
        raise RuntimeError(f"cannot install a linear head into classifier {clf}")
    with torch.no_grad():
        clf.weight.copy_(head.fc.weight)
        clf.bias.copy_(head.fc.bias)


def standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and scale ``(D,)``, ``(D,)`` float64 of (training) features ``(N, D)``.

    Pooled CNN features have scales that differ by orders of magnitude between dimensions, which
    slows a linear head's optimisation, hence the standardization.  A dimension that is constant on
    the training images (e.g. a ReLU channel that never fired on a small training set) gets scale
    1, not its ~0 std: dividing by ``std + 1e-6`` multiplied held-out values there by ~10^6 and
    gave some held-out images a true-class probability of 0.  "Constant" is scikit-learn's
    ``StandardScaler`` rule (variance within the float64 rounding error of the two-pass variance,
    ``var <= n*eps*var + (n*mean*eps)**2``), so the result equals its ``mean_`` and ``scale_``.
    """
    x = np.asarray(features, dtype=np.float64)
    mean, var = x.mean(0), x.var(0)
    eps = np.finfo(np.float64).eps
    constant = var <= len(x) * eps * var + (len(x) * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return mean, scale


def standardize(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(N, D)`` float32 ``(features - mean) / scale`` with :func:`standardizer`'s statistics."""
    return ((features - mean) / scale).astype(np.float32)


def fold_standardization(head: LinearHead, mu: np.ndarray, sd: np.ndarray) -> LinearHead:
    """Rewrite a head trained on ``(x - mu) / sd`` to act on raw ``x``, in place:
    ``w·(x-mu)/sd + b == (w/sd)·x + (b - w·mu/sd)``."""
    with torch.no_grad():
        w = head.fc.weight.detach().cpu().double()
        b = head.fc.bias.detach().cpu().double()
        mu_t, sd_t = torch.from_numpy(mu).double(), torch.from_numpy(sd).double()
        head.fc.weight.copy_((w / sd_t).to(head.fc.weight))
        head.fc.bias.copy_((b - (w / sd_t) @ mu_t).to(head.fc.bias))
    return head


LOGREG_C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0)


def select_logreg_c(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                    val_y: np.ndarray, num_classes: int, seed: int = 0,
                    grid=LOGREG_C_GRID) -> tuple[float, dict[float, float], LinearHead]:
    """Inverse regularisation strength ``C`` by validation accuracy over ``grid``, the protocol of
    linear-probe papers (Kornblith et al. 2019 tune C on a validation split): a fixed C=1 gave
    0.859 on the full CIFAR-10 split with Lite0 features where the SGD-trained linear head gave
    0.900.  Ties go to the stronger regularisation (smaller C).

    Returns ``(best C, {C: validation accuracy}, the head fitted with the best C)``.
    """
    scores, heads = {}, {}
    for c in sorted(grid):
        heads[c] = fit_logistic_regression(train_x, train_y, num_classes, seed=seed, C=c)
        with torch.no_grad():
            pred = heads[c](torch.from_numpy(val_x.astype(np.float32))).argmax(1).numpy()
        scores[c] = float((pred == val_y).mean())
    best = max(scores, key=lambda c: (scores[c], -c))
    return best, scores, heads[best]


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, num_classes: int,
                            seed: int = 0, C: float = 1.0) -> LinearHead:
    """Multinomial logistic regression (scikit-learn, L-BFGS) on standardised features, folded
    back into one linear layer so the saved model needs no scikit-learn at inference."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn is heavy, used by one head only
    mu, sd = standardizer(features)
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    clf.fit((features - mu) / sd, labels)
    coef = np.zeros((num_classes, features.shape[1]))
    bias = np.zeros(num_classes)
    if num_classes == 2 and clf.coef_.shape[0] == 1:  # sklearn's binary form: one logit
        coef[1], bias[1] = clf.coef_[0], clf.intercept_[0]
    else:
        coef[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    head = LinearHead(features.shape[1], num_classes)
    with torch.no_grad():
        head.fc.weight.copy_(torch.from_numpy(coef).float())
        head.fc.bias.copy_(torch.from_numpy(bias).float())
    return fold_standardization(head, mu, sd)
