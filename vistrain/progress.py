"""Progress bars that appear only where a person watches: a terminal or a notebook.

When stderr is redirected to a file or a pipe (CI logs, ``nohup``, ``2> log``), a tqdm bar writes
carriage-return debris; there, vistrain shows no bar and relies on its per-epoch log lines.
``VISTRAIN_PROGRESS=1`` forces bars on, ``VISTRAIN_PROGRESS=0`` forces them off.

Example:
    >>> from vistrain.progress import progress_bar
    >>> sum(progress_bar(range(3), desc="counting", enabled=False))
    3
"""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def in_notebook() -> bool:
    """True inside a Jupyter/IPython kernel (where tqdm.auto draws a widget bar)."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:  # an IPython too old or half-initialised: treat as no notebook
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def bars_wanted() -> bool:
    """Whether bars may be drawn in this process at all (environment, terminal, notebook)."""
    forced = os.environ.get("VISTRAIN_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr
    return in_notebook() or bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A ``tqdm`` bar when ``enabled`` and :func:`bars_wanted`, else a silent pass-through."""
    return tqdm(iterable, disable=not (enabled and bars_wanted()), **kwargs)
