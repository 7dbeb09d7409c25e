"""vistrain's log lines on stderr without any logging set-up (every job calls :func:`show_log_lines`).

A module of its own, importing nothing heavy, so that the torch-free serving path
(``vistrain serve MODEL.onnx``) logs as every other job does.

Example:
    >>> from vistrain.workflows.logs import show_log_lines
    >>> show_log_lines()      # doctest: +SKIP
"""
from __future__ import annotations

import logging
import sys


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
