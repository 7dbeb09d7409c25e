"""Helpers of the acceptance suite: run vistrain as a user does and check what the user sees."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHIPPED = REPO / "examples" / "fashion-mnist-small"
CLASSES = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir())
SUBSET_PER_CLASS = 50        # 500 images, 10 classes
EVAL_PER_CLASS = 12          # 120 images for `evaluate` (>= 100)

# Settings that keep the trained fixtures small but real (documented --set keys).
SCRATCH = ["--model", "vistrain/vgg-tiny", "--set", "preprocess.size=28"]
TWO_WORKERS = ["--set", "data.num_workers=2"]


# -- running vistrain ----------------------------------------------------------------------------

@dataclass
class Result:
    """What a user sees of one command: its exit code and both streams."""
    cmd: list[str]
    rc: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (f"$ {' '.join(map(str, self.cmd))}\nrc={self.rc}\n--- stdout (tail) ---\n"
                f"{self.stdout[-3000:]}\n--- stderr (tail) ---\n{self.stderr[-3000:]}")

    def json(self):
        """The one JSON document on stdout (the ``--json`` convention: nothing else there)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as err:
            raise AssertionError(f"stdout is not one JSON document ({err})\n{self.describe()}") from None


def vistrain(*args, cwd=None, timeout: int = 900, env: dict | None = None) -> Result:
    """Run ``vistrain ARGS`` in a subprocess of the running interpreter."""
    cmd = [sys.executable, "-m", "vistrain.cli.main", *map(str, args)]
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("COLUMNS", None)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                           env=full_env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}\n"
                             f"{(err.stderr or b'')[-2000:]!r}") from None
    return Result(cmd, p.returncode, p.stdout, p.stderr)


def python_script(code: str, *, cwd, timeout: int = 900) -> Result:
    """Run ``code`` in a fresh interpreter (as a user's script or notebook would)."""
    script = Path(cwd) / "script.py"
    script.write_text(textwrap.dedent(code))
    try:
        p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"timed out after {timeout}s: {script}") from None
    return Result([sys.executable, str(script)], p.returncode, p.stdout, p.stderr)


def assert_ok(res: Result, rc: int = 0) -> Result:
    """Exit code ``rc`` and no traceback."""
    assert res.rc == rc and "Traceback" not in res.stderr, res.describe()
    return res


def assert_user_error(res: Result) -> str:
    """A refused command: rc != 0, no traceback, and it ends in one ``error: ...`` line."""
    assert res.rc not in (0, None), res.describe()
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.describe()
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.describe()
    assert len(errors[0]) > len("error: ") + 10, res.describe()  # it names the problem
    return errors[0]


def table_value(text: str, label: str) -> float:
    """The number after ``label`` at the start of a line of a printed metrics table."""
    m = re.search(rf"^\s*{re.escape(label)}\s+([0-9.]+)", text, re.M)
    assert m, f"no {label!r} line in:\n{text}"
    return float(m.group(1))


def file_list(root: Path) -> list[tuple[str, int]]:
    """Every file under ``root`` with its size (to show that nothing was deleted or changed)."""
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


# The run directory as README.md describes it ("A run directory holds ...").
RUN_FILES = ("model.safetensors", "model.json", "config.yaml", "splits.json", "metrics.json",
             "predictions.json", "history.json", "curves.png", "run.json", "report.html", "MODEL_CARD.md")


def check_run_dir(run_dir: Path, res: Result, *, n_images: int, epochs: int | None = None) -> dict:
    """The documented files, consistent with each other and with the table ``train`` printed."""
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), f"{run_dir} lacks {name}\n{res.describe()}"
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["classes"] == CLASSES
    assert {"size", "normalize_mode"} <= set(meta["preprocess"])
    splits = json.loads((run_dir / "splits.json").read_text())
    assert sum(len(p["indices"]) for p in splits["parts"].values()) == n_images
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n_samples"] == len(splits["parts"]["test"]["indices"])
    assert 0.0 <= test["accuracy"] <= 1.0
    # the printed table and metrics.json agree
    assert abs(table_value(res.stdout, "accuracy") - test["accuracy"]) < 1e-4, res.describe()
    assert f"held-out test accuracy: {test['accuracy']:.4f}" in res.stdout
    history = json.loads((run_dir / "history.json").read_text())
    if epochs is not None:
        assert len(history) == epochs
    run = json.loads((run_dir / "run.json").read_text())
    assert "seed" in json.dumps(run)
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "</html>" in html.lower()
    assert str((run_dir / "report.html").resolve()) in res.stdout
    return {"meta": meta, "splits": splits, "metrics": metrics, "history": history, "run": run}


# -- data ----------------------------------------------------------------------------------------

def copy_subset(dst: Path, per_class: int, *, offset: int = 0) -> Path:
    """``per_class`` images of each shipped class (files ``offset ...``) copied into ``dst``."""
    for c in CLASSES:
        files = sorted((SHIPPED / c).glob("*.png"))[offset:offset + per_class]
        (dst / c).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dst / c / f.name)
    return dst


def make_messy_folder(root: Path) -> dict[str, Path | list[Path]]:
    """A class folder set with every problem ``doctor`` must report, built from shipped images.

    Three good classes of 20 real images each, plus: an empty class folder, a corrupt file (random
    bytes), a truncated PNG, a zero-byte file, a CMYK JPEG, a 16-bit PNG, a JPEG stored rotated
    with an EXIF orientation tag, and one picture copied into two classes.  Returns the paths.
    """
    import numpy as np
    from PIL import Image
    good = ["Bag", "Sneaker", "Trouser"]
    for c in good:
        (root / c).mkdir(parents=True)
        for f in sorted((SHIPPED / c).glob("*.png"))[:20]:
            shutil.copy2(f, root / c / f.name)
    (root / "Empty").mkdir()
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), "RGB")
    paths: dict[str, Path | list[Path]] = {"root": root, "good_classes": good, "empty_class": "Empty"}
    paths["corrupt"] = root / "Bag" / "corrupt.png"
    paths["corrupt"].write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    whole = root / "Bag" / "whole.png"
    photo.save(whole)
    paths["truncated"] = root / "Bag" / "truncated.png"
    paths["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    paths["zero_byte"] = root / "Sneaker" / "zero.jpg"
    paths["zero_byte"].write_bytes(b"")
    paths["cmyk"] = root / "Sneaker" / "cmyk.jpg"
    photo.convert("CMYK").save(paths["cmyk"], quality=90)
    paths["sixteen_bit"] = root / "Trouser" / "sixteen.png"
    grey = np.asarray(Image.open(sorted((SHIPPED / "Trouser").glob("*.png"))[30]).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(paths["sixteen_bit"])
    assert Image.open(paths["sixteen_bit"]).mode.startswith("I")
    paths["exif_rotated"] = root / "Trouser" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photo.save(paths["exif_rotated"], exif=exif, quality=90)
    dup = sorted((SHIPPED / "Coat").glob("*.png"))[0]
    paths["duplicate"] = [root / "Bag" / "dup.png", root / "Sneaker" / "dup.png"]
    for p in paths["duplicate"]:
        shutil.copy2(dup, p)
    paths["unreadable"] = [paths["corrupt"], paths["truncated"], paths["zero_byte"]]
    return paths
