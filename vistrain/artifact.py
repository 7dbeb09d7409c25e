"""One trained model = one self-describing artifact: ``model.safetensors`` + ``model.json``.

``model.json`` holds everything needed to rebuild the network and re-apply the *exact*
preprocessing: model name and constructor arguments, class names, the :class:`Preprocess` record,
the pretrained config it started from, and library versions.  Weights are safetensors: loading
never unpickles anything.

Example:
    >>> from vistrain.artifact import load_model
    >>> model, meta = load_model("runs/demo")              # doctest: +SKIP
    >>> meta["classes"][:2], meta["preprocess"]["size"]    # doctest: +SKIP
    (['Ankle boot', 'Bag'], 224)
"""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import torch
from torch import nn

from vistrain import __version__
from vistrain.errors import RunDirError
from vistrain.fsutil import atomic_write_bytes, atomic_write_json
from vistrain.models import create
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.resize import INTERPOLATIONS, RESIZE_MODES

FORMAT_VERSION = 1
META, WEIGHTS = "model.json", "model.safetensors"
TEMPERATURE_RANGE = (0.01, 100.0)   # what a model.json's calibration.temperature may hold


def versions() -> dict[str, str]:
    import numpy
    import PIL
    import timm
    import torchvision
    return {"vistrain": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__,
            "python": platform.python_version()}


def save_model(run_dir: str | Path, model: nn.Module, *, model_name: str, classes: list[str],
               preprocess: Preprocess, model_kwargs: dict | None = None,
               pretrained_cfg: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``run_dir`` (each atomically: a reader
    never sees half a file); returns the json path."""
    from safetensors.torch import save as safetensors_bytes
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(run_dir / WEIGHTS, safetensors_bytes(state, metadata={"format": "pt"}))
    meta = {"format_version": FORMAT_VERSION, "model_name": model_name,
            "model_kwargs": model_kwargs or {}, "num_classes": len(classes), "classes": classes,
            "preprocess": preprocess.to_dict(), "pretrained_cfg": pretrained_cfg or {},
            "versions": versions(), **(extra or {})}
    path = run_dir / META
    atomic_write_json(path, meta)
    return path


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
    p = Preprocess()
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


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; one-line :class:`RunDirError` when it is damaged or
    holds non-finite values (a model that would answer NaN probabilities)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RunDirError(f"{path}: damaged weights file ({' '.join(str(err).split())[:100]}); "
                          "restore it or train the run again") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunDirError(f"{path}: non-finite values (NaN/inf) in {key}; restore the file or "
                              "train the run again")
    return state


def load_model(run_dir: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a run with its trained weights, in eval mode; returns (model, meta)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    try:
        model, _ = create(meta["model_name"], meta["num_classes"], pretrained=False,
                          **meta.get("model_kwargs", {}))
    except TypeError as err:  # model_kwargs the constructor does not take
        raise RunDirError(f"{run_dir / META}: model_kwargs do not fit {meta['model_name']} "
                          f"({err}); restore the file or train the run again") from None
    state = load_weights(run_dir / WEIGHTS)
    missing, unexpected, wrong = _state_mismatch(model, state)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if keys)
        raise RunDirError(f"{run_dir / WEIGHTS}: does not fit {meta['model_name']} with "
                          f"{meta['num_classes']} classes ({detail}); restore the file or train again")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


def _state_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    """Keys the model needs but ``state`` lacks, keys it does not know, and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    return missing, unexpected, wrong


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
    values = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else probs
    finite = torch.isfinite(torch.as_tensor(values))
    if not bool(finite.all()):
        bad = int((~finite).reshape(finite.shape[0], -1).any(1).sum()) if finite.ndim else 1
        raise DamagedModelError(f"{artifact} gives non-finite probabilities for {bad} of "
                                f"{finite.shape[0] if finite.ndim else 1} images (damaged weights or "
                                "temperature); retrain or restore the run")
    return probs
