"""vistrain: a folder of images in; a well-trained, honestly evaluated, explainable classifier out.

The Python API mirrors the command line::

    import vistrain
    result = vistrain.train("examples/fashion-mnist-small", out="runs/demo", epochs=20)
    print(result.metrics["test"]["accuracy"], result.run_dir / "report.html")
    clf = vistrain.load("runs/demo")
    print(clf.predict(["some/image.png"], top_k=3))
"""
from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path
from typing import Any


def train(data: str | Path | None = None, *, out: str | Path | None = None, config=None,
          overwrite: bool = False, resume: bool = False, progress: bool = True, **settings: Any):
    """Train a classifier on an image folder; returns a ``RunResult`` (run_dir, metrics, history).

    ``config`` is a :class:`vistrain.config.TrainConfig`, a dict of sections or a YAML path.
    Shortcuts in ``settings``: ``model``, ``epochs``, ``strategy``, ``lr``, ``batch_size``,
    ``seed`` and ``augment``; or whole sections as dicts (``optim={"name": "sgd"}``).
    """
    from vistrain.config import TrainConfig
    from vistrain.training.run import run_training
    cfg = _as_config(config)
    apply_shortcuts(cfg, settings)
    if data is not None:
        cfg.data.root = str(data)
    if not cfg.data.root:
        from vistrain.errors import VistrainError
        raise VistrainError("no data folder given")
    out = Path(out) if out else default_out_dir(cfg.data.root)
    return run_training(cfg, out, overwrite=overwrite, resume=resume, progress=progress)


def load(run_dir: str | Path, device: str = "cpu"):
    """A :class:`vistrain.predictor.Classifier` for a finished run directory."""
    from vistrain.predictor import Classifier
    return Classifier.from_run(run_dir, device=device)


def _as_config(config):
    from vistrain.config import TrainConfig
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    return TrainConfig.load(config)


_SHORTCUTS = {"model": ("model", "name"), "epochs": ("train", "epochs"), "strategy": ("strategy", "name"),
              "lr": ("optim", "lr"), "batch_size": ("data", "batch_size"), "seed": ("train", "seed"),
              "augment": ("augment", "preset"), "pretrained": ("model", "pretrained"),
              "weights": ("model", "weights")}


def apply_shortcuts(cfg, settings: dict) -> None:
    from vistrain.config import update_section
    for key, value in settings.items():
        if value is None:
            continue
        if key in _SHORTCUTS:
            section, field = _SHORTCUTS[key]
            setattr(getattr(cfg, section), field, value)
        elif hasattr(cfg, key) and isinstance(value, dict):
            update_section(getattr(cfg, key), value, key)
        else:
            from vistrain.errors import VistrainError
            raise VistrainError(f"unknown setting {key!r}")


def default_out_dir(data_root: str) -> Path:
    import time
    return Path("runs") / f"{Path(data_root).resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"


__all__ = ["train", "load", "__version__"]
