"""``vistrain lr-find DATA``: learning-rate range test with the training settings, plot + suggestion.

The model, preprocessing, split and trainable layers are set up exactly as ``vistrain train`` would
(same flags/config), the range test runs on the training split, and nothing is trained or written
except the plot (and ``--json``).  For ``feature-extraction`` the test trains the new head on top of
the frozen backbone (un-standardized features), so its scale can differ from the cached-feature
head, which sees standardized features; ``gradual`` is tested as fine-tuning of every group with
its discriminative rates.
"""
from __future__ import annotations

import json
from pathlib import Path

from vistrain.cli.common import add_train_options, config_from_args


def register(sub) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test: plot loss vs rate, suggest a rate",
                       description="Exponential ramp of the learning rate from 1e-7 to 10 over ~100 "
                                   "steps; smoothed loss; stops at divergence; suggests the rate of "
                                   "steepest descent.")
    p.add_argument("data", help="image folder: DATA/<class>/<image>")
    p.add_argument("--plot", default="lr_find.png", help="PNG to write (default lr_find.png)")
    p.add_argument("--json", help="also write lrs/losses/suggestion as JSON here")
    p.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=10.0)
    add_train_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config_from_args(args, args.data)
    res = find_lr(cfg, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr)
    from vistrain.training.lrfind import plot_lr_find
    plot_lr_find(res, args.plot)
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in res.items()}, indent=1))
    print(f"steps: {len(res['lrs'])}" + (f", diverged at {res['diverged_at']:.2e}" if res["diverged_at"] else ""))
    print(f"suggested learning rate: {res['suggestion']:.2e} ({res['method']}); "
          f"min/10: {res['min_div_10']:.2e}")
    print(f"plot: {Path(args.plot).resolve()}")
    return 0


def find_lr(cfg, *, steps=100, start_lr=1e-7, end_lr=10.0) -> dict:
    import numpy as np
    from vistrain.data.loader import ArrayBatches
    from vistrain.device import Runtime
    from vistrain.training.layers import trainable_groups
    from vistrain.training.loop import BatchPipeline
    from vistrain.training.lrfind import lr_range_test
    from vistrain.training.run import prepare_model_and_data
    from vistrain.training.strategy import _bn_hook, build_batch_augmentation
    rt = Runtime.create(cfg.train.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        cpu_amp=cfg.train.cpu_amp)
    model, pcfg, pre, data = prepare_model_and_data(cfg, rt)
    index = data.index
    model = rt.prepare_model(model)
    head_only = cfg.strategy.name == "feature-extraction"
    if head_only:
        for p in model.parameters():
            p.requires_grad_(False)
    groups, bn_mode = trainable_groups(cfg, model, head_only=head_only, base_lr=1.0,
                                       n_train=len(data.parts["train"]), pretrained=pcfg.pretrained)
    if head_only:
        bn_mode = "all"
    augment, mix = build_batch_augmentation(cfg, pre, len(index.classes), {})
    pipe = BatchPipeline(normalize=pre.normalize, augment=augment, mix=mix,
                         label_smoothing=cfg.optim.label_smoothing)
    labels = np.zeros(len(data.pixels), np.int64)
    labels[data.rows] = data.labels()
    batches = ArrayBatches(data.pixels, labels, batch_size=cfg.data.batch_size,
                           indices=data.part_rows("train"), shuffle=True, seed=cfg.train.seed)
    return lr_range_test(model, batches, pipe, rt, param_groups=groups, optim_cfg=cfg.optim,
                         steps=steps, start_lr=start_lr, end_lr=end_lr, on_train_mode=_bn_hook(bn_mode))
