"""The main job: a data folder in, a self-describing run directory out.

``run_training(cfg, out_dir)`` scans the folder, decodes every image once into a pixel cache
(skipping or failing on unreadable files, as configured), makes and saves a stratified split,
resolves preprocessing from the model's pretrained config (all in
:func:`~vistrain.training.prepare.prepare_run`, the set-up every run shares, gathered in a
:class:`~vistrain.training.context.RunContext`; :class:`RunFolderStep` makes the run folder
within it, after the model and before the pixels),
trains with the chosen strategy (:func:`~vistrain.training.strategy.train_model`: a
:class:`~vistrain.training.plan.TrainingPlan` run by ``fit``), evaluates on the held-out test part
and writes the artifact, metrics, curves and figures.  The report and the pre-training checks
belong to the workflow (:mod:`vistrain.workflows.train`), which calls this.

Example:
    >>> from vistrain.training.run import run_training
    >>> result = run_training(cfg, "runs/demo", progress=False)  # doctest: +SKIP
    >>> round(result.metrics["test"]["accuracy"], 2)              # doctest: +SKIP
    0.86
"""
from __future__ import annotations

import hashlib
import logging
import logging.handlers
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from vistrain import fsutil
from vistrain.artifact import save_model, versions
from vistrain.config import TrainConfig
from vistrain.config.spelling import option
from vistrain.data.doctor.report import doctor_doc
from vistrain.data.loader import ArrayBatches
from vistrain.data.scan import ImageIndex
from vistrain.data.stream import in_order, location, open_index, shards_digest
from vistrain.data.splits import group_record, split_source, split_warnings, splits_doc
from vistrain.device import Runtime, choose_cpu_threads, cpu_threads_kept, unwrap
from vistrain.errors import DataError, RunDirError, VistrainError
from vistrain.evaluation import curves
from vistrain.evaluation.calibration import calibration_summary, decide_temperature, scale_probabilities
from vistrain.evaluation.figures import write_run_figures
from vistrain.evaluation.metrics import compute_metrics
from vistrain.training import checkpoint as ckpt
from vistrain.rundir import RunFolder, write_run_file
from vistrain.rundir.record import SCHEMA_VERSION, RunRecord, SkippedFile, StrategyRecord
from vistrain.rundir.summary import run_summary
from vistrain.training.auto import budget_deadline
from vistrain.training.budget import fit_to_budget
from vistrain.training.context import PreparedData, RunContext
from vistrain.training.loggers import check_logging, write_logs
from vistrain.training.loop import BatchPipeline, predict
from vistrain.training.prepare import begin_run, prepare_run, run_quick_checks, scratch_kwargs
from vistrain.training.race import FOLDER as RACE_FOLDER
from vistrain.training.race import RaceOutcome, install_checkpoint, remove_race_folder
from vistrain.training.race_memo import race_or_kept
from vistrain.training.strategy import FitResult, train_model

log = logging.getLogger("vistrain")


@dataclass
class RunResult:
    """What ``vistrain.train`` returns: the run folder, class names, ``metrics``
    (``{"val": {...}, "test": {...}}``) and ``history`` (one row per epoch).  ``is_main`` is False
    on the other processes of a distributed run (they write nothing)."""
    run_dir: Path
    classes: list[str]
    metrics: dict
    history: list[dict]
    is_main: bool = True

    def __repr__(self) -> str:  # a few lines in a notebook, not every metric of every class
        return run_summary("RunResult", self.run_dir, self.classes, self.metrics.get("test"))


def run_record(cfg: TrainConfig, data: PreparedData, strategy: dict, seconds: float,
               fingerprint: dict | None = None, calibration: dict | None = None) -> RunRecord:
    """The content of run.json: how a finished run was made (with metrics.json it marks a run as
    finished).  ``strategy``: the strategy's record (``FitResult.record`` plus the runtime);
    ``calibration``: the temperature decision (T, decision, reason, NLLs)."""
    return RunRecord(schema=SCHEMA_VERSION, seed=cfg.train.seed, split_seed=cfg.data.split_seed,
                     versions=versions(), data_root=location(data.index.root), data_fingerprint=fingerprint,
                     n_images=len(data.index), class_counts=data.index.counts(),
                     skipped_files=[SkippedFile(f, r) for f, r in data.index.skipped],
                     strategy=StrategyRecord.from_doc(strategy), wall_seconds=round(seconds, 1),
                     cache=data.cache, calibration=calibration,
                     warnings=split_warnings(data.index, data.parts))


def prepare_run_dir(out: Path, *, overwrite: bool, resume: bool, data_root: str | Path | None = None,
                    fingerprint: dict | None = None) -> Path:
    """Create (or check, for ``resume``) the run directory; see :func:`fsutil.prepare_output_dir`:
    ``--overwrite`` replaces only a vistrain run, moved aside until the new one has a checkpoint,
    and never the data folder, a folder around it, the home folder or the filesystem root."""
    info = {} if fingerprint is None else {"data_root": location(data_root),
                                          "data_fingerprint": fingerprint}
    fsutil.prepare_output_dir(out, kind="run", overwrite=overwrite, resume=resume,
                              data_folder=data_root, **info)
    return Path(out)


def run_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run (run.json and metrics.json, written last)."""
    return (Path(run_dir) / "run.json").is_file() and (Path(run_dir) / "metrics.json").is_file()


def run_reported(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run whose report was written too (the last step of a
    training job): a run killed after training but before its report is completed by ``--resume``."""
    return run_finished(run_dir) and (Path(run_dir) / "report.html").is_file()


def finished_result(run_dir: str | Path) -> RunResult:
    """The :class:`RunResult` of the finished run in ``run_dir``, read from its files."""
    folder = RunFolder(Path(run_dir), "train")
    try:
        missing = [n for n in ("model.json", "metrics.json", "history.json") if not (folder.path / n).is_file()]
        if missing:
            raise RunDirError(f"{', '.join(missing)} missing")
        classes, metrics, history = folder.meta.classes, folder.metrics, folder.history
    except RunDirError as err:
        raise RunDirError(f"{run_dir}: a finished run's files are unreadable ({err}); train it "
                          f"again with {option('overwrite')}") from None
    return RunResult(folder.path, list(classes), {part: m.to_doc() for part, m in metrics.items()},
                     [h.to_doc() for h in history])


def finished_epochs(run_dir: str | Path) -> int | None:
    """The number of epochs a finished run trained (rows of its history.json), None if unknown."""
    folder = RunFolder(Path(run_dir), "train")
    try:
        return len(folder.history) if (folder.path / "history.json").is_file() else None
    except RunDirError:
        return None


def check_output_ready(out: Path, *, overwrite: bool, resume: bool,
                       data_folder: str | Path | None, kind: str = "run",
                       epochs: int | None = None) -> None:
    """What :func:`fsutil.prepare_output_dir` would refuse, checked without writing anything,
    before the scan, strategy auto's measuring and the model: a taken ``--out``, a folder that is
    not a vistrain run, and, for ``resume``, a run that is already finished, unless ``epochs``
    asks for more epochs than it trained and its checkpoint was kept (then it trains on).

    Example:
        >>> import tempfile
        >>> check_output_ready(Path(tempfile.mkdtemp()) / "new", overwrite=False, resume=False,
        ...                    data_folder=None)
    """
    fsutil.check_output_location(out, data_folder=data_folder)
    if not out.is_dir() or not any(out.iterdir()):
        return  # prepare_output_dir names a missing run to resume
    found = fsutil.vistrain_output_kind(out)
    if resume:
        if kind == found == "run" and run_reported(out):
            done = finished_epochs(out)
            longer = epochs is not None and done is not None and epochs > done
            if longer and ckpt.has_checkpoint(out):
                return  # trains on from its last epoch to ``epochs``
            how = (f"its checkpoint was not kept ({option('keep_checkpoints')} keeps it); "
                   if longer else f"with {option('resume')} give more epochs than it trained "
                   f"({option('epochs', 'N')}, N > {done}) where its checkpoint was kept, or ")
            raise RunDirError(f"{out}: the run is finished ({done if done is not None else 'all'} "
                              f"epochs, metrics.json written), nothing to resume; to train longer, "
                              f"{how}repeat it with more epochs into a new folder: vistrain train "
                              f"--config {out / 'config.yaml'} --epochs N --out NEW_RUN")
        return
    fsutil.check_replaceable(out, found, kind=kind, overwrite=overwrite)  # prepare_output_dir's rules


class RunLogFile:
    """The log of one run (INFO and up) in ``RUN_DIR/train.log``: the lines logged before the
    run folder exists (the scan, strategy auto's measuring) are held and written once it does.
    It holds what the ``vistrain`` logger passes on: INFO from the CLI and ``vistrain.train``,
    warnings only where an application set that logger (or the root logger) to WARNING."""

    def __init__(self, enabled: bool):
        self.buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        self.buffer.setLevel(logging.INFO)
        self.enabled = enabled
        self.file: logging.FileHandler | None = None

    def open_in(self, run_dir: Path) -> None:
        """Start writing to ``run_dir/train.log`` (appended to on resume), held lines first."""
        if not self.enabled or self.file is not None:
            return
        # appended line by line as the run goes (not an atomic write): a log must survive a kill
        self.file = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                                 "%Y-%m-%d %H:%M:%S"))
        self.buffer.setTarget(self.file)
        self.buffer.flushLevel = logging.NOTSET  # from now on each line goes out as it comes
        self.buffer.flush()


@contextmanager
def run_log_file(out: Path, *, enabled: bool) -> Iterator[RunLogFile]:
    """A :class:`RunLogFile` attached to the ``vistrain`` logger for the duration of a run."""
    handle = RunLogFile(enabled)
    logger = logging.getLogger("vistrain")
    if enabled:
        logger.addHandler(handle.buffer)
    try:
        yield handle
    finally:
        if enabled:
            logger.removeHandler(handle.buffer)
            handle.buffer.flush()
            handle.buffer.close()
            if handle.file is not None:
                handle.file.close()


def data_fingerprint(index: ImageIndex) -> dict:
    """What a resumed run checks its data against: the sha256 of the sorted ``relative path, size``
    lines of every file in ``index`` (``{"sha256": hex, "n_files": N, "content": hex}``), and
    ``content``, a digest of the files' bytes (:func:`content_digest`), so that an image replaced
    by another of the same size is noticed too; for shards, of each shard's name, size and sha256
    (as ``index.json`` records them: the shards' bytes are checked against them as they stream)."""
    if index.shards is not None:
        return {"sha256": shards_digest(index.shards), "n_files": len(index.shards.shards)}
    root = Path(index.root)
    rel = sorted((Path(p).relative_to(root).as_posix(), Path(p)) for p in index.paths)
    lines = [f"{name}\t{p.stat().st_size}\n" for name, p in rel]
    return {"sha256": hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest(),
            "n_files": len(lines), "content": content_digest([p for _, p in rel])}


CONTENT_FILES = 4096      # files whose bytes the content digest reads (all of a smaller set)
CONTENT_BYTES = 1 << 16   # bytes read from each end of a file


def content_digest(paths: list[Path]) -> str:
    """sha256 over the first and last 64 KiB of every file of ``paths`` (in the order given), or
    of 4,096 of them evenly spaced when there are more: a resume notices changed image bytes at
    the cost of reading a few MB, not the whole data set.

    Example:
        >>> len(content_digest([]))
        64
    """
    step = max(1, -(-len(paths) // CONTENT_FILES))
    h = hashlib.sha256()
    for p in paths[::step]:
        try:
            with open(p, "rb") as fh:
                h.update(fh.read(CONTENT_BYTES))
                if fh.seek(0, os.SEEK_END) > 2 * CONTENT_BYTES:
                    fh.seek(-CONTENT_BYTES, os.SEEK_END)
                    h.update(fh.read(CONTENT_BYTES))
        except OSError as err:  # unreadable now: that it is unreadable is part of the fingerprint
            h.update(f"\0{type(err).__name__}\0".encode())
    return h.hexdigest()


def recorded_data_root(run_dir: str | Path) -> str | None:
    """The absolute data folder a run was trained on (its marker, else run.json), or None."""
    marker = fsutil.read_marker(run_dir) or {}
    if marker.get("data_root"):
        return marker["data_root"]
    try:
        return RunFolder(Path(run_dir), "train").run.data_root
    except RunDirError:
        return None


def check_same_data(run_dir: Path, index: ImageIndex, fingerprint: dict) -> None:
    """On resume: stop unless ``index`` holds the files the run was started on."""
    marker = fsutil.read_marker(run_dir) or {}
    want = marker.get("data_fingerprint")
    if not isinstance(want, dict) or "sha256" not in want:
        log.warning("%s records no data fingerprint (an older run); cannot check that %s is the "
                    "data it was trained on", run_dir, index.root)
        return
    if want["sha256"] != fingerprint["sha256"]:
        was = marker.get("data_root", "?")
        raise DataError(f"{index.root}: not the data {run_dir} was trained on ({was}: "
                        f"{want.get('n_files')} files; here: {fingerprint['n_files']} files, names or "
                        "sizes differ); restore it, or give --data PATH to an unchanged copy")
    if want.get("content") and fingerprint.get("content") and want["content"] != fingerprint["content"]:
        raise DataError(f"{index.root}: not the data {run_dir} was trained on (same file names and "
                        "sizes, but the contents of some images differ); restore it, or give "
                        "--data PATH to an unchanged copy")


def run_training(cfg: TrainConfig, out_dir: str | Path, *, overwrite: bool = False,
                 resume: bool = False, progress: bool = True, index: ImageIndex | None = None,
                 parts: dict[str, list[int]] | None = None,
                 before_training: Callable[[RunContext], object] | None = None) -> RunResult:
    """Train per ``cfg`` into ``out_dir`` (see module docstring); returns the test metrics.

    Everything that can be checked without decoding an image (every setting, the data folder,
    the output folder, the model name, on resume the data's fingerprint) is checked before the
    run directory is touched.  ``index`` and ``parts`` (``{"train", "val", "test", ...}`` indices
    into ``index``) bypass the scan and :func:`make_parts`: ``vistrain cv`` trains each fold this
    way.  Parts other than train/val/test are evaluated too (e.g. the user's test folder next to a
    fold's test part).  ``before_training(ctx)`` runs once the data is prepared, before the
    first step, on the main process of a fresh (not resumed) run: the workflow's checks.
    """
    t0, started = time.perf_counter(), time.monotonic()
    begin_run(cfg)
    out = Path(out_dir)
    main_process = int(os.environ.get("RANK", "0")) == 0
    # first thing: a taken --out or a finished run is refused before minutes of measuring (by
    # rank 0 only: the other ranks would find the folder rank 0 has started)
    data_folder = index.root if index else cfg.data.root
    if main_process:
        check_output_ready(out, overwrite=overwrite, resume=resume, data_folder=data_folder,
                           epochs=cfg.train.epochs)
    else:
        fsutil.check_output_location(out, data_folder=data_folder)
    with run_log_file(out, enabled=main_process) as log_file, cpu_threads_kept():
        return _run_training(cfg, out, overwrite=overwrite, resume=resume, progress=progress,
                             index=index, parts=parts, before_training=before_training, t0=t0,
                             started=started, log_file=log_file)


def _run_training(cfg, out, *, overwrite, resume, progress, index, parts, before_training, t0,
                  started, log_file):
    rt = Runtime.for_train(cfg.train)
    threads = choose_cpu_threads(rt)  # before auto measures: its speeds are at these threads
    if threads is not None:
        log.info("threads: %d (%s)", threads["threads"], threads["reason"])
    log.info("runtime: %s", rt.describe())
    index = index or open_index(cfg.data.root)
    fingerprint = data_fingerprint(index)
    if resume:
        check_same_data(out, index, fingerprint)
    check_logging(cfg.logging)  # fail before training, not after it
    findings = run_quick_checks(index, cfg) if cfg.data.doctor and rt.is_main else None
    folder = RunFolderStep(out, index, parts, overwrite=overwrite, resume=resume, fingerprint=fingerprint,
                           log_file=log_file, findings=findings, started=started, progress=progress)
    try:  # strategy auto chooses before the run folder is made, the pixels are decoded after it
        ctx = prepare_run(cfg, rt, index, parts, progress=progress, started=started, out=out,
                          deadline=budget_deadline(cfg, started), before_pixels=folder)
        return _train_into(ctx, given_parts=parts is not None, resume=resume, fingerprint=fingerprint,
                           t0=t0, before_training=before_training, race=folder.race, threads=threads)
    except BaseException as err:
        folder.undo(err)
        raise


@dataclass
class RunFolderStep:
    """A training run's ``before_pixels`` (:func:`~vistrain.training.prepare.prepare_run`): once
    strategy auto has chosen and the model is built, the run folder is made (config.yaml, the held
    log lines, doctor.json), then, where auto has two or more candidates, the recipe race runs in
    it.  ``race``: its outcome; a failure before the first checkpoint undoes the folder
    (:meth:`undo`)."""
    out: Path
    index: ImageIndex
    parts: dict | None
    overwrite: bool
    resume: bool
    fingerprint: dict
    log_file: RunLogFile
    findings: list | None
    started: float
    progress: bool
    race: RaceOutcome | None = None
    made: dict | None = None  # {"fresh", "existed_empty"} once this process made the folder

    def __call__(self, requested: TrainConfig, cfg: TrainConfig, auto: dict | None,
                 rt: Runtime) -> tuple[TrainConfig | None, tuple | None]:
        racing = auto is not None and len(auto.get("entrants") or []) >= 2
        # a run killed during the recipe race races again: its config is still strategy auto
        self._make(requested if racing else cfg, rt)
        if not racing:
            return None, None
        cfg, self.race = recipe_race(requested, self.out, rt, self.index, self.parts, auto,
                                     started=self.started, progress=self.progress)
        return cfg, self.race.prepared if self.race is not None else None

    def _make(self, cfg: TrainConfig, rt: Runtime) -> None:
        """The run folder, before any image is decoded: a run killed at any point after this can
        be resumed."""
        out = self.out
        existed_empty = out.is_dir() and not any(out.iterdir())
        fresh = not self.resume and (existed_empty or not out.exists())
        if rt.is_main:
            prepare_run_dir(out, overwrite=self.overwrite, resume=self.resume, data_root=self.index.root,
                            fingerprint=self.fingerprint)
            if self.resume:  # pins the run to this copy of the data from now on (e.g. one given by --data)
                fsutil.update_marker(out, data_root=location(self.index.root),
                                     data_fingerprint=self.fingerprint)
            ckpt.assign_run_id(out)  # its checkpoints carry it: one copied from another run is refused
            save_config(cfg, out, self.index)
            self.log_file.open_in(out)
            if self.findings is not None:
                write_run_file(out / "doctor.json", doctor_doc(self.findings))
        rt.barrier()
        if rt.is_main:
            self.made = {"fresh": fresh, "existed_empty": existed_empty}

    def undo(self, err: BaseException) -> None:
        """After ``err``: :func:`_undo_unstarted_run` where this process made the folder."""
        if self.made is not None:
            _undo_unstarted_run(self.out, **self.made, user_error=isinstance(err, VistrainError))


def save_config(cfg: TrainConfig, out: Path, index: ImageIndex) -> None:
    """``out/config.yaml``: every setting of the run, with the data folder it was given."""
    replace(cfg, data=replace(cfg.data, root=location(index.root))).save(out / "config.yaml")


def _undo_unstarted_run(out: Path, *, fresh: bool, existed_empty: bool, user_error: bool) -> None:
    """A run that failed before its first checkpoint: bring back the run it replaced, or, after a
    user error (unreadable images with on_bad_image=fail, ...), remove the folder it created so
    that the corrected command needs no --overwrite.  An interrupted run stays resumable."""
    if (out / "checkpoints" / "last.pt").is_file():
        return
    if fsutil.restore_replaced(out) is None and fresh and user_error:
        if fsutil.read_marker(out) is not None:  # only what this call created
            shutil.rmtree(out)
            if existed_empty:
                out.mkdir()


def recipe_race(requested: TrainConfig, out: Path, rt: Runtime, index: ImageIndex, parts, auto: dict,
                *, started: float, progress: bool) -> tuple[TrainConfig, RaceOutcome | None]:
    """Race strategy auto's entrants in ``out/race``, or take an earlier race's kept outcome
    (:func:`~vistrain.training.race_memo.race_or_kept`); returns the winner's config (saved as the
    run's) and the outcome (None when kept: the winner then trains from its start).  The
    winner's paused checkpoint becomes the run's, so the run continues from it."""
    if rt.is_main:
        remove_race_folder(out)  # a race of a killed run: raced again
    cfg, outcome = race_or_kept(requested, index, rt, parts, auto, out / RACE_FOLDER, started=started,
                                progress=progress)
    if rt.is_main:
        save_config(cfg, out, index)  # a resume continues the winner, not the race
        if outcome is not None and outcome.checkpoint is not None:
            install_checkpoint(outcome.checkpoint, out)
        remove_race_folder(out)
    rt.barrier()
    return cfg, outcome


def _train_into(ctx: RunContext, *, given_parts: bool, resume: bool, fingerprint: dict, t0: float,
                before_training, race: RaceOutcome | None, threads: dict | None) -> RunResult:
    cfg, out, rt, data = ctx.cfg, ctx.out, ctx.rt, ctx.data
    if rt.is_main:
        warnings = split_warnings(data.index, data.parts)
        for line in warnings:
            log.warning(line)
        write_run_file(out / "splits.json", splits_doc(
            data.index, data.parts, seed=cfg.data.split_seed,
            source=split_source(cfg.data, given_parts=given_parts, given_folders=bool(data.index.given_split)),
            groups=group_record(cfg.data), warnings=warnings))
    if before_training is not None and rt.is_main and not resume:
        before_training(ctx)
    ctx = ctx.with_model(rt.prepare_model(ctx.model))
    budget = None
    if ctx.auto is None:  # a named recipe: estimated now, its epochs cut to fit (auto planned already)
        ctx, budget = fit_to_budget(ctx, resume=resume)
        if budget is not None and budget["cut_epochs"] is not None and rt.is_main:
            save_config(ctx.cfg, out, data.index)  # a resume or a repeat trains the cut epochs
    continued = race is not None and race.checkpoint is not None  # the winner's rungs: reused
    fitted = train_model(ctx, resume=resume or continued,
                         features=race.features if race is not None else None)
    if budget is not None:
        fitted.record["budget"] = budget
    if threads is not None:
        fitted.record["cpu_threads"] = threads
    if rt.is_main:  # a head fitted without checkpoints (logistic regression) ends the swap here
        fsutil.discard_replaced(out)
    metrics, calibration = final_evaluation(ctx, features=fitted.features)
    if rt.is_main:
        _write_run(ctx, fitted, fingerprint, t0, calibration, metrics)
        if not cfg.train.keep_checkpoints:
            remove_checkpoints(out)
    rt.barrier()
    return RunResult(out, data.index.classes, metrics, fitted.history, is_main=rt.is_main)


def remove_checkpoints(run_dir: Path) -> None:
    """Delete ``checkpoints/`` of a finished run (last.pt and prev.pt: the size of the model
    and its optimizer state each); the finished run is model.safetensors, and is not resumed."""
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        log.info("run finished: removed %s (%.0f MB; --keep-checkpoints keeps it)", folder, size / 1e6)


def _write_run(ctx: RunContext, fitted: FitResult, fingerprint: dict, t0: float, calibration: dict,
               metrics: dict) -> None:
    """model.safetensors + model.json, run.json, history.json, curves, logs and figures."""
    cfg, out = ctx.cfg, ctx.out
    save_model(out, unwrap(ctx.model), model_name=cfg.model.name, classes=ctx.data.index.classes,
               preprocess=ctx.pre, model_kwargs=scratch_kwargs(cfg), pretrained_cfg=ctx.pcfg.to_dict(),
               extra={"strategy": fitted.record, "calibration": calibration})
    strategy = {**fitted.record, "runtime": ctx.rt.describe(), "calibration": calibration}
    record = run_record(cfg, ctx.data, strategy, time.perf_counter() - t0, fingerprint, calibration)
    write_run_record(out, record, fitted.history, model_name=cfg.model.name)
    write_logs(out, cfg.logging, fitted.history, metrics)
    write_run_figures(out)


def final_evaluation(ctx: RunContext, features: np.ndarray | None = None) -> tuple[dict, dict]:
    """Metrics of the final (best) model ``ctx.model`` on val, test and any other part but train;
    writes metrics.json and predictions.json into ``ctx.out``.

    With a frozen backbone, ``features`` (``(N, D)`` cached, aligned with ``ctx.data.index``) go
    through the installed classifier only: the same logits as the full forward pass, without
    recomputing them.  The probabilities are calibrated first (:func:`calibrate`: a temperature
    fitted on val), as ``predict`` will give them; each part's metrics carry ``calibration``
    (NLL and ECE before and after).  Returns ``({"val": {...}, "test": {...}}, calibration)``.
    """
    labels = ctx.data.labels()
    parts = ("val", "test", *(p for p in ctx.data.parts if p not in ("train", "val", "test")))
    raw = {part: (idx, part_probabilities(ctx, part, idx, features))
           for part in parts if len(idx := ctx.data.part_ids(part))}
    val = raw.get("val")
    record = calibrate(ctx.cfg.train.calibration, val[1] if val else None, labels[val[0]] if val else None,
                       seed=ctx.cfg.train.seed)
    t = record["temperature"]
    results, preds = {}, {}
    for part, (idx, probs) in raw.items():
        scaled = scale_probabilities(probs, t) if t != 1.0 else probs
        results[part] = compute_metrics(labels[idx], scaled, ctx.data.index.classes, n_bootstrap=500)
        if record["method"] == "temperature":  # before/after equal when T = 1 was kept
            results[part]["calibration"] = {"fitted_on": "val", "temperature": t,
                                            "decision": record["decision"], "reason": record["reason"],
                                            **calibration_summary(probs, labels[idx], t)}
        preds[part] = {"indices": idx.tolist(), "labels": labels[idx].tolist(), "probs": scaled.round(6).tolist()}
    if ctx.rt.is_main:
        write_run_file(ctx.out / "metrics.json", results)
        write_run_file(ctx.out / "predictions.json", preds, indent=None)
    return results, record


def part_probabilities(ctx: RunContext, part: str, idx: np.ndarray, features: np.ndarray | None) -> np.ndarray:
    """``(len(idx), K)`` softmax of the final model on the images ``idx`` of ``part``."""
    model, data, rt = unwrap(ctx.model), ctx.data, ctx.rt
    if features is not None:
        with torch.no_grad():  # eval mode: timm's pre-classifier dropout is the identity
            logits = model.get_classifier()(torch.from_numpy(features[idx]).to(rt.device))
        return logits.float().softmax(1).cpu().numpy()
    order = None
    if data.stream is not None:
        batches, order = data.stream.eval_batches(idx, part=part, batch_size=64)
    else:
        batches = ArrayBatches(data.pixels, np.zeros(len(data.pixels), np.int64), batch_size=64,
                               indices=data.rows[idx])
    probs, _ = predict(model, batches, BatchPipeline(normalize=ctx.pre.normalize), rt,
                       desc=f"evaluating {part}", progress=ctx.progress)
    return probs if order is None else in_order(probs, order, idx)


def calibrate(method: str, val_probs: np.ndarray | None, val_labels: np.ndarray | None,
              seed: int = 0) -> dict:
    """The run's calibration record (:func:`~vistrain.evaluation.calibration.decide_temperature`):
    a temperature cross-fitted on halves of the validation split (never on test), applied only
    when the split is large enough and it lowers the held-out NLL; ``{"method": "none",
    "temperature": 1.0, "decision": "off", "reason"}`` when switched off."""
    if method == "none":
        return {"method": "none", "temperature": 1.0, "decision": "off", "reason": "train.calibration=none"}
    if val_probs is None:
        val_probs, val_labels = np.zeros((0, 1)), np.zeros(0, np.int64)
    record = decide_temperature(val_probs, val_labels, seed=seed)
    log.info("calibration: %s", f"T = {record['temperature']:.3f}, {record['reason']}"
             if record["decision"] == "applied" else f"T = 1 (not applied): {record['reason']}")
    return record


def write_run_record(out: Path, record: RunRecord, history: list[dict], *, model_name: str = "") -> None:
    """history.json, run.json (last: with metrics.json it marks a finished run) and curves.png."""
    write_run_file(out / "history.json", history)
    write_run_file(out / "run.json", record.to_doc())
    if history:
        curves.plot_history(history, out / "curves.png",
                            title=f"{model_name} ({record.strategy.strategy})")
        warning = curves.overfitting_warning(history)
        if warning:
            log.warning(warning)
