"""``check``: quick diagnostics before training (``vistrain check``; see
:mod:`vistrain.interpret.diagnostics`).

Example:
    >>> import vistrain
    >>> results = vistrain.check("examples/fashion-mnist-small")  # doctest: +SKIP
    >>> [(r.name, r.passed) for r in results]                     # doctest: +SKIP
    [('normalization', True), ('overfit-small-sample', True), ('label-shuffle', True), ('lr-finder', True)]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vistrain.config import TrainConfig
from vistrain.device import Runtime
from vistrain.errors import VistrainError
from vistrain.interpret.diagnostics import CheckResult, run_checks
from vistrain.training.lrfind import check_range
from vistrain.training.run import prepare_model_and_data
from vistrain.workflows.common import make_config, show_log_lines


def check(data: str | Path | None = None, /, *, out: str | Path | None = None, steps: int = 100,
          lr_steps: int = 100, config=None, progress: bool = True, log_results: bool = True,
          **settings: Any) -> list[CheckResult]:
    """Normalization of a real batch, overfitting 2x16 images, the label-shuffle (leakage) test
    and the learning-rate finder, with the model and data set up exactly as ``train`` would
    (``config`` and ``settings`` as for :func:`vistrain.train`).  Nothing is trained for real.

    Returns one :class:`~vistrain.interpret.diagnostics.CheckResult` per check (``passed`` is
    None for a skipped one; ``to_dict()`` for JSON).  ``out`` receives checks.json and
    lr_finder.png; ``steps`` / ``lr_steps`` are the overfit test's and the range test's steps;
    ``log_results`` logs one line per check (the command line prints them instead).

    Example:
        >>> import vistrain
        >>> bad = [r for r in vistrain.check("data", model="resnet18") if r.passed is False]  # doctest: +SKIP
        >>> [r.line() for r in bad]                                                         # doctest: +SKIP
        []
    """
    show_log_lines()
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise VistrainError(f"--steps {steps!r}: the overfit test needs at least 1 step (default 100)")
    check_range(lr_steps, 1e-7, 10.0, flag="--lr-steps")
    cfg = make_config(data, config, settings)
    model, pcfg, pre, prepared, rt = prepare(cfg, progress=progress)
    return run_checks(cfg, model, pcfg, pre, prepared, rt, out_dir=Path(out) if out else None,
                      progress=progress, overfit_steps=steps, lr_steps=lr_steps,
                      log_results=log_results)


def prepare(cfg: TrainConfig, progress: bool = True):
    """``(model, pretrained_cfg, preprocess, prepared_data, runtime)`` exactly as ``train`` makes
    them (:func:`vistrain.training.run.prepare_model_and_data`)."""
    rt = Runtime.create(cfg.train.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        cpu_amp=cfg.train.cpu_amp)
    model, pcfg, pre, prepared = prepare_model_and_data(cfg, rt, progress=progress)
    return model, pcfg, pre, prepared, rt
