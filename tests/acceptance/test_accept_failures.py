"""The failures every verb shares (``vistrain.cli.failures``), driven as a user meets them on the
shipped 2,000 images: a reader that closes the pipe early, and a job stopped by ``kill``."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from .acceptlib import SHIPPED


def _pipe_to_head(*args) -> subprocess.CompletedProcess:
    """``vistrain ARGS | head -1`` in bash, as a user types it (pipefail: vistrain's own exit)."""
    cmd = " ".join([sys.executable, "-m", "vistrain.cli.main", *map(str, args)])
    return subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -1"], capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)


def test_stats_into_a_closed_pipe_ends_quietly():
    p = _pipe_to_head("stats", SHIPPED)
    assert p.stdout.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.returncode in (0, 141), (p.returncode, p.stderr[-2000:])  # 141: 128 + SIGPIPE


def test_predict_a_folder_into_a_closed_pipe_ends_quietly(fe_run):
    p = _pipe_to_head("predict", fe_run.dir, SHIPPED / "Bag")
    assert p.stdout.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.returncode in (0, 141), (p.returncode, p.stderr[-2000:])


def test_sigterm_during_training_is_one_line_naming_the_folder(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "vistrain.cli.main", "train", str(SHIPPED), "--out",
                          str(out), "--strategy", "finetune", "--model", "vistrain/resnet-tiny",
                          "--epochs", "50"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "config.yaml").is_file() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.5)
    time.sleep(2)  # into decoding or training, with its worker processes
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.strip().splitlines() if "--resume" in ln]
    assert lines and str(out) in lines[-1], err[-2000:]
