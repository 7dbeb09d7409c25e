"""What every job shares: a config from keyword settings, default output folders, log lines.

Example:
    >>> import vistrain
    >>> cfg = vistrain.make_config("examples/fashion-mnist-small", epochs=3, optim={"name": "sgd"})
    >>> cfg.train.epochs, cfg.optim.name, cfg.data.root.endswith("examples/fashion-mnist-small")
    (3, 'sgd', True)
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from vistrain.config import TrainConfig
from vistrain.config.settings import apply_settings
from vistrain.data.stream import location
from vistrain.errors import VistrainError


def as_config(config) -> TrainConfig:
    """``None`` (defaults), a :class:`TrainConfig` (copied: the caller's stays as it is), a dict
    of sections or a YAML path -> a config."""
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return copy.deepcopy(config)
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return TrainConfig.load(config)
    raise VistrainError(f"config must be a TrainConfig, a dict of sections or a YAML path, "
                        f"got {type(config).__name__}")


def make_config(data=None, /, config=None, settings: dict[str, Any] | None = None,
                **keywords: Any) -> TrainConfig:
    """The resolved, validated config of a job (``vistrain.make_config``): ``config``, then the
    keyword settings, then the image folder ``data``; what ``vistrain train DATA [flags]
    --print-config`` prints (``.to_yaml()`` is the same text) and what the jobs train with.

    Args:
        data: the image folder; stored absolute, as a run's config.yaml records it.
        config: a :class:`TrainConfig` (not changed), a dict of sections or a YAML path.
        settings: keyword settings as one dict (how the jobs pass their ``**settings`` on).
        keywords: the flags' keywords (:data:`vistrain.config.settings.SETTINGS`: ``model``,
            ``epochs``, ``lr``, ``batch_size``, ``augment``, ``norm``, ``pretrained=False``, ...)
            or whole sections as dicts (``optim={"name": "sgd"}``), applied after the keywords
            as ``--set`` after the flags.  ``None`` means "not given".

    ``data`` is positional, so the keyword ``data`` is free for the ``data`` section
    (``data={"num_workers": 2}``); given a path instead, it is the folder.  Defaults that depend
    on other settings (a from-scratch ``vistrain/<name>`` model fine-tunes every layer, without
    pretrained weights) come from :meth:`TrainConfig.check`, as on the command line.

    Example:
        >>> import vistrain
        >>> cfg = vistrain.make_config("data", model="vistrain/resnet20", epochs=5)
        >>> cfg.strategy.name, cfg.model.pretrained, cfg.train.epochs
        ('finetune', False, 5)
    """
    settings = {**(settings or {}), **keywords}
    keyword = settings.pop("data", None)
    if isinstance(keyword, (str, Path)):
        if data is not None and Path(data) != Path(keyword):
            raise VistrainError(f"two data folders given ({data} and data={keyword}); give one")
        data, keyword = keyword, None
    cfg = as_config(config)
    if keyword is not None:
        settings["data"] = keyword  # a dict: the data section, applied with the others
    apply_settings(cfg, settings)
    if data is not None:
        cfg.data.root = location(data)
    if not cfg.data.root:
        raise VistrainError("no data folder given: pass the image folder DATA/<class>/<image>")
    return cfg.check()


def default_out_dir(data_root: str | Path, suffix: str = "") -> Path:
    """``runs/<data folder name><suffix>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / f"{Path(data_root).resolve().name}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"
