"""Shared fixtures: tiny image folders made on the fly, deterministic torch settings."""
from __future__ import annotations

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
