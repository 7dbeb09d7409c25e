"""Two-process CPU ``torchrun`` (gloo) smoke runs: finetune, feature extraction with live
features (frozen backbone, no DDP wrapper needed for it, BN in eval), and gradual unfreezing (the
set of trainable parameters changes between epochs, so the DDP wrapper is rebuilt)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("strategy,extra", [
    ("finetune", []),
    ("feature-extraction", ["--set", "strategy.feature_cache=live"]),
    ("gradual", ["--set", "strategy.unfreeze_every=1", "--epochs", "3"]),
])
def test_torchrun_two_cpu_processes(tmp_path, strategy, extra):
    from conftest import make_image_folder
    root = make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + (os.getpid() % 400) + len(extra)),
           "-m", "vistrain.cli.main", "train", str(root), "--out", str(out), "--model", "resnet18",
           "--no-pretrained", "--strategy", strategy, "--epochs", "2", "--device", "cpu",
           "--batch-size", "4", "--set", "preprocess.size=32", "--set", "data.cache=off", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # files are written by rank 0 only (run.py); the CLI summary is still printed by each rank
    assert "report:" in proc.stdout
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".json").count("run.json") == 1
    run = json.loads((out / "run.json").read_text())
    assert run["strategy"]["strategy"] == strategy
    hist = json.loads((out / "history.json").read_text())
    epochs = 3 if strategy == "gradual" else 2
    assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))
    if strategy == "gradual":  # one more layer group trainable at each epoch, on both ranks
        trainable = [h["trainable_params"] for h in hist]
        assert trainable[0] < trainable[1] < trainable[2], trainable
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists()  # finished
    assert not list(out.glob("**/*.tmp"))


@pytest.mark.slow
def test_the_recipe_race_under_torchrun(tmp_path):
    """strategy auto's race on two processes: every rank trains the same rungs, rank 0's clock and
    ranking decide for both, and the winner continues from its checkpoint (no hang, one run)."""
    from conftest import make_image_folder
    root = make_image_folder(tmp_path / "data", per_class=16, size=(24, 24), mode="L")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29950 + (os.getpid() % 40)), "-m", "vistrain.cli.main", "train", str(root),
           "--out", str(out), "--epochs", "4", "--budget", "4", "--device", "cpu", "--batch-size", "8",
           "--set", "data.cache=off"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    reasoning = run["strategy"]["reasoning"]
    assert run["strategy"]["requested"] == "auto" and "race" in reasoning
    assert (out / "model.safetensors").is_file() and not (out / "race").exists()
