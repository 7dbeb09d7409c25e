"""Entry point of the ``vistrain`` command.

Each sub-command lives in its own module ``vistrain.cli.<name>`` exposing
``register(subparsers)`` (adds its parser and sets ``func``).  Modules are imported lazily by
name so that ``vistrain --help`` stays fast and one broken optional feature cannot take the
whole CLI down.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vistrain.errors import VistrainError

# Sub-command modules, in the order they appear in --help.
COMMANDS = [
    "train", "predict", "evaluate", "cv", "check", "stats", "doctor", "preview", "lr-find",
    "augment-preview", "explain", "report", "compare", "cache",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vistrain",
        description="Train, evaluate and explain image classifiers from a folder of images.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"vistrain.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
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
