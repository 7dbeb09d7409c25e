"""How an error message spells a setting: a flag for the command line, a keyword for Python.

A user error names its fix (``error: <problem>; <fix>``), and the fix must be spelled the way the
caller types it: ``--overwrite`` at the command line, ``overwrite=True`` in a notebook.  The
caller is decided in one place: :func:`vistrain.cli.main.main` runs the verb inside
:func:`cli_spelling`; everything else (the Python API) gets keywords.  Messages call
:func:`option` for a flag or keyword and :func:`set_option` for a config key that the command
line sets with ``--set``.

Example:
    >>> option("overwrite"), option("data", "PATH"), set_option("data.cache", "off")
    ('overwrite=True', 'data=PATH', "data={'cache': 'off'}")
    >>> with cli_spelling():
    ...     option("overwrite"), option("data", "PATH"), set_option("data.cache", "off")
    ('--overwrite', '--data PATH', '--set data.cache=off')
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# "cli" while a command-line verb runs, "api" otherwise (a context variable: threads and nested
# calls of main() in one process, e.g. tests, each see their own caller)
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("vistrain_caller", default="api")


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Inside: messages name command-line flags (what ``vistrain.cli.main.main`` runs under)."""
    token = _CALLER.set("cli")
    try:
        yield
    finally:
        _CALLER.reset(token)


def for_cli() -> bool:
    """Whether the running call came from the command line."""
    return _CALLER.get() == "cli"


def option(name: str, value: str | None = None, *, flag: str | None = None) -> str:
    """The setting ``name`` (an API keyword, e.g. ``"batch_size"``) as the caller types it: with
    ``value`` (a placeholder such as ``"PATH"`` or a literal) ``--batch-size 64`` / ``batch_size=64``,
    without it a switch, ``--overwrite`` / ``overwrite=True``.  ``flag``: the flag when it is not
    ``--<name with dashes>`` (e.g. ``--no-pretrained`` for ``pretrained=False``)."""
    if for_cli():
        cli_flag = flag or "--" + name.replace("_", "-")
        return cli_flag if value is None else f"{cli_flag} {value}"
    if value is None:
        return f"{name}={'False' if flag and flag.startswith('--no-') else 'True'}"
    return f"{name}={value}"


def set_option(key: str, value) -> str:
    """The config key ``SECTION.NAME`` set to ``value``: ``--set data.cache=off`` on the command
    line, the section keyword ``data={'cache': 'off'}`` in Python."""
    if for_cli():
        return f"--set {key}={_cli_value(value)}"
    section, _, name = key.partition(".")
    return f"{section}={{{name!r}: {value!r}}}"


def _cli_value(value) -> str:
    """``value`` as ``--set`` parses it (YAML) and a shell keeps it one word: ``false``, ``[1,2]``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_cli_value(v) for v in value) + "]"
    return str(value)
