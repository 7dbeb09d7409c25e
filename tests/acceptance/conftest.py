"""Acceptance suite: every CLI verb and public API function driven as a user drives them.

Each test starts ``vistrain`` (``python -m vistrain.cli.main`` of the running interpreter, so it
works in any virtual environment) or a small Python script in a fresh interpreter, on the shipped
data set (2,000 Fashion-MNIST PNGs, 10 classes) or a 500-image, 10-class copy of it, and checks
what a user sees: exit codes, the files of the run directory, JSON that parses and agrees with the
printed table, one ``error:`` line and no traceback for every user error.

Trained runs are expensive, so they are session fixtures shared by the tests:

* ``fe_run``: the frozen EfficientNet-Lite0 and a new head on all 2,000 images; ``auto_run``: the
  default, strategy auto with its recipe race, within a 5-minute budget;
* ``finetune_run`` / ``gradual_run``: Lite0 at 64 px on the 500-image subset, 2 data workers;
* ``scratch_run``: the smallest from-scratch network, ``vistrain/vgg-tiny``, at 28 px;
* ``cv_out`` / ``compare_out``: a 3-fold cross-validation and a two-setting comparison.

Every test here carries the ``acceptance`` marker: ``pytest -m acceptance`` runs only this suite,
``pytest -m "not acceptance"`` everything else.  Caches go to the per-session folder that
``tests/conftest.py`` sets in ``VISTRAIN_CACHE`` (inherited by the subprocesses).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from .acceptlib import (CLASSES, HERE, SCRATCH, SHIPPED, SUBSET_PER_CLASS, EVAL_PER_CLASS, TWO_WORKERS,
                       Result, assert_ok, copy_subset, make_messy_folder, vistrain)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.acceptance)


@pytest.fixture(scope="session")
def acc_env(_private_cache_dir):
    """The session's private cache folder is set before any fixture starts a subprocess."""
    return os.environ["VISTRAIN_CACHE"]


@pytest.fixture(scope="session")
def shipped() -> Path:
    files = list(SHIPPED.rglob("*.png"))
    assert len(files) == 2000 and len(CLASSES) == 10
    return SHIPPED


@pytest.fixture(scope="session")
def subset(tmp_path_factory) -> Path:
    """500 images, 10 classes: the first 50 of each shipped class."""
    return copy_subset(tmp_path_factory.mktemp("subset") / "fmnist500", SUBSET_PER_CLASS)


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory) -> Path:
    """120 labelled images (the last 12 of each class) for ``evaluate``."""
    return copy_subset(tmp_path_factory.mktemp("evaldata") / "fmnist120", EVAL_PER_CLASS,
                       offset=200 - EVAL_PER_CLASS)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@dataclass
class Run:
    dir: Path
    res: Result
    n_images: int
    epochs: int


def _train(runs: Path, name: str, data: Path, n_images: int, epochs: int, *flags) -> Run:
    out = runs / name
    res = vistrain("train", data, "--out", out, "--epochs", epochs, *flags)
    assert_ok(res)
    return Run(out, res, n_images, epochs)


@pytest.fixture(scope="session")
def fe_run(acc_env, shipped, runs) -> Run:
    """The frozen Lite0 features and a new head on all 2,000 images, default workers."""
    return _train(runs, "fe", shipped, 2000, 5, "--strategy", "feature-extraction")


@pytest.fixture(scope="session")
def auto_run(acc_env, shipped, runs, fe_run) -> Run:
    """The default strategy (auto: measured, then the recipe race) on all 2,000 images, within a
    5-minute budget (the frozen features are cached by ``fe_run``, as a second run has them)."""
    return _train(runs, "auto", shipped, 2000, 30, "--budget", "5")


@pytest.fixture(scope="session")
def finetune_run(acc_env, subset, runs) -> Run:
    return _train(runs, "finetune", subset, 500, 1, "--strategy", "finetune",
                  "--set", "preprocess.size=64", *TWO_WORKERS)


@pytest.fixture(scope="session")
def gradual_run(acc_env, subset, runs) -> Run:
    return _train(runs, "gradual", subset, 500, 2, "--strategy", "gradual",
                  "--set", "preprocess.size=64", *TWO_WORKERS)


@pytest.fixture(scope="session")
def scratch_run(acc_env, shipped, runs) -> Run:
    """The smallest from-scratch network at the images' own 28 px, 2 workers."""
    return _train(runs, "scratch", shipped, 2000, 6, *SCRATCH, *TWO_WORKERS)


@pytest.fixture(scope="session")
def cv_out(acc_env, shipped, runs, fe_run):
    """3-fold cross-validation of the default strategy (features cached by ``fe_run``)."""
    out = runs / "cv"
    res = vistrain("cv", shipped, "--folds", 3, "--epochs", 3, "--budget", 3, "--out", out)
    return out, res


@pytest.fixture(scope="session")
def compare_out(acc_env, subset, runs):
    """Two normalizations of the default comparison network at 28 px."""
    out = runs / "compare"
    res = vistrain("compare", subset, "--vary", "norm=batch,group", "--epochs", 2,
                   "--set", "preprocess.size=28", "--out", out)
    return out, res


@pytest.fixture(scope="session")
def messy(tmp_path_factory) -> dict:
    """A folder with every problem ``doctor`` must find, and the paths of each problem file."""
    return make_messy_folder(tmp_path_factory.mktemp("messy") / "data")
