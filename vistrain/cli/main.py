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
from vistrain.cli.failures import run_verb
from vistrain.config.spelling import cli_spelling

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


class OneLineErrors:
    """argparse errors as one line ``error: <problem>; see `vistrain VERB --help```, exit 2.

    argparse prints the whole usage (dozens of lines for ``train``) before its message; the
    message itself already names the flag, the bad value and the allowed values or type, e.g.
    ``argument --epochs: invalid int value: 'abc'``."""

    def error(self, message: str):
        self.exit(2, f"error: {message.strip()}; see `{self.prog} --help`\n")


class SubcommandParser(OneLineErrors, argparse.ArgumentParser):
    """The parser class of every verb: :class:`HelpFormatter` unless the verb asks otherwise, and
    an option given without help still shows its default (argparse prints no line for it).
    ``-v``/``--verbose`` works after the verb too (``vistrain train DATA -v``)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        # SUPPRESS: not given after the verb keeps the value given before it
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="debug logging and full tracebacks")

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.option_strings and _shows_default(action):
            action.help = "default: %(default)s"
        return action


class TopParser(OneLineErrors, argparse.ArgumentParser):
    """The ``vistrain`` parser: an error after the verb names the verb's ``--help``."""

    verb: str | None = None

    def error(self, message: str):
        if self.verb:
            self.exit(2, f"error: {message.strip()}; see `vistrain {self.verb} --help`\n")
        super().error(message)


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


def build_parser(verb: str | None = None) -> TopParser:
    """The ``vistrain`` parser; with a known ``verb`` only that verb's module is imported (its
    ``--help``, its errors and its run need no other), else every verb's (``vistrain --help``)."""
    parser = TopParser(
        prog="vistrain",
        description="Train, evaluate and explain image classifiers from a folder of images.",
    )
    parser.add_argument("--version", action="version", version=f"vistrain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
    for name in [verb] if verb in COMMANDS else COMMANDS:  # by name: only the verb run is imported
        importlib.import_module(f"vistrain.cli.{name.replace('-', '_')}").register(sub)
    parser.verb = verb if verb in COMMANDS else None
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answered before any verb module is imported; exits as argparse does
        print(f"vistrain {__version__}")
        raise SystemExit(0)
    # the first word that is not an option is the verb (the top-level options take no value)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    with cli_spelling():  # error messages name flags (--overwrite), not API keywords
        return _main(parser, argv)


def _main(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    # a file name that is not UTF-8 (os.fsdecode's surrogates) prints as its own bytes, not a crash
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if hasattr(stream, "reconfigure"):  # not on a StringIO a caller redirected it to
            stream.reconfigure(errors=errors)
    # log lines go to stderr: stdout holds only the verb's result (one JSON document with --json)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_verb(args)


if __name__ == "__main__":
    sys.exit(main())
