"""``vistrain --version``, ``vistrain --help`` and ``--help`` of every verb."""
from __future__ import annotations

import re

import pytest

import vistrain as vistrain_pkg
from vistrain.cli.main import COMMANDS
from .acceptlib import assert_ok, vistrain

VERBS = list(COMMANDS)  # every registered verb, export and serve included
assert {"train", "predict", "evaluate", "cv", "export", "serve", "report"} <= set(VERBS)


def test_version():
    res = assert_ok(vistrain("--version"))
    assert vistrain_pkg.__version__ in res.stdout and res.stdout.count("\n") == 1


def test_top_level_help_lists_every_verb():
    res = assert_ok(vistrain("--help"))
    listed = set(re.findall(r"^\s{4}([a-z][a-z-]+)\s", res.stdout, re.M))
    assert set(VERBS) <= listed, set(VERBS) - listed


def test_no_verb_prints_help_and_fails():
    res = vistrain()
    assert res.rc != 0 and "Traceback" not in res.stderr and "usage: vistrain" in res.stdout + res.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_verb_help(verb):
    res = assert_ok(vistrain(verb, "--help"))
    assert res.stdout.startswith(f"usage: vistrain {verb}"), res.stdout[:200]
    assert res.stderr == ""


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_offers_json(verb):
    """The ``--json`` convention: every verb can print one JSON document instead of text."""
    res = assert_ok(vistrain(verb, "--help"))
    m = re.search(r"^\s+--json(\s+[A-Z]+)?\s", res.stdout, re.M)
    assert m and not m.group(1), f"{verb}: no --json flag (or it takes an argument)"


def test_unknown_verb_and_option_fail_cleanly():
    for args in (["nosuchverb"], ["train", "--nosuchoption"], ["predict", "--top-k", "many"]):
        res = vistrain(*args)
        assert res.rc == 2 and "Traceback" not in res.stderr, res.describe()
        assert "error:" in res.stderr.splitlines()[-1]
