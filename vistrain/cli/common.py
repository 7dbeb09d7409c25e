"""Helpers shared by sub-commands: config assembly from flags, printing, and :func:`job`, the
one place the command line imports a workflow (when its verb runs, not before).

Workflows import torch, timm and scikit-learn (~1-2 s).  ``vistrain --help``, ``--version`` and
argument errors need none of it, so every verb's ``run`` fetches its workflow module through
:func:`job` instead of importing it at the top of the verb's module.  The only other deferred
imports are the table printers of ``cv`` and ``compare`` (their modules load numpy and PIL);
tests/test_cli_front.py holds the front free of torch and numpy.

Example:
    >>> from vistrain.cli.common import job
    >>> job("stats").stats.__name__
    'stats'
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
from types import ModuleType

from vistrain.config import SECTIONS, TrainConfig
from vistrain.config.settings import SETTINGS, apply_settings, set_text
from vistrain.errors import VistrainError, missing_train_extra


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train``, ``cv``, ``compare``, ``check`` and ``lr-find`` (all optional;
    config file < flags < ``--set``).

    One flag per entry of :data:`vistrain.config.settings.SETTINGS`, the table the Python API
    takes its keywords from: type, ``choices=`` and the defaults named in the help come from the
    config itself, so a flag, its keyword and ``--set`` accept exactly the same values.  The flags
    default to "not given" (None): the config file's value, or the config's default, stays.
    """
    p.add_argument("--config", help="YAML config (e.g. a run's config.yaml); flags override it")
    for s in SETTINGS:
        # argparse %-formats help texts: a literal % must be doubled
        text = s.describe().replace("%", "%%")
        if s.const is not None:
            p.add_argument(s.option, dest=s.name, action="store_const", const=s.const, help=text)
        else:
            p.add_argument(s.option, dest=s.name, type=s.type, choices=s.choices or None, help=text,
                           action="append" if s.repeat else "store")
    p.add_argument("--strict", action="store_true",
                   help="key the pixel and feature caches by every byte of every image (default: "
                        "size, mtime and the first and last 64 KiB of each file)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any config setting, e.g. --set optim.name=sgd (repeatable)")


def config_from_args(args, data: str | None = None) -> TrainConfig:
    """The config file (``--config``), then the flags (:func:`apply_settings`, as the Python API
    applies its keywords), then ``--set``, then ``data``; resolved and validated
    (:meth:`TrainConfig.check`), so a bad value stops here, before any side effect."""
    if getattr(args, "strict", False):
        os.environ["VISTRAIN_CACHE_STRICT"] = "1"  # read by every cache key this process makes
    cfg = TrainConfig.load(args.config) if getattr(args, "config", None) else TrainConfig()
    apply_settings(cfg, {s.name: getattr(args, s.name, None) for s in SETTINGS})
    for item in getattr(args, "set", []) or []:
        name, sep, raw = item.partition("=")
        section, dot, _ = name.partition(".")
        if not sep or not dot or section not in SECTIONS:
            raise VistrainError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. optim.name=sgd")
        set_text(cfg, name, raw)
    if data is not None:
        cfg.data.root = str(data)
    return cfg.check()


def print_json(obj) -> None:
    try:  # NaN/Infinity are not JSON: a result holding one is refused, never printed
        text = json.dumps(obj, indent=1, allow_nan=False)
    except ValueError as err:
        raise VistrainError(f"the result holds a non-finite number ({err}); the run's model or data "
                            "is damaged: retrain or restore the run") from None
    print(text)


def job(name: str) -> ModuleType:
    """The module ``vistrain.workflows.<name>``, imported on first use (see the module docstring).
    A serving install (``vistrain[serve]``, no torch) running a verb that needs the extra
    ``vistrain[train]`` gets one line naming the install, not an ImportError's traceback."""
    try:
        return importlib.import_module(f"vistrain.workflows.{name}")
    except ImportError as err:
        missing = missing_train_extra(err, f"vistrain {name.replace('_', '-')}")
        if missing is None:
            raise
        raise missing from None

