"""Shared fixtures: tiny image folders made on the fly, deterministic torch settings."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Point vistrain's caches (``VISTRAIN_CACHE``) at a temporary folder for the whole session.

    Without this every test run (and the CLI subprocesses it starts, which inherit the
    environment) would add its pixel and feature caches to the user's ``~/.cache/vistrain``.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISTRAIN_CACHE", str(tmp_path_factory.mktemp("vistrain-cache")))
        # two threads, as set above, in every run and subprocess: tests compare runs bit for bit,
        # which a thread count measured per run (device.choose_cpu_threads) would not keep
        mp.setenv("VISTRAIN_THREADS", "2")
        yield


def skip_report(mp) -> None:
    """Patch out the figures and the HTML report of a training run (they have tests of their own;
    skipping them saves seconds a run in tests that train many).  Patched where they are called."""
    import vistrain.evaluation.curves as curves
    import vistrain.training.run as training_run
    import vistrain.workflows.train as train_workflow
    for module, name in ((train_workflow, "build_report"), (training_run, "write_run_figures"),
                         (curves, "plot_history")):
        mp.setattr(module, name, lambda *a, **k: None)


def make_image_folder(root: Path, classes=("a", "b", "c"), per_class=12, size=(40, 32),
                      mode="RGB", seed=0, ext="png") -> Path:
    """Write ``per_class`` images per class whose colour depends on the class (learnable)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[k % 3] = 200
        for i in range(per_class):
            noise = rng.integers(0, 50, size=(size[1], size[0], 3))
            arr = np.clip(base + noise, 0, 255).astype(np.uint8)
            img = Image.fromarray(arr, "RGB")
            if mode != "RGB":
                img = img.convert(mode)
            img.save(root / name / f"{name}_{i:03d}.{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")


# The settings of the shared tiny run: a from-scratch network, 2 epochs on 30 images of 3 classes.
TINY_RUN = dict(model="vistrain/resnet-tiny", strategy="finetune", epochs=2, batch_size=8,
                preprocess={"size": 32}, data={"cache": "off", "num_workers": 0},
                keep_checkpoints=True, progress=False)


@dataclass
class TinyRun:
    """A finished run of ``vistrain.train`` (``TINY_RUN`` on ``data``): its folder, its
    :class:`~vistrain.training.run.RunResult` and the log records the training wrote."""
    data: Path
    dir: Path
    result: object
    records: list[logging.LogRecord] = field(default_factory=list)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """One tiny trained run, made once per test session and shared by every test that only needs
    *a* finished run (report, checkpoints, model card, the log of its training).  Read it, never
    change it: a test that writes into a run uses ``tiny_run_copy``.

    The log records are caught by a handler of our own (caplog is function-scoped).
    """
    import vistrain
    root = tmp_path_factory.mktemp("tiny-run")
    data = make_image_folder(root / "data", per_class=10)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("vistrain")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = vistrain.train(data, out=root / "run", **TINY_RUN)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return TinyRun(data, root / "run", result, records)


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the shared tiny run's folder, for a test that changes or rewrites files in it."""
    return Path(shutil.copytree(tiny_run.dir, tmp_path / "run", symlinks=True))


def cli_error(capsys, argv) -> str:
    """Run ``vistrain ARGV`` in-process; it must exit 2 with exactly one ``error:`` line on stderr
    and no traceback.  Returns that line."""
    from vistrain.cli.main import main
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
