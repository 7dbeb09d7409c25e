"""kill -9 at seeded points of a training run, then ``vistrain train --resume RUN``: every trial
must end with exactly the weights (model.safetensors) and metrics (metrics.json) of a run that was
never interrupted.

Each killed run is a forked child of the test process (already warm: no 5 s of imports per trial)
running ``vistrain train`` with one kill point installed; at that point it sends itself SIGKILL, so
nothing is flushed, closed or cleaned up.  Points: while decoding images, in the middle of an
epoch (after k batches), half-way through writing a checkpoint, between keeping prev.pt and
writing last.pt, right after a checkpoint, half-way through writing model.safetensors or
metrics.json; plus two trials killed after a seeded random delay.  Everything runs single-threaded
(fork-safe, and the same float reductions in the killed, the resumed and the reference run).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

import vistrain.artifact as artifact
import vistrain.fsutil as fsutil
import vistrain.training.run as training_run
import vistrain.workflows.train as train_workflow
import vistrain.evaluation.curves as curves
import vistrain.training.checkpoint as checkpoint
import vistrain.training.strategy as strategy
from vistrain.cli.main import main
from tests.conftest import make_image_folder

EPOCHS = 3
FLAGS = ["--model", "vistrain/resnet-tiny", "--epochs", str(EPOCHS), "--batch-size", "8",
         "--set", "preprocess.size=16", "--set", "data.cache=off", "--set", "data.num_workers=0",
         "--set", "train.patience=null", "--set", "data.doctor=false"]
N_IMAGES = 30           # 3 classes x 10
BATCHES_PER_EPOCH = 2   # 20 training images, batch 8, drop_last


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _half_written(path, data):
    """Leave what a write interrupted half-way leaves (a partial temporary file), then die."""
    path = Path(path)
    with open(path.with_name(f".{path.name}.{os.getpid()}.tmp"), "wb") as fh:
        fh.write(data[: len(data) // 2])
    _die()


def install_kill_point(mp: pytest.MonkeyPatch, kind: str, n: int) -> None:
    """Make the process SIGKILL itself at the ``n``-th (1-based) occurrence of ``kind``."""
    seen = {"n": 0}

    def hit() -> bool:
        seen["n"] += 1
        return seen["n"] == n

    if kind == "decode":
        import PIL.Image
        real_open = PIL.Image.open

        def open_(*a, **k):
            if hit():
                _die()
            return real_open(*a, **k)
        mp.setattr(PIL.Image, "open", open_)
    elif kind == "batch":  # n counts training batches over the whole run
        real_epoch = strategy.train_one_epoch

        class Batches:
            def __init__(self, inner):
                self.inner = inner

            def __iter__(self):
                for batch in self.inner:
                    if hit():
                        _die()
                    yield batch

            def __len__(self):
                return len(self.inner)

            def __getattr__(self, name):
                return getattr(self.inner, name)

        mp.setattr(strategy, "train_one_epoch",
                   lambda model, batches, *a, **k: real_epoch(model, Batches(batches), *a, **k))
    elif kind in ("ckpt-write", "model-write", "metrics-write"):
        target = {"ckpt-write": "last.pt", "model-write": "model.safetensors",
                  "metrics-write": "metrics.json"}[kind]
        real_write = fsutil.atomic_write_bytes

        def write(path, data, **k):
            if Path(path).name == target and hit():
                _half_written(path, data)
            return real_write(path, data, **k)
        for module in (fsutil, checkpoint, artifact):
            mp.setattr(module, "atomic_write_bytes", write)
    elif kind == "ckpt-rotate":  # prev.pt kept, last.pt not yet replaced
        real_keep = checkpoint._keep_previous

        def keep(path):
            real_keep(path)
            if hit():
                _die()
        mp.setattr(checkpoint, "_keep_previous", keep)
    elif kind == "after-ckpt":
        real_save = checkpoint.save_checkpoint

        def save(path, state):
            real_save(path, state)
            if hit():
                _die()
        mp.setattr(checkpoint, "save_checkpoint", save)
    else:
        raise ValueError(kind)


@pytest.fixture
def one_thread(monkeypatch):
    """Every run of the test on one thread (the forked children, the reference and the resumes
    alike), as PyTorch's forked DataLoader workers run: GNU OpenMP cannot start a team in a child
    forked after the parent's team ran (a parallel op there waits forever), and one count for
    every run keeps their numbers comparable bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("VISTRAIN_THREADS", "1")
    yield
    torch.set_num_threads(n)


def run_child(argv: list[str], kind: str | None = None, n: int = 0, kill_after: float | None = None) -> int:
    """Fork; the child runs the CLI with a kill point (or is killed after ``kill_after`` s).
    Returns the child's wait status signal (9 when it was killed) or 0 when it finished."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            with pytest.MonkeyPatch.context() as mp:
                if kind:
                    install_kill_point(mp, kind, n)
                code = main(argv)
        finally:
            os._exit(code)
    done, status = 0, 0
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while not done and time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            time.sleep(0.005)
        if not done:
            os.kill(pid, signal.SIGKILL)
    if not done:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    assert os.WEXITSTATUS(status) == 0, f"child failed with exit code {os.WEXITSTATUS(status)}"
    return 0


def outcome(run: Path) -> tuple[str, str]:
    """(hash of every weight tensor, metrics.json text) of a finished run."""
    from safetensors.torch import load_file
    state = load_file(str(run / "model.safetensors"))
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest(), (run / "metrics.json").read_text()


@pytest.fixture(scope="module")
def single_threaded():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def quick(monkeypatch, single_threaded):
    """Figures and the HTML report are not compared; skipping them keeps a trial ~1 s."""
    # patched where they are called (imported by name there, at import time: above, before any patch)
    for module, name in ((train_workflow, "build_report"), (training_run, "write_run_figures"),
                         (curves, "plot_history")):
        monkeypatch.setattr(module, name, lambda *a, **k: None)


def _trials(seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [("decode", rng.randint(1, N_IMAGES)),
            ("batch", rng.randint(1, BATCHES_PER_EPOCH)),               # first epoch
            ("batch", rng.randint(BATCHES_PER_EPOCH + 1, EPOCHS * BATCHES_PER_EPOCH)),
            ("ckpt-write", 1),
            ("ckpt-write", rng.randint(2, EPOCHS)),
            ("ckpt-rotate", rng.randint(1, EPOCHS - 1)),               # from the 2nd checkpoint on
            ("after-ckpt", rng.randint(1, EPOCHS - 1)),
            ("after-ckpt", EPOCHS),                                      # training done, no artifact
            ("model-write", 1),
            ("metrics-write", 1)]


@pytest.mark.slow
def test_kill9_then_resume_matches_uninterrupted_run(tmp_path, quick, monkeypatch, one_thread):
    data = make_image_folder(tmp_path / "data", per_class=10, size=(20, 16))
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(data), "--out", "ref", *FLAGS]) == 0
    want = outcome(tmp_path / "ref")
    trials = [(kind, n, None) for kind, n in _trials()]
    rng = random.Random(1)
    trials += [("timer", 0, rng.uniform(0.05, 1.0)) for _ in range(2)]
    for k, (kind, n, delay) in enumerate(trials):
        run = tmp_path / f"run{k}"
        sig = run_child(["train", str(data), "--out", str(run), *FLAGS],
                        None if kind == "timer" else kind, n, kill_after=delay)
        if kind != "timer":
            assert sig == signal.SIGKILL, f"{kind} #{n}: the kill point was never reached"
        if kind == "timer" and not (run / "config.yaml").is_file():
            # killed before the run folder held its config (a loaded machine): nothing to resume,
            # the same command with --overwrite starts it again
            assert main(["train", str(data), "--out", str(run), *FLAGS, "--overwrite"]) == 0
        else:
            assert main(["train", "--resume", str(run)]) == 0, (kind, n)
        assert outcome(run) == want, f"kill at {kind} #{n}: resumed run differs"
        assert not list(run.rglob("*.tmp")), f"kill at {kind} #{n}: temporary files left behind"
