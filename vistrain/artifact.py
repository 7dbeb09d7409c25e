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
import platform
from pathlib import Path

import torch
from torch import nn

from vistrain.errors import RunDirError
from vistrain.transforms.preprocess import Preprocess

FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    import numpy
    import PIL
    import timm
    import torchvision
    import vistrain
    return {"vistrain": vistrain.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__,
            "python": platform.python_version()}


def save_model(run_dir: str | Path, model: nn.Module, *, model_name: str, classes: list[str],
               preprocess: Preprocess, model_kwargs: dict | None = None,
               pretrained_cfg: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``run_dir``; returns the json path."""
    from safetensors.torch import save_file
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(run_dir / "model.safetensors"), metadata={"format": "pt"})
    meta = {"format_version": FORMAT_VERSION, "model_name": model_name,
            "model_kwargs": model_kwargs or {}, "num_classes": len(classes), "classes": classes,
            "preprocess": preprocess.to_dict(), "pretrained_cfg": pretrained_cfg or {},
            "versions": versions(), **(extra or {})}
    path = run_dir / "model.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


def read_meta(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found; give the --out folder of a "
                          "finished `vistrain train`")
    path = run_dir / "model.json"
    if not path.is_file() or not (run_dir / "model.safetensors").is_file():
        raise RunDirError(f"{run_dir}: no model.json/model.safetensors in it; training did not finish "
                          "(resume it with `vistrain train --resume RUN_DIR`) or this is not a run folder")
    return json.loads(path.read_text())


def load_model(run_dir: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a run with its trained weights, in eval mode; returns (model, meta)."""
    from safetensors.torch import load_file

    from vistrain.models import create
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    model, _ = create(meta["model_name"], meta["num_classes"], pretrained=False,
                      **meta.get("model_kwargs", {}))
    state = load_file(str(run_dir / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta
