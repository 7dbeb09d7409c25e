"""README.md's "A short tour" does what it says: each line of it, pasted into a shell as written,
runs, in order, on real data.

The lines are read from the README itself, so an edited tour is tested as edited, and each runs
through ``bash`` with ``vistrain`` as the command: a line that a shell reads differently from what
the README means (a ``|`` read as a pipe, ``[--a|--b]`` alternatives) fails.  Only the
placeholders are replaced: ``DATA`` by the shipped data set (a 500-image copy, at 64 px, for the
fine-tuning line), ``OTHER_DATA`` by 120 other labelled images, ``FOLDER`` by one class folder of
them, image names by real images of those names, and long settings by short ones (``--epochs 1``,
``--folds 2``, fewer check steps).  Each line must end with rc 0, or the documented exit 1 of
``doctor``/``check`` (data unsound, a check failed), or, for ``--resume`` of the finished
``runs/x``, the one-line error that says it is finished; never a traceback.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from .acceptlib import CLASSES, REPO, SHIPPED, Result, assert_user_error

EXIT_1_DOCUMENTED = {"doctor", "check", "export"}  # export: int8 refused by its accuracy gate
# lines whose documented outcome is a one-line error (the message must contain the text)
DOCUMENTED_ERRORS = {"train --resume runs/x": "finished"}


def tour_lines() -> list[str]:
    """The commands of the tour's code block, comments stripped, exactly as written."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## A short tour\s*\n.*?^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    assert m, "README.md has no 'A short tour' code block"
    lines = [ln.split(" #")[0].strip() for ln in m.group(1).splitlines() if ln.strip()]
    assert all(ln.startswith("vistrain") for ln in lines), lines
    return lines


LINES = tour_lines()


def shell_words(line: str) -> list[str]:
    """The words a POSIX shell makes of ``line``, with its operators (``|``, ``;``, ``&``, ``>``)
    as words of their own."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def test_tour_has_the_main_verbs():
    verbs = {shell_words(line)[1] for line in LINES if len(shell_words(line)) > 1}
    assert {"train", "predict", "evaluate", "cv", "explain", "report"} <= verbs, verbs


@pytest.mark.parametrize("line", LINES)
def test_tour_line_is_one_command(line):
    """Pasted, each line is one ``vistrain`` command: no shell operator, no ``[optional]`` part."""
    words = shell_words(line)
    operators = [w for w in words if set(w) <= set("|&;<>()")]
    assert not operators, f"{line!r}: a shell reads {operators} as operators; one command a line"
    optional = [w for w in words if w.startswith("[") or w.endswith("]")]
    assert not optional, f"{line!r}: {optional} is not an argument; write each variant as its own line"


def substitute(line: str, shipped, subset, other) -> str:
    """The README line with its placeholders replaced (paths quoted for the shell) and the long
    settings shortened; extra arguments appended at the end."""
    small_model = "finetune" in line or "gradual" in line
    words = shell_words(line)
    verb = words[1] if len(words) > 1 else ""
    line = re.sub(r"\bOTHER_DATA\b", shlex.quote(str(other)), line)
    line = re.sub(r"\bDATA\b", shlex.quote(str(subset if small_model else shipped)), line)
    line = re.sub(r"\bFOLDER\b", shlex.quote(str(other / "Bag")), line)
    line = re.sub(r"--epochs[ =]\d+", "--epochs 1", line)
    line = re.sub(r"--folds[ =]\d+", "--folds 2", line)
    extra = []
    if verb == "train" and not re.search(r"--epochs|--config|--resume|--print-config|--print-schema", line):
        extra += ["--epochs", "2"]
    if verb == "cv":
        extra += ["--epochs", "1"]
    if verb in ("train", "cv") and "--budget" not in line and "--resume" not in line \
            and "--print-config" not in line and "--print-schema" not in line:
        extra += ["--budget", "2"]  # strategy auto's race within 2 minutes, not 15
    if small_model:
        extra += ["--set", "preprocess.size=64"]
    if verb == "check":
        extra += ["--steps", "20", "--lr-steps", "20"]
    if verb == "lr-find":
        extra += ["--steps", "20"]
    return " ".join([line, *extra])


def make_images(cwd, line):
    """Real images under the names the README uses (img1.jpg, cat.jpg, ...)."""
    pngs = sorted((SHIPPED / "Sneaker").glob("*.png"))
    for k, t in enumerate(w for w in shell_words(line) if re.fullmatch(r"[\w-]+\.(jpg|jpeg|png)", w)):
        if not (cwd / t).exists():
            Image.open(pngs[k]).convert("RGB").resize((96, 96)).save(cwd / t)


def paste(line: str, cwd, env: dict | None = None) -> Result:
    """Run ``line`` in bash, as a user pasting it, with ``vistrain`` this interpreter's CLI."""
    script = f'vistrain() {{ "{sys.executable}" -m vistrain.cli.main "$@"; }}\n{line}\n'
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("COLUMNS", None)
    try:
        p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=900,
                           cwd=cwd, env=full_env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"timed out: {line}") from None
    return Result(["bash", "-c", line], p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="module")
def tour(shipped, subset, eval_data, tmp_path_factory) -> tuple[Path, list[tuple[str, Result]]]:
    """Every line of the tour, in README order, in one working folder (runs/x is shared)."""
    cwd = tmp_path_factory.mktemp("tour")
    done = []
    for line in LINES:
        real = substitute(line, shipped, subset, eval_data)
        make_images(cwd, real)
        # never clear the session's cache; MLflow's store in the tour's folder
        env = {"VISTRAIN_CACHE": str(cwd / "cache-for-cache-verb")} if " cache" in line else {}
        env["MLFLOW_TRACKING_URI"] = (cwd / "mlruns").as_uri()
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        done.append((real, paste(real, cwd, env)))
    return cwd, done


@pytest.mark.parametrize("k", range(len(LINES)), ids=LINES)
def test_tour_line_runs(tour, k):
    line, res = tour[1][k]
    readme = " ".join(shell_words(LINES[k])[1:])
    assert "Traceback" not in res.stderr, res.describe()
    if readme in DOCUMENTED_ERRORS:
        assert DOCUMENTED_ERRORS[readme] in assert_user_error(res), res.describe()
        return
    verb = shell_words(line)[1]
    assert res.rc == 0 or (res.rc == 1 and verb in EXIT_1_DOCUMENTED), res.describe()


def test_tour_group_split_keeps_every_class(tour):
    """The README's --group-regex example fits the shipped names and leaves no class out of a part."""
    import json
    splits = json.loads((tour[0] / "runs" / "g" / "splits.json").read_text())
    assert splits["source"] == "grouped hold-out" and "regex" in splits["groups"], splits["source"]
    for part in ("train", "val", "test"):
        assert all(n > 0 for n in splits["parts"][part]["counts"].values()), part
    assert len(splits["classes"]) == len(CLASSES) and not splits.get("warnings")


def test_tour_csv_and_tracking_outputs(tour):
    """The csv line wrote one row per image of the folder; the tracked run is in MLflow's store."""
    import csv
    rows = list(csv.DictReader(open(tour[0] / "predictions.csv")))
    assert len(rows) > 1 and all(r["class"] and r["top_k"] for r in rows)
    assert any((tour[0] / "mlruns").rglob("meta.yaml"))
