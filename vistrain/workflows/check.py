"""``check``: quick diagnostics before training (``vistrain check``; see
:mod:`vistrain.training.checks`).

Example:
    >>> import vistrain
    >>> results = vistrain.check("examples/fashion-mnist-small")  # doctest: +SKIP
    >>> [(r.name, r.passed) for r in results]                     # doctest: +SKIP
    [('normalization', True), ('overfit-small-sample', True), ('label-shuffle', True), ('lr-finder', True)]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vistrain import fsutil
from vistrain.config import TrainConfig
from vistrain.device import Runtime
from vistrain.errors import VistrainError
from vistrain.training.checks import CheckResult, run_checks
from vistrain.training.context import RunContext
from vistrain.training.lrfind import check_range
from vistrain.training.prepare import prepare_run
from vistrain.workflows.common import make_config
from vistrain.workflows.logs import show_log_lines


def check(data: str | Path | None = None, /, *, out: str | Path | None = None, steps: int = 100,
          lr_steps: int = 100, config=None, progress: bool = True, log_results: bool = True,
          **settings: Any) -> list[CheckResult]:
    """Normalization of a real batch, overfitting 2x16 images, the label-shuffle (leakage) test
    and the learning-rate finder, with the model and data set up exactly as ``train`` would
    (``config`` and ``settings`` as for :func:`vistrain.train`).  Nothing is trained for real.

    Returns one :class:`~vistrain.training.checks.CheckResult` per check (``passed`` is
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
    if out:  # before the data is decoded: never into the data, never a folder of someone else's
        fsutil.check_outputs_folder(out, data_folders=[cfg.data.root])
    ctx = prepare(cfg, progress=progress)
    if out:
        fsutil.prepare_outputs_folder(out, data_folders=[cfg.data.root])
    return run_checks(ctx, out_dir=Path(out) if out else None, overfit_steps=steps,
                      lr_steps=lr_steps, log_results=log_results)


def prepare(cfg: TrainConfig, progress: bool = True) -> RunContext:
    """The run context (model, preprocessing, prepared data, runtime; no output folder) exactly as
    ``train`` makes it (:func:`vistrain.training.prepare.prepare_run`), less the run folder and
    the recipe race: strategy auto's first choice is taken."""
    return prepare_run(cfg, Runtime.for_train(cfg.train), progress=progress)
