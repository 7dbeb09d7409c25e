"""``train``: an image folder in, a self-describing run directory out (``vistrain train``).

Example:
    >>> import vistrain
    >>> result = vistrain.train("examples/fashion-mnist-small", out="runs/demo", epochs=5)  # doctest: +SKIP
    >>> round(result.metrics["test"]["accuracy"], 2), result.run_dir                       # doctest: +SKIP
    (0.84, PosixPath('runs/demo'))
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vistrain.config import TrainConfig
from vistrain.config.spelling import option
from vistrain.data.shards.index import is_shard_source
from vistrain.errors import RunDirError
from vistrain.report.build import build_report
from vistrain.report.model_card import MODEL_CARD, write_model_card
from vistrain.rundir import RunFolder, write_run_file
from vistrain.rundir.summary import accuracy_text
from vistrain.training.checkpoint import has_checkpoint
from vistrain.training.checks import run_checks
from vistrain.training.context import RunContext
from vistrain.training.loggers import trackers
from vistrain.training.run import (RunResult, finished_result, recorded_data_root, run_finished,
                                  run_reported, run_training)
from vistrain.training.tracking import track_to_mlflow
from vistrain.workflows.common import default_out_dir, make_config
from vistrain.workflows.logs import show_log_lines

log = logging.getLogger("vistrain")


def train(data: str | Path | None = None, /, *, out: str | Path | None = None, config=None,
          overwrite: bool = False, resume: bool = False, auto_resume: bool = False,
          progress: bool = True, **settings: Any) -> RunResult:
    """Train a classifier on an image folder; returns a ``RunResult`` (run_dir, classes, metrics,
    history).  Every call is independent: train as often as you like in one process.

    Args:
        data: image folder, ``DATA/<class>/<image>`` or ``DATA/{train,val,test}/<class>/``.
        out: run directory (default ``runs/<data>-<time>``); with ``resume`` the run to continue.
        config: a :class:`vistrain.config.TrainConfig`, a dict of sections or a YAML path (e.g. an
            earlier run's ``config.yaml``); with ``resume`` the run's own config by default.
        overwrite: replace an existing run directory.
        resume: continue the interrupted run ``out`` from its last checkpoint.
        auto_resume: continue ``out`` when it holds a checkpoint, else start it (a scheduler that
            restarts the same command, e.g. a Slurm requeue). Under ``torchrun --max-restarts``
            a restarted process (``TORCHELASTIC_RESTART_COUNT`` > 0) does this by itself.
        progress: progress bars (drawn only on a terminal or in a notebook).
        settings: shortcuts ``model``, ``epochs``, ``strategy`` (default ``auto``: chosen by
            measurement), ``budget`` (minutes that any strategy's epochs are cut to fit, and at
            which training stops; 15 by default, ``"none"`` for no limit), ``lr``,
            ``batch_size``, ``seed``, ``augment``, ``pretrained``, ``weights``, ``device``, or
            whole sections as dicts
            (``optim={"name": "sgd"}``, ``data={"num_workers": 2}``: the folder is positional).

    Example:
        >>> import vistrain
        >>> r = vistrain.train("examples/fashion-mnist-small", out="runs/fm", epochs=3)  # doctest: +SKIP
        >>> r.metrics["test"]["accuracy"] > 0.7                                          # doctest: +SKIP
        True
    """
    show_log_lines()
    if not resume and out is not None and (auto_resume or restarted_by_torchrun()):
        resume, overwrite = resume_or_restart(Path(out), overwrite)
    if resume:
        if out is None:
            raise RunDirError("resume=True needs out=RUN_DIR, the run to continue")
        saved = Path(out) / "config.yaml"
        if config is None:
            if not saved.is_file():
                raise RunDirError(f"{out}: no config.yaml; not a vistrain run directory to resume")
            config = saved
        cfg = resume_config(make_config(data, config, settings), Path(out), data)
        return log_outcome(train_run(cfg, Path(out), resume=True, progress=progress))
    cfg = make_config(data, config, settings)
    out = Path(out) if out else default_out_dir(cfg.data.root)
    return log_outcome(train_run(cfg, out, overwrite=overwrite, progress=progress))


def log_outcome(result: RunResult) -> RunResult:
    """Log (INFO) the held-out test accuracy with its 95 % interval and where the report is:
    the last lines of a training run in a notebook, where nothing else prints them."""
    if result.is_main:
        log.info("test accuracy: %s", accuracy_text(result.metrics.get("test")))
        log.info("report: %s  (model card: %s)", result.run_dir / "report.html",
                 result.run_dir / MODEL_CARD)
    return result


def restarted_by_torchrun() -> bool:
    """Whether torchrun's elastic agent restarted this process after a failure (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def resume_or_restart(out: Path, overwrite: bool) -> tuple[bool, bool]:
    """``(resume, overwrite)`` for a run folder that may hold an interrupted run: resume from its
    checkpoint when there is one; without one, a process restarted by torchrun starts the folder
    again (it holds this job's own unfinished run), anything else keeps the usual rules."""
    if has_checkpoint(out):
        log.info("%s holds a checkpoint: resuming from it", out)
        return True, False
    if restarted_by_torchrun() and out.is_dir() and any(out.iterdir()):
        log.info("%s: restarted before the first checkpoint; starting the run again", out)
        return False, True
    return False, overwrite


def train_run(cfg: TrainConfig, out: Path, **options: Any) -> RunResult:
    """One training run as every workflow makes it (``train``, each fold of ``cv``, each setting of
    ``compare``): :func:`vistrain.training.run.run_training` (``options``: its keywords), with the
    quick checks before the first step when ``train.checks`` is on (checks.json, lr_finder.png in
    the run folder) and report.html once the run is written.

    Example:
        >>> from vistrain.workflows.train import train_run
        >>> result = train_run(cfg, Path("runs/demo"), progress=False)  # doctest: +SKIP
        >>> (result.run_dir / "report.html").is_file()                  # doctest: +SKIP
        True
    """
    checks = _checks_before_training if cfg.train.checks else None
    if options.get("resume") and run_finished(out) and not run_reported(out):
        # stopped after training, before its report: what is left is the report, not an epoch
        log.info("%s: training had finished; writing its report", out)
        result = finished_result(out)
    else:
        result = run_training(cfg, out, before_training=checks, **options)
    if result.is_main:
        write_model_card(result.run_dir)
        t = time.perf_counter()
        log.info("report: building report.html")
        # the report comes last: with it the run is complete (--resume then has nothing left to do)
        build_report(result.run_dir)  # a bar over its sections where a terminal watches
        record_report_seconds(result.run_dir, time.perf_counter() - t)
        if "mlflow" in trackers(cfg.logging):
            track_to_mlflow(result.run_dir)
    return result


def record_report_seconds(run_dir: Path, seconds: float) -> None:
    """Add to run.json how long report.html took (``report_seconds``), which ``wall_seconds``
    (written with run.json, before the report) leaves out, and their sum (``total_seconds``)."""
    folder = RunFolder(Path(run_dir), "train")
    try:
        run = folder.run if (folder.path / "run.json").is_file() else None
    except RunDirError:  # no readable run.json: nothing to add to
        return
    if run is None:
        return
    total = None if run.wall_seconds is None else round(run.wall_seconds + seconds, 1)
    run = replace(run, report_seconds=round(seconds, 1), total_seconds=total,
                  wall_seconds_covers="the run up to run.json; report_seconds: report.html; total_seconds: both")
    write_run_file(folder.path / "run.json", run.to_doc())


def _checks_before_training(ctx: RunContext) -> None:
    """``train.checks``: the diagnostics of ``vistrain check`` on the prepared run, logged."""
    run_checks(ctx, out_dir=ctx.out)


def resume_config(cfg: TrainConfig, run_dir: Path, data) -> TrainConfig:
    """``cfg`` pointed at the data ``run_dir`` was trained on: the absolute folder it recorded,
    whatever the working directory is now, unless ``data`` names a moved copy (``--data``).
    Training then checks the folder's files against the recorded fingerprint."""
    if data is None:
        cfg.data.root = recorded_data_root(run_dir) or cfg.data.root
        if not (Path(cfg.data.root).is_dir() or is_shard_source(cfg.data.root)):
            raise RunDirError(f"{cfg.data.root}: the data {run_dir} was trained on is not there "
                              f"any more; give {option('data', 'PATH')} where it was moved to")
    return cfg
