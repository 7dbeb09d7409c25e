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

import platform
from pathlib import Path

import torch
from torch import nn

from vistrain import __version__
from vistrain.artifact_meta import FORMAT_VERSION, META, WEIGHTS, read_meta
from vistrain.errors import RunDirError
from vistrain.fsutil import atomic_write_bytes
from vistrain.models import create
from vistrain.rundir import write_run_file
from vistrain.transforms.preprocess import Preprocess



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
    write_run_file(path, meta)
    return path


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
