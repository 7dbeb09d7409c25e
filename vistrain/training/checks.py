"""Quick training diagnostics, run before a long training (``vistrain check``, ``train.checks``).

Each check returns a :class:`CheckResult` (name, passed, measurements, message):

* ``normalization`` -- one real batch through the run's preprocessing: per-channel mean/std for the
  standardizing modes (imagenet/model/dataset/explicit), the value range for none/minmax/symmetric.
  Catches a forgotten ``/255``, double normalization and constant channels.
* ``overfit-small-sample`` -- a fresh copy of the model must memorise ``2 x 16`` training images
  (loss close to zero, 100% train accuracy) within ``steps`` optimizer steps, without augmentation.
  If it cannot, the loss trajectory says why: diverging/NaN (learning rate too high), still
  falling slowly (learning rate too low), stuck high (labels inconsistent: identical images with
  different labels are counted), or no parameter moved (model frozen).
* ``label-shuffle`` -- train briefly on the *real* and on *shuffled* training labels; held-out
  accuracy of the shuffled run must fall to chance (above it: leakage between the labels and the
  evaluation), and the real run must beat it (otherwise nothing learnable reached the model).
* ``lr-finder`` -- the learning-rate range test of ``vistrain lr-find``
  (:func:`vistrain.training.lrfind.run_range_test`, the same settings give the same suggestion)
  with a plot; fails when the configured rate is more than 10x away from the suggestion.

The checks take their set-up from the training plan (:func:`vistrain.training.plan.build_plan`,
the function training uses): with ``feature-extraction`` the head is trained on the frozen
backbone's standardized pooled features (the same feature cache as training, so the check costs
almost nothing extra), otherwise the plan's model is trained end to end.  Two choices are the
checks' own: every layer trains (a check of the whole network), without augmentation, and the
optimizer is training's (:func:`vistrain.training.optim.build_optimizer`) without weight decay.
The model of the context passed in is never modified: every training check works on a deep copy.

Example:
    >>> from vistrain.training.checks import check_normalization
    >>> import torch
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    >>> check_normalization(x, Preprocess(normalize_mode="minmax", mean=(0,) * 3, std=(1,) * 3)).passed
    True
"""
from __future__ import annotations

import copy
import logging
import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vistrain.config import OptimConfig
from vistrain.device import Runtime
from vistrain.errors import VistrainError
from vistrain.evaluation.png import new_figure, save_figure
from vistrain.rundir import write_run_file
from vistrain.training.context import RunContext
from vistrain.training.features import LinearHead
from vistrain.training.loop import BatchPipeline, train_step
from vistrain.training.lrfind import run_range_test, uses_cached_features
from vistrain.training.optim import build_optimizer
from vistrain.training.plan import build_plan, configured_lr, default_lr

log = logging.getLogger("vistrain")

RANGES = {"none": (0.0, 255.0), "minmax": (0.0, 1.0), "symmetric": (-1.0, 1.0)}


@dataclass
class CheckResult:
    """Outcome of one diagnostic: ``passed`` is None when the check was skipped."""
    name: str
    passed: bool | None
    measurements: dict = field(default_factory=dict)
    message: str = ""

    @property
    def status(self) -> str:
        return "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def line(self) -> str:
        return f"[{self.status}] {self.name}: {self.message}"

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


# ---- normalization ---------------------------------------------------------------------------
def check_normalization(batch_uint8: torch.Tensor, preprocess, *, mean_tol: float | None = None,
                        std_range: tuple[float, float] | None = None) -> CheckResult:
    """Per-channel statistics of ``preprocess.normalize(batch)`` against what its mode promises.

    ``batch_uint8``: (N, C, H, W) uint8 pixels as the pipeline yields them.  Standardizing modes
    pass with ``|mean| <= mean_tol`` and ``std`` in ``std_range`` per channel (defaults: 0.35 and
    (0.7, 1.4) for ``dataset``, whose statistics come from this data; 1.5 and (0.2, 3.0) for
    pretraining statistics, where some shift on other data is expected).  Range modes pass when
    every value lies in the mode's range (and, for ``none``, when pixels were not rescaled).
    """
    x = preprocess.normalize(batch_uint8).float()
    dims = (0, 2, 3)
    mean, std = x.mean(dims).tolist(), x.std(dims).tolist()
    lo, hi = float(x.min()), float(x.max())
    mode = preprocess.normalize_mode
    meas = {"mode": mode, "n_images": int(x.shape[0]), "mean": [round(v, 4) for v in mean],
            "std": [round(v, 4) for v in std], "min": round(lo, 4), "max": round(hi, 4)}
    const = [c for c, s in enumerate(std) if s < 1e-6]
    if const:
        return CheckResult("normalization", False, meas,
                           f"channel(s) {const} are constant after preprocessing (std 0): the images "
                           "carry no signal there; check the channel mode (grayscale?) and the data")
    if mode in RANGES:
        a, b = RANGES[mode]
        ok = lo >= a - 1e-4 and hi <= b + 1e-4 and not (mode == "none" and hi <= 1.0)
        msg = (f"values in [{lo:.3g}, {hi:.3g}], within the {mode} range [{a:g}, {b:g}]" if ok else
               f"values in [{lo:.3g}, {hi:.3g}] but normalize={mode} promises [{a:g}, {b:g}]"
               + ("; pixels look already scaled to [0,1]" if mode == "none" else
                  "; the scale/mean/std of the Preprocess record do not match the mode"))
        return CheckResult("normalization", ok, meas, msg)
    if mean_tol is None:
        mean_tol = 0.35 if mode == "dataset" else 1.5
    if std_range is None:
        std_range = (0.7, 1.4) if mode == "dataset" else (0.2, 3.0)
    bad_mean = [c for c, m in enumerate(mean) if abs(m) > mean_tol]
    bad_std = [c for c, s in enumerate(std) if not std_range[0] <= s <= std_range[1]]
    stats = ", ".join(f"{m:+.2f}/{s:.2f}" for m, s in zip(mean, std))
    meas.update(mean_tol=mean_tol, std_range=list(std_range))
    if not bad_mean and not bad_std:
        return CheckResult("normalization", True, meas,
                           f"per-channel mean/std after preprocessing {stats} (normalize={mode})")
    hint = ("values far from 0 suggest a missing /255 scale" if max(abs(m) for m in mean) > 10 else
            "std far from 1 suggests double normalization or wrong mean/std" if bad_std else
            "the data's statistics differ strongly from the ones used; try --normalize dataset")
    return CheckResult("normalization", False, meas,
                       f"per-channel mean/std after preprocessing {stats} with normalize={mode}: "
                       f"expected |mean| <= {mean_tol:g} and std in [{std_range[0]:g}, {std_range[1]:g}]; "
                       + hint)


# ---- shared training plumbing ----------------------------------------------------------------
@dataclass
class CheckSetup:
    """What the training checks train: a module over an array, taken from the training plan.

    ``array``: ``(N, D)`` float32 standardized features (index order) or ``(N_all, C, S, S)``
    uint8 pixels (rows); ``positions(ids)`` maps indices into the data set to positions in it.
    """
    kind: str                                    # "features ..." or "end-to-end ..."
    make_model: Callable[[], torch.nn.Module]    # a fresh module to train
    array: np.ndarray
    positions: Callable[[np.ndarray], np.ndarray]
    normalize: Callable | None                   # batch -> model input (None for features)
    lr: float
    features: np.ndarray | None = None           # (N, D) raw backbone features (features kind)


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _optimizer(params, lr, optim_cfg):
    """Training's optimizer recipe without weight decay (and plain momentum for SGD): the checks
    measure what the data and rate allow, not the regularisation."""
    cfg = replace(optim_cfg or OptimConfig(), weight_decay=0.0, nesterov=False)
    if cfg.name != "sgd":
        cfg = replace(cfg, name="adamw")
    return build_optimizer([{"params": params, "lr": lr}], cfg)


def _batch(setup: CheckSetup, pos: np.ndarray, device):
    x = torch.from_numpy(np.ascontiguousarray(setup.array[pos])).to(device)
    if setup.normalize is not None:
        x = setup.normalize(x)
    return x.float()


def _train(setup: CheckSetup, model, pos: np.ndarray, labels: np.ndarray, *, epochs: int,
           batch_size: int, device, optim_cfg=None, seed: int = 0,
           stop_below: float | None = None) -> list[float]:
    """Mini-batch training with training's step (:func:`~vistrain.training.loop.train_step`) in
    fp32 on ``device``; returns the per-step losses (stops at the first non-finite, or once a
    whole epoch's step losses are all below ``stop_below``)."""
    params = _params(model)
    if not params:
        return []
    opt = _optimizer(params, setup.lr, optim_cfg)
    rt = Runtime(torch.device(device))
    pipeline, scaler = BatchPipeline(normalize=setup.normalize), rt.grad_scaler()
    rng = np.random.default_rng(seed)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    losses = []
    model.train()
    for _ in range(epochs):
        steps_per_epoch = -(-len(pos) // batch_size)
        if stop_below is not None and len(losses) >= steps_per_epoch and \
                max(losses[-steps_per_epoch:]) < stop_below:
            break
        order = rng.permutation(len(pos))
        for s in range(0, len(order), batch_size):
            b = order[s:s + batch_size]
            if len(b) < 2 and len(order) > 1:
                continue  # BatchNorm cannot train on one sample
            x = torch.from_numpy(np.ascontiguousarray(setup.array[pos[b]]))
            loss, _, _ = train_step(model, x, y_all[b], opt, pipeline, rt, scaler=scaler)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                return losses
    return losses


@torch.no_grad()
def _accuracy(setup: CheckSetup, model, pos: np.ndarray, labels: np.ndarray, device) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(pos), 128):
        logits = model(_batch(setup, pos[s:s + 128], device))
        correct += int((logits.argmax(1).cpu().numpy() == labels[s:s + 128]).sum())
    return correct / max(len(pos), 1)


def _take(ids: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` of ``ids``, class-balanced (round-robin over classes, random within a class)."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(ids[labels[ids] == k]).tolist() for k in np.unique(labels[ids])]
    out = []
    while len(out) < min(n, len(ids)):
        for lst in by_class:
            if lst and len(out) < n:
                out.append(lst.pop())
    return np.asarray(out, dtype=np.int64)


# ---- overfit a small sample ------------------------------------------------------------------
def overfit_small_sample(setup: CheckSetup, ids: np.ndarray, labels: np.ndarray, *, steps: int = 100,
                         batch_size: int = 16, n_batches: int = 2, device="cpu", optim_cfg=None,
                         seed: int = 0, loss_target: float = 0.1) -> CheckResult:
    """Can a fresh model memorise ``n_batches x batch_size`` training images within ``steps``?

    ``ids``: index ids of candidate (training) images; ``labels``: label of every index id.
    Passes when, after training, the sample's loss is below ``loss_target`` (or 5% of the
    starting loss) and its training accuracy is 100%.
    """
    name = "overfit-small-sample"
    sample = _take(np.asarray(ids), labels, n_batches * batch_size, seed)
    pos, y = setup.positions(sample), labels[sample]
    model = setup.make_model()
    n_params = sum(p.numel() for p in _params(model))
    meas = {"images": int(len(sample)), "steps": 0, "lr": setup.lr, "trained_as": setup.kind,
            "trainable_parameters": int(n_params)}
    if n_params == 0:
        return CheckResult(name, False, meas, "model frozen: no parameter requires grad, so "
                           "nothing can be learned; check the strategy / freezing settings")
    before = [p.detach().clone() for p in _params(model)]
    initial, _ = _sample_eval(setup, model, pos, y, device)
    epochs = max(1, math.ceil(steps / max(1, math.ceil(len(pos) / batch_size))))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        losses = _train(setup, model, pos, y, epochs=epochs, batch_size=batch_size, device=device,
                        optim_cfg=optim_cfg, seed=seed, stop_below=0.25 * loss_target)
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(_params(model), before))
    final, acc = _sample_eval(setup, model, pos, y, device, bn_train=True)
    acc = acc if math.isfinite(final) else 0.0
    meas.update(steps=len(losses), initial_loss=round(initial, 4), final_loss=round(final, 4),
                train_accuracy=round(acc, 4), max_parameter_change=moved,
                loss_curve=[round(v, 4) for v in losses[:: max(1, len(losses) // 25)]])
    target = max(loss_target, 0.05 * initial) if math.isfinite(initial) else loss_target
    spiked = bool(losses) and math.isfinite(initial) and max(losses) > 10 * max(initial, 0.1)
    if math.isfinite(final) and final <= target and acc == 1.0 and not spiked:
        return CheckResult(name, True, meas, f"memorised {len(sample)} images in {len(losses)} steps "
                           f"(loss {initial:.3f} -> {final:.4f}, train accuracy 100%)")
    return CheckResult(name, False, meas, _diagnose(losses, initial, final, acc, moved, setup.lr,
                                                    _conflicts(setup, pos, y), len(sample)))


def _sample_eval(setup, model, pos, y, device, bn_train=False) -> tuple[float, float]:
    """(loss, accuracy) on the sample in eval mode; ``bn_train`` uses batch statistics in
    BatchNorm (after a few steps its running averages still lag behind the weights)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    if bn_train:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
    try:
        with torch.no_grad():
            logits = model(_batch(setup, pos, device)).float()
            target = torch.as_tensor(y, dtype=torch.long, device=device)
            loss = float(F.cross_entropy(logits, target))
            acc = float((logits.argmax(1) == target).float().mean())
    finally:
        for m, f in flags:
            m.training = f
    return loss, acc


def _conflicts(setup, pos, y) -> int:
    """Images of the sample identical to another one with a different label."""
    seen: dict[bytes, int] = {}
    bad = 0
    for p, label in zip(pos, y):
        key = np.ascontiguousarray(setup.array[p]).tobytes()
        if key in seen and seen[key] != label:
            bad += 1
        seen.setdefault(key, label)
    return bad


def _diagnose(losses, initial, final, acc, moved, lr, conflicts, n) -> str:
    head = f"could not memorise {n} images in {len(losses)} steps (loss {initial:.3f} -> {final:.3g}, " \
           f"train accuracy {acc:.0%}): "
    if moved == 0.0:
        return head + "model frozen: no parameter changed; check requires_grad / the strategy"
    if not losses or not math.isfinite(losses[-1]) or not math.isfinite(final):
        return head + f"learning rate too high (lr={lr:g}): the loss became NaN/inf; lower --lr by 10x"
    if final > 1.5 * initial or max(losses) > 10 * max(initial, 0.1):
        return head.replace("could not memorise", "unstable while memorising") + (
            f"learning rate too high (lr={lr:g}): the loss diverged (peak {max(losses):.3g}); "
            "lower --lr by 10x")
    if conflicts:
        return head + (f"labels inconsistent: {conflicts} image(s) of the sample are identical to another "
                       "with a different label; run `vistrain doctor` / fix the duplicates")
    q = max(2, len(losses) // 4)
    early, late = float(np.mean(losses[-2 * q:-q])), float(np.mean(losses[-q:]))
    if late < 0.9 * early:
        return head + (f"learning rate too low (lr={lr:g}): the loss was still falling; raise --lr "
                       "(see the lr-finder) or allow more steps")
    return head + ("the loss stalled at a high value: labels inconsistent (the same content under "
                   "different classes) or a model without the capacity / a broken input pipeline")


# ---- label shuffle ---------------------------------------------------------------------------
def label_shuffle_test(setup: CheckSetup, train_ids: np.ndarray, val_ids: np.ndarray, labels: np.ndarray,
                       *, epochs: int, batch_size: int = 32, device="cpu", optim_cfg=None,
                       seed: int = 0) -> CheckResult:
    """Train briefly on shuffled and on real labels; compare held-out accuracy with chance."""
    name = "label-shuffle"
    y_val = labels[val_ids]
    n_classes = int(labels.max()) + 1
    counts = np.bincount(y_val, minlength=n_classes)
    chance = float(counts.max() / max(len(y_val), 1))  # what predicting one class can score
    margin = max(0.1, 3 * math.sqrt(chance * (1 - chance) / max(len(y_val), 1)))
    threshold = min(1.0, chance + margin)
    rng = np.random.default_rng(seed)
    shuffled = labels.copy()
    shuffled[train_ids] = labels[train_ids][rng.permutation(len(train_ids))]
    accs = {}
    for which, lab in (("shuffled", shuffled), ("real", labels)):
        model = setup.make_model()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _train(setup, model, setup.positions(train_ids), lab[train_ids], epochs=epochs,
                   batch_size=batch_size, device=device, optim_cfg=optim_cfg, seed=seed)
        accs[which] = _accuracy(setup, model, setup.positions(val_ids), y_val, device)
    meas = {"shuffled_accuracy": round(accs["shuffled"], 4), "real_accuracy": round(accs["real"], 4),
            "chance": round(chance, 4), "threshold": round(threshold, 4), "epochs": epochs,
            "n_train": int(len(train_ids)), "n_heldout": int(len(val_ids)), "trained_as": setup.kind}
    if accs["shuffled"] > threshold:
        return CheckResult(name, False, meas,
                           f"possible leakage: trained on shuffled labels the model still scores "
                           f"{accs['shuffled']:.1%} on held-out images (chance {chance:.1%}); the held-out "
                           "labels can be predicted without the training labels: look for duplicates "
                           "across splits and label information in file contents or order")
    if accs["real"] <= threshold:
        return CheckResult(name, False, meas,
                           f"nothing learnable: with the real labels held-out accuracy is only "
                           f"{accs['real']:.1%}, no better than with shuffled labels ({accs['shuffled']:.1%}, "
                           f"chance {chance:.1%}); the labels may not match the images (random or "
                           "wrong folders), or the learning rate/model cannot learn; check the data")
    return CheckResult(name, True, meas,
                       f"held-out accuracy {accs['shuffled']:.1%} with shuffled labels (chance "
                       f"{chance:.1%}) vs {accs['real']:.1%} with the real labels after {epochs} brief epochs")


# ---- learning-rate finder ----------------------------------------------------------------------
def lr_finder(ctx: RunContext, *, steps: int = 100, features=None, out_dir=None) -> CheckResult:
    """The range test of ``vistrain lr-find`` (same settings, same suggestion) plus a plot;
    passes when the configured rate is within 10x of the suggestion.  ``features``: the run's
    ``(N, D)`` cached backbone features when the caller holds them."""
    name = "lr-finder"
    try:
        res = run_range_test(ctx, steps=steps, features=features)
    except VistrainError as err:
        return CheckResult(name, False, {}, f"lr range test failed: {err}")
    lrs, losses = list(map(float, res["lrs"])), list(map(float, res["losses"]))
    suggestion, configured = res["suggestion"], res["configured_lr"]
    meas = {"suggestion": suggestion, "configured_lr": configured, "points": len(lrs),
            "min_div_10": res["min_div_10"], "trained_as": res["trained_as"]}
    if out_dir is not None and lrs:
        meas["plot"] = str(plot_lr_finder(lrs, losses, suggestion, Path(out_dir) / "lr_finder.png",
                                          configured=configured))
    if suggestion is None:
        return CheckResult(name, None, meas, "no clear minimum of the loss curve; no suggestion")
    ratio = configured / suggestion
    ok = 0.1 <= ratio <= 10
    return CheckResult(name, ok, meas, f"suggested lr {suggestion:.2g}, configured {configured:.2g}"
                       + ("" if ok else f" ({ratio:.3g}x the suggestion: consider --lr {suggestion:.2g})"))


def plot_lr_finder(lrs, losses, suggestion, path, configured=None) -> Path:
    fig = new_figure((6, 4))
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title="learning-rate range test")
    if suggestion:
        ax.axvline(suggestion, color="tab:green", ls="--", label=f"suggested {suggestion:.2g}")
    if configured:
        ax.axvline(configured, color="tab:red", ls=":", label=f"configured {configured:.2g}")
    ax.legend()
    return save_figure(fig, path)


# ---- orchestration ---------------------------------------------------------------------------
def make_setup(ctx: RunContext) -> CheckSetup:
    """How the checks train: the training plan of ``ctx`` (built on a copy of its model), with
    every layer trainable end to end (see module docstring)."""
    cfg, rt, data = ctx.cfg, ctx.rt, ctx.data
    ids = lambda i: np.asarray(i, dtype=np.int64)  # noqa: E731
    # the plan's own head (or augmentation) must not move the random draws the checks make
    with torch.random.fork_rng(devices=[]):
        if uses_cached_features(cfg):
            plan = build_plan(ctx.with_model(copy.deepcopy(ctx.model).to(rt.device)), "feature-extraction")
        else:
            plan = build_plan(ctx.with_model(copy.deepcopy(ctx.model).cpu()), "finetune")
    if plan.kind == "features":
        z, k = plan.array, data.num_classes
        return CheckSetup("features (frozen backbone, linear head)",
                          lambda: LinearHead(z.shape[1], k, 0.0).to(rt.device), z, ids, None,
                          configured_lr(cfg, ctx.pcfg.pretrained), features=plan.features)
    base = plan.model  # fine-tuning's plan: every layer trainable
    # every layer trains here, so the fine-tuning rate (from scratch: the from-scratch rate)
    return CheckSetup("end-to-end (all layers)", lambda: copy.deepcopy(base).to(rt.device), plan.array,
                      lambda i: data.rows[ids(i)], plan.pipe.normalize,
                      cfg.optim.lr or default_lr("finetune", cfg.optim.name, ctx.pcfg.pretrained))


def run_checks(ctx: RunContext, *, out_dir=None, overfit_steps: int = 100,
               shuffle_epochs: int | None = None, max_train: int = 512, max_heldout: int = 256,
               lr_steps: int = 100, log_results: bool = True) -> list[CheckResult]:
    """All checks on a prepared run (:func:`vistrain.training.prepare.prepare_run`); logs one
    line each unless ``log_results`` is False (``vistrain check`` prints them itself).

    ``ctx.model`` is left untouched.  ``out_dir`` receives ``checks.json`` and ``lr_finder.png``.
    """
    if ctx.data.stream is not None:
        ctx = _sampled(ctx, max_train, max_heldout)
    state = random.getstate(), np.random.get_state()
    try:  # the checks must not change what the training that follows draws
        with torch.random.fork_rng(devices=[]):
            return _run_checks(ctx, out_dir=out_dir, overfit_steps=overfit_steps,
                               shuffle_epochs=shuffle_epochs, max_train=max_train,
                               max_heldout=max_heldout, lr_steps=lr_steps, log_results=log_results)
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])


def _sampled(ctx: RunContext, max_train: int, max_heldout: int) -> RunContext:
    """Streamed data reduced to the images the checks use (``max_train`` training and
    ``max_heldout`` held-out ones, class-balanced), decoded into memory."""
    data, labels, seed = ctx.data, ctx.data.labels(), ctx.cfg.train.seed
    held = "val" if len(data.parts.get("val", [])) else "test"
    parts = {"train": _take(data.part_ids("train"), labels, max_train, seed),
             "val": _take(data.part_ids(held), labels, max_heldout, seed)}
    log.info("checks: %d training and %d held-out images of the streamed data, decoded into memory",
             len(parts["train"]), len(parts["val"]))
    return replace(ctx, data=data.materialize(parts))


def _run_checks(ctx: RunContext, *, out_dir, overfit_steps, shuffle_epochs, max_train, max_heldout,
                lr_steps, log_results) -> list[CheckResult]:
    cfg, data, rt = ctx.cfg, ctx.data, ctx.rt
    labels = data.labels()
    train_ids = data.part_ids("train")
    val_ids = data.part_ids("val" if len(data.parts.get("val", [])) else "test")
    seed = cfg.train.seed
    results = []
    first = data.rows[_take(train_ids, labels, 64, seed)]
    results.append(check_normalization(torch.from_numpy(data.pixels[np.sort(first)]), ctx.pre))
    setup = make_setup(ctx)
    features = setup.normalize is None
    results.append(overfit_small_sample(setup, train_ids, labels, steps=overfit_steps,
                                        device=rt.device, optim_cfg=cfg.optim, seed=seed))
    if len(val_ids) == 0:
        results.append(CheckResult("label-shuffle", None, {}, "skipped: no held-out images"))
    else:
        results.append(label_shuffle_test(
            setup, _take(train_ids, labels, max_train, seed), _take(val_ids, labels, max_heldout, seed),
            labels, epochs=shuffle_epochs or (30 if features else 3),
            batch_size=min(cfg.data.batch_size, 32), device=rt.device, optim_cfg=cfg.optim, seed=seed))
    results.append(lr_finder(ctx, steps=lr_steps, features=setup.features, out_dir=out_dir))
    for r in results if log_results else ():
        (log.info if r.passed is not False else log.warning)("check %s", r.line())
    if out_dir is not None:
        write_checks(out_dir, results)
    return results


def write_checks(out_dir, results: list[CheckResult]) -> None:
    """``out_dir/checks.json``: one entry per check, through its record
    (:class:`vistrain.rundir.CheckRecord`); a measurement JSON cannot hold is written as text."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_run_file(Path(out_dir) / "checks.json", [r.to_dict() for r in results], default=str)
