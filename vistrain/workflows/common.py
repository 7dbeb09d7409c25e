"""What every job shares: a config from keyword settings, default output folders, log lines.

Example:
    >>> from vistrain.workflows.common import make_config
    >>> cfg = make_config("examples/fashion-mnist-small", None, {"epochs": 3, "optim": {"name": "sgd"}})
    >>> cfg.train.epochs, cfg.optim.name, cfg.data.root
    (3, 'sgd', 'examples/fashion-mnist-small')
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from vistrain.config import TrainConfig, update_section
from vistrain.errors import VistrainError

# keyword shortcut -> (config section, field); whole sections go as dicts (optim={"name": "sgd"})
SHORTCUTS = {"model": ("model", "name"), "epochs": ("train", "epochs"), "strategy": ("strategy", "name"),
             "lr": ("optim", "lr"), "batch_size": ("data", "batch_size"), "seed": ("train", "seed"),
             "augment": ("augment", "preset"), "pretrained": ("model", "pretrained"),
             "weights": ("model", "weights"), "device": ("train", "device")}



class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged: notebooks and test runners
    replace it, and a handler holding the old stream would write into a closed file."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # StreamHandler.__init__ would pin today's stream

    @property
    def stream(self):
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:  # once the application configures logging, it shows
            super().emit(record)              # the line (through propagation): never twice


def as_config(config) -> TrainConfig:
    """``None`` (defaults), a :class:`TrainConfig`, a dict of sections or a YAML path -> a config."""
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return TrainConfig.load(config)
    raise VistrainError(f"config must be a TrainConfig, a dict of sections or a YAML path, "
                        f"got {type(config).__name__}")


def apply_shortcuts(cfg: TrainConfig, settings: dict[str, Any]) -> None:
    """Set the :data:`SHORTCUTS` and whole sections given as dicts; ``None`` values are ignored."""
    for key, value in settings.items():
        if value is None:
            continue
        if key in SHORTCUTS:
            section, field = SHORTCUTS[key]
            setattr(getattr(cfg, section), field, value)
        elif hasattr(cfg, key) and isinstance(value, dict):
            update_section(getattr(cfg, key), value, key)
        else:
            raise VistrainError(f"unknown setting {key!r}; use one of {', '.join(sorted(SHORTCUTS))} "
                                "or a whole section as a dict, e.g. optim={'name': 'sgd'}")


def make_config(data, config, settings: dict[str, Any]) -> TrainConfig:
    """The job's config: ``config`` (see :func:`as_config`), then ``settings``, then ``data``;
    resolved and validated (:meth:`TrainConfig.check`: e.g. a from-scratch ``vistrain/<name>``
    model trains every layer unless ``strategy`` says otherwise), as on the command line.

    The jobs take the image folder positionally, so the keyword ``data`` is free for the ``data``
    section (``data={"num_workers": 2}``); given a path instead, it is the folder.
    """
    settings = dict(settings)
    keyword = settings.pop("data", None)
    if isinstance(keyword, (str, Path)):
        if data is not None and Path(data) != Path(keyword):
            raise VistrainError(f"two data folders given ({data} and data={keyword}); give one")
        data, keyword = keyword, None
    cfg = as_config(config)
    if keyword is not None:
        settings["data"] = keyword  # a dict: the data section, applied with the others
    apply_shortcuts(cfg, settings)
    if data is not None:
        cfg.data.root = str(data)
    if not cfg.data.root:
        raise VistrainError("no data folder given: pass the image folder DATA/<class>/<image>")
    return cfg.check()


def default_out_dir(data_root: str | Path, suffix: str = "") -> Path:
    """``runs/<data folder name><suffix>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / f"{Path(data_root).resolve().name}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"


def show_log_lines() -> None:
    """Make vistrain's INFO lines (progress, one line per epoch) visible without logging setup.

    A notebook or a plain script that configured no logging would otherwise see nothing (Python
    prints only warnings then).  When neither the ``vistrain`` logger nor the root logger has a
    handler, one stderr handler at INFO is attached to ``vistrain``, once; an application that
    configures logging itself is left alone.  The ``vistrain`` logger's level is then INFO:
    ``logging.getLogger("vistrain").setLevel(logging.WARNING)`` quietens it.
    """
    logger = logging.getLogger("vistrain")
    if logger.handlers or logging.getLogger().handlers:
        return  # ours from an earlier call, or the application's own
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
