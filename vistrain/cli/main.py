"""Entry point of the ``vistrain`` command.

Each sub-command lives in its own module ``vistrain.cli.<name>`` exposing
``register(subparsers)`` (adds its parser and sets ``func``).  Modules are imported lazily by
name so that ``vistrain --help`` stays fast and one broken optional feature cannot take the
whole CLI down.

Conventions every verb follows (set here where one place can do it):

* ``--help`` shows each option's default (:class:`HelpFormatter`, given to every sub-parser);
* ``--json`` prints exactly one JSON document on stdout and nothing else there; log lines and
  warnings go to stderr;
* the same option name for the same thing in every verb (``--out`` for what a verb writes,
  ``--augment`` for the augmentation preset); an old name stays accepted, hidden from ``--help``,
  with a deprecation warning (:class:`DeprecatedAlias`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vistrain import __version__
from vistrain.config.spelling import cli_spelling
from vistrain.errors import VistrainError

# Sub-command modules, in the order they appear in --help.
COMMANDS = [
    "train", "predict", "evaluate", "cv", "check", "stats", "doctor", "preview", "lr-find",
    "augment-preview", "explain", "report", "compare", "cache", "pack", "export", "serve",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default
    or there is nothing to show (``None``, ``False`` of a flag, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not _shows_default(action) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    return not (default is None or default is False or default is argparse.SUPPRESS or default == [])


class SubcommandParser(argparse.ArgumentParser):
    """The parser class of every verb: :class:`HelpFormatter` unless the verb asks otherwise, and
    an option given without help still shows its default (argparse prints no line for it)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.option_strings and _shows_default(action):
            action.help = "default: %(default)s"
        return action


class DeprecatedAlias(argparse.Action):
    """An old option name kept working (hidden: give ``help=argparse.SUPPRESS``): stores into the
    new option's ``dest`` and warns on stderr, e.g.
    ``p.add_argument("--preset", dest="augment", action=DeprecatedAlias, new="--augment",
    help=argparse.SUPPRESS)``."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        kwargs.setdefault("default", argparse.SUPPRESS)  # the new option's default stays
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vistrain",
        description="Train, evaluate and explain image classifiers from a folder of images.",
    )
    parser.add_argument("--version", action="version", version=f"vistrain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
    for name in COMMANDS:
        importlib.import_module(f"vistrain.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    with cli_spelling():  # error messages name flags (--overwrite), not API keywords
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # log lines go to stderr: stdout holds only the verb's result (one JSON document with --json)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VistrainError as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; resume with `vistrain train --resume RUN_DIR`",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
