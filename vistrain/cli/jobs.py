"""The one place the command line imports a workflow: when its verb runs, not before.

Workflows import torch, timm and scikit-learn (~1-2 s).  ``vistrain --help``, ``--version`` and
argument errors need none of it, so every verb's ``run`` fetches its workflow module here instead
of importing it at the top of the verb's module.  This is the CLI's only deferred import of a
vistrain module (the layer test counts the others).

Example:
    >>> from vistrain.cli.jobs import job
    >>> job("stats").stats.__name__
    'stats'
"""
from __future__ import annotations

import importlib
from types import ModuleType


def job(name: str) -> ModuleType:
    """The module ``vistrain.workflows.<name>``, imported on first use."""
    return importlib.import_module(f"vistrain.workflows.{name}")
