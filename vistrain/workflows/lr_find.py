"""``lr_find``: the learning-rate range test with the training settings (``vistrain lr-find``;
see :mod:`vistrain.training.lrfind`).

The model, preprocessing, split and trainable layers are set up exactly as ``train`` would, the
range test runs on the training split, and nothing is trained or written except the plot.  For
``feature-extraction`` the test trains the new head on top of the frozen backbone (un-standardized
features), so its scale can differ from the cached-feature head, which sees standardized features;
``gradual`` is tested as fine-tuning of every group with its discriminative rates.

Example:
    >>> import vistrain
    >>> res = vistrain.lr_find("examples/fashion-mnist-small", plot="lr.png")  # doctest: +SKIP
    >>> f"{res['suggestion']:.1e}"                                             # doctest: +SKIP
    '3.0e-03'
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vistrain.data.loader import ArrayBatches
from vistrain.device import Runtime
from vistrain.training.layers import trainable_groups
from vistrain.training.loop import BatchPipeline
from vistrain.training.lrfind import lr_range_test, plot_lr_find
from vistrain.training.run import prepare_model_and_data
from vistrain.training.strategy import _bn_hook, build_batch_augmentation
from vistrain.workflows.common import make_config, show_log_lines


def lr_find(data: str | Path | None = None, *, steps: int = 100, start_lr: float = 1e-7,
            end_lr: float = 10.0, plot: str | Path | None = None, config=None,
            progress: bool = True, **settings: Any) -> dict:
    """Exponential ramp of the learning rate from ``start_lr`` to ``end_lr`` over ``steps``
    steps; returns :func:`vistrain.training.lrfind.lr_range_test`'s dict (``lrs``, ``losses``,
    ``suggestion``, ``min_div_10``, ``diverged_at``, ``method``, ...).  ``plot``: a PNG to write.
    ``config`` and ``settings`` as for :func:`vistrain.train`.

    Example:
        >>> import vistrain
        >>> res = vistrain.lr_find("data", model="resnet18", strategy="finetune", steps=50)  # doctest: +SKIP
        >>> 1e-7 <= res["suggestion"] <= 10                                                # doctest: +SKIP
        True
    """
    show_log_lines()
    cfg = make_config(data, config, settings)
    rt = Runtime.create(cfg.train.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        cpu_amp=cfg.train.cpu_amp)
    model, pcfg, pre, prepared = prepare_model_and_data(cfg, rt, progress=progress)
    model = rt.prepare_model(model)
    head_only = cfg.strategy.name == "feature-extraction"
    if head_only:
        for p in model.parameters():
            p.requires_grad_(False)
    groups, bn_mode = trainable_groups(cfg, model, head_only=head_only, base_lr=1.0,
                                       n_train=len(prepared.parts["train"]), pretrained=pcfg.pretrained)
    augment, mix = build_batch_augmentation(cfg, pre, len(prepared.index.classes), {})
    pipe = BatchPipeline(normalize=pre.normalize, augment=augment, mix=mix,
                         label_smoothing=cfg.optim.label_smoothing)
    labels = np.zeros(len(prepared.pixels), np.int64)
    labels[prepared.rows] = prepared.labels()
    batches = ArrayBatches(prepared.pixels, labels, batch_size=cfg.data.batch_size,
                           indices=prepared.part_rows("train"), shuffle=True, seed=cfg.train.seed)
    result = lr_range_test(model, batches, pipe, rt, param_groups=groups, optim_cfg=cfg.optim,
                           steps=steps, start_lr=start_lr, end_lr=end_lr,
                           on_train_mode=_bn_hook("all" if head_only else bn_mode))
    if plot is not None:
        plot_lr_find(result, plot)
    return result
