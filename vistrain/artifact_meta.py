"""``model.json``: the record of a trained model, read and checked without PyTorch.

:func:`read_meta` gives the checked document of a run (class names, model name, the exact
preprocessing, the calibration temperature); :func:`check_finite_probabilities` is the last check
of every probability that leaves vistrain.  Everything here needs NumPy only, so that an ONNX
Runtime server of a run's export reads the run as the torch engine does;
:mod:`vistrain.artifact` holds the rest (weights, the model itself).

Example:
    >>> meta_problem({"model_name": "m", "num_classes": 2, "classes": ["a", "b"], "preprocess": {}})
    >>> meta_problem({"model_name": "m", "num_classes": 2, "classes": ["a"], "preprocess": {}})
    '1 class names for num_classes=2'
"""
from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from vistrain import __version__
from vistrain.errors import RunDirError
from vistrain.transforms.pixels import PixelPrep
from vistrain.transforms.resize import INTERPOLATIONS, RESIZE_MODES

FORMAT_VERSION = 1
META, WEIGHTS = "model.json", "model.safetensors"
TEMPERATURE_RANGE = (0.01, 100.0)   # what a model.json's calibration.temperature may hold

# the distributions installed_versions() reports (those absent are left out)
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pillow", "onnxruntime")


def installed_versions() -> dict[str, str]:
    """Versions of vistrain, Python and the installed libraries that matter to inference, read
    from the installed distributions (nothing is imported: a torch-free server reports what it has).

    Example:
        >>> {"vistrain", "python", "numpy"} <= set(installed_versions())
        True
    """
    found = {"vistrain": __version__, "python": platform.python_version()}
    for dist in PACKAGES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def read_meta(run_dir: str | Path) -> dict:
    """``model.json`` of a finished run, checked: a damaged or hand-edited file gives a one-line
    :class:`RunDirError` naming the file and what is wrong, never a traceback or a silently wrong
    preprocessing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found; give the --out folder of a "
                          "finished `vistrain train`")
    path = run_dir / META
    if not path.is_file() or not (run_dir / WEIGHTS).is_file():
        raise RunDirError(f"{run_dir}: no model.json/model.safetensors in it; training did not finish "
                          "(resume it with `vistrain train --resume RUN_DIR`) or this is not a run folder")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: damaged, not valid JSON ({' '.join(str(err).split())[:100]}); "
                          "restore it or train the run again") from None
    problem = meta_problem(meta)
    if problem:
        raise RunDirError(f"{path}: damaged or edited, {problem}; restore it or train the run again")
    return meta


def meta_problem(meta) -> str | None:
    """What is wrong with a ``model.json`` document, or None when it can be used."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    missing = [k for k in ("model_name", "num_classes", "classes", "preprocess") if k not in meta]
    if missing:
        return f"missing {', '.join(missing)}"
    version = meta.get("format_version", FORMAT_VERSION)
    if not _is_int(version) or version > FORMAT_VERSION:
        return f"format_version {version!r} is newer than this vistrain reads ({FORMAT_VERSION}); upgrade vistrain"
    if not isinstance(meta["model_name"], str) or not meta["model_name"]:
        return f"model_name must be a model name, got {meta['model_name']!r}"
    if not isinstance(meta.get("model_kwargs", {}), dict):
        return f"model_kwargs must be an object, got {meta['model_kwargs']!r}"
    n, classes = meta["num_classes"], meta["classes"]
    if not _is_int(n) or n < 1:
        return f"num_classes must be a whole number >= 1, got {n!r}"
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "classes must be a list of class names"
    if len(classes) != n:
        return f"{len(classes)} class names for num_classes={n}"
    if len(set(classes)) != len(classes):
        return "classes has repeated names"
    calibration = meta.get("calibration", {})
    t = calibration.get("temperature", 1.0) if isinstance(calibration, dict) else calibration
    # fitting searches T in [0.05, 20] (evaluation.calibration.LOG_T_BOUNDS); far outside it, T
    # is damage, and a T near 0 turns the logits into infinities and the probabilities into NaN
    if not _is_number(t) or not TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]:
        return (f"calibration.temperature must be a finite number from {TEMPERATURE_RANGE[0]} to "
                f"{TEMPERATURE_RANGE[1]}, got {t!r}")
    return preprocess_problem(meta["preprocess"])


def temperature(meta: dict) -> float:
    """The softmax temperature of a checked ``model.json`` (``calibration.temperature``; 1.0 for
    runs without calibration): probabilities are ``softmax(logits / T)``."""
    return float(meta.get("calibration", {}).get("temperature", 1.0))


def preprocess_problem(pre) -> str | None:
    """What is wrong with a recorded :class:`Preprocess` dict, or None."""
    if not isinstance(pre, dict):
        return f"preprocess must be an object, got {type(pre).__name__}"
    p = PixelPrep()
    known = {**p.to_dict(), **pre}
    size, channels, crop = known["size"], known["channels"], known["crop_pct"]
    if not _is_int(size) or size < 1:
        return f"preprocess.size must be a whole number >= 1, got {size!r}"
    if channels not in (1, 3) or isinstance(channels, bool):
        return f"preprocess.channels must be 1 or 3, got {channels!r}"
    if not _is_number(crop) or not 0 < crop <= 1:
        return f"preprocess.crop_pct must be in (0, 1], got {crop!r}"
    if known["resize_mode"] not in RESIZE_MODES:
        return f"preprocess.resize_mode must be one of {', '.join(RESIZE_MODES)}, got {known['resize_mode']!r}"
    if known["interpolation"] not in INTERPOLATIONS:
        return (f"preprocess.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {known['interpolation']!r}")
    if not _is_number(known["scale"]) or not known["scale"] > 0:
        return f"preprocess.scale must be a finite number > 0, got {known['scale']!r}"
    for key, positive in (("mean", False), ("std", True)):
        v = known[key]
        if (not isinstance(v, (list, tuple)) or len(v) not in (1, channels)
                or not all(_is_number(x) and (x > 0 or not positive) for x in v)):
            what = "finite numbers > 0" if positive else "finite numbers"
            return f"preprocess.{key} must be 1 or {channels} {what}, got {v!r}"
    bg = known["background"]
    if not isinstance(bg, (list, tuple)) or len(bg) != 3 or not all(_is_int(x) and 0 <= x <= 255 for x in bg):
        return f"preprocess.background must be 3 values in [0, 255], got {bg!r}"
    return None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class DamagedModelError(RunDirError):
    """A run's model gives non-finite probabilities (damaged weights, a broken temperature)."""


def check_finite_probabilities(probs, artifact: str | Path):
    """``probs`` unchanged when every value is finite, else a one-line :class:`DamagedModelError`
    naming ``artifact`` (the file that computed them: ``RUN/model.safetensors`` or an export).

    Every probability that leaves vistrain (predict, evaluate, the server, explanations) passes
    here: finite but damaged weights (a negative BatchNorm variance, a huge scale) or a temperature
    near 0 turn into ``nan`` only at the softmax, and a ``nan%`` must never be a result.

    Example:
        >>> import numpy as np
        >>> check_finite_probabilities(np.array([[0.25, 0.75]]), "runs/demo/model.safetensors").shape
        (1, 2)
    """
    # a torch tensor is read through its own methods: this module must not import torch
    values = probs.detach().float().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    finite = np.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).reshape(finite.shape[0], -1).any(1).sum()) if finite.ndim else 1
        raise DamagedModelError(f"{artifact} gives non-finite probabilities for {bad} of "
                                f"{finite.shape[0] if finite.ndim else 1} images (damaged weights or "
                                "temperature); retrain or restore the run")
    return probs
