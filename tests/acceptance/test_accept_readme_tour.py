"""README.md's "A short tour" does what it says: each command in it runs, in order, on real data.

The commands are read from the README itself, so an edited tour is tested as edited.  Only the
placeholders are replaced: ``DATA`` by the shipped data set (a 500-image copy, at 64 px, for the
fine-tuning line), ``OTHER_DATA`` by 120 other labelled images, ``FOLDER`` by one class folder of
them, image names by real images of those names, and long settings by short ones (``--epochs 1``,
``--folds 2``, fewer check steps).  ``a | b`` runs both; ``[--x|--y]`` runs without, then with each.
Each command must end with rc 0, or the documented exit 1 of ``doctor``/``check`` (data unsound,
a check failed), or a one-line ``error:``; never a traceback.
"""
from __future__ import annotations

import re
import shlex

import pytest
from PIL import Image

from .acceptlib import REPO, SHIPPED, Result, assert_user_error, vistrain

EXIT_1_DOCUMENTED = {"doctor", "check"}


def tour_lines() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## A short tour\s*\n+```[a-z]*\n(.*?)^```", text, re.M | re.S)
    assert m, "README.md has no 'A short tour' code block"
    return [ln.split(" #")[0].strip() for ln in m.group(1).splitlines() if ln.strip().startswith("vistrain")]


def expand(line: str) -> list[list[str]]:
    """One README line -> the argument lists it stands for (``a | b`` and ``[--opt]`` expanded)."""
    tokens = shlex.split(line)[1:]  # drop "vistrain"
    segments, cur = [], []
    for t in tokens:
        if t == "|":
            segments.append(cur)
            cur = []
        else:
            cur.append(t)
    segments.append(cur)
    out = []
    for seg in segments:
        optional = [t for t in seg if t.startswith("[") and t.endswith("]")]
        plain = [t for t in seg if t not in optional]
        out.append(plain)  # without the optional part, then with each alternative of it
        for opt in optional:
            out += [plain + [alt] for alt in opt[1:-1].split("|")]
    return out


COMMANDS = [args for line in tour_lines() for args in expand(line)]


def substitute(args: list[str], shipped, subset, other) -> list[str]:
    verb = args[0]
    small_model = "finetune" in args or "gradual" in args
    out = []
    it = iter(args)
    for t in it:
        if t == "DATA":
            out.append(str(subset if small_model else shipped))
        elif t == "OTHER_DATA":
            out.append(str(other))
        elif t == "FOLDER":
            out.append(str(other / "Bag"))
        elif t in ("--epochs", "--folds"):
            out += [t, "1" if t == "--epochs" else "2"]
            next(it)
        else:
            out.append(t)
    if verb == "train" and "--epochs" not in out and "--config" not in out and "--resume" not in out:
        out += ["--epochs", "2"]
    if verb == "cv":
        out += ["--epochs", "1"]
    if small_model:
        out += ["--set", "preprocess.size=64"]
    if verb == "check":
        out += ["--steps", "20", "--lr-steps", "20"]
    if verb == "lr-find":
        out += ["--steps", "20"]
    return out


def make_images(cwd, args):
    """Real images under the names the README uses (img1.jpg, cat.jpg, ...)."""
    pngs = sorted((SHIPPED / "Sneaker").glob("*.png"))
    for k, t in enumerate(a for a in args if re.fullmatch(r"[\w-]+\.(jpg|jpeg|png)", a)):
        if not (cwd / t).exists():
            Image.open(pngs[k]).convert("RGB").resize((96, 96)).save(cwd / t)


@pytest.fixture(scope="module")
def tour(shipped, subset, eval_data, fe_run, tmp_path_factory) -> list[tuple[list[str], Result]]:
    """Every command of the tour, in README order, in one working folder (runs/x is shared)."""
    cwd = tmp_path_factory.mktemp("tour")
    private_cache = {"VISTRAIN_CACHE": str(cwd / "cache-for-cache-verb")}
    done = []
    for args in COMMANDS:
        real = substitute(args, shipped, subset, eval_data)
        make_images(cwd, real)
        env = private_cache if real[0] == "cache" else None  # never clear the session's cache
        done.append((real, vistrain(*real, cwd=cwd, env=env)))
    return done


def test_tour_has_the_main_verbs():
    verbs = {args[0] for args in COMMANDS}
    assert {"train", "predict", "evaluate", "cv", "explain", "report"} <= verbs, verbs


@pytest.mark.parametrize("k", range(len(COMMANDS)), ids=[" ".join(a) for a in COMMANDS])
def test_tour_command(tour, k):
    args, res = tour[k]
    assert "Traceback" not in res.stderr, res.describe()
    if res.rc == 0 or (res.rc == 1 and args[0] in EXIT_1_DOCUMENTED):
        return
    assert_user_error(res)
