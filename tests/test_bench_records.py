"""The benchmark figures of docs/benchmarks.md and README.md come from records, and no record is
older than the code it measures.

Every generated part of the two pages (``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``) must
have its records in ``benchmarks/results/`` and read exactly what ``benchmarks/docs.py``
renders from them.  Every record lists the vistrain files it measures; a commit that changed the code of one of them
after the record's commit makes it stale (re-run the command the test names).  "The code" is what
runs: a file moved or renamed is followed, and a change of its docstrings, comments or the
modules its names are imported from alone (the same names) leaves the record current -- a
refactor that moves code does not pretend it measured again, nor make the figures stale.  Runs
no benchmark: it reads JSON and asks git.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def load_docs():
    spec = importlib.util.spec_from_file_location("bench_docs", REPO / "benchmarks" / "docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOCS = load_docs()
RECORDS = sorted(RESULTS.glob("*.json"))


def git(*args: str) -> str | None:
    """``git args`` in the repository, or None outside a git checkout (a tarball) or without git."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def test_the_pages_quote_generated_figures():
    names = [name for page in DOCS.PAGES for name, _ in DOCS.blocks(page.read_text())]
    assert names, "no <!-- bench:NAME --> block in docs/benchmarks.md or README.md"


@pytest.mark.parametrize("page", DOCS.PAGES, ids=lambda p: p.name)
def test_every_quoted_figure_has_a_record_and_reads_what_it_generates(page):
    text = page.read_text()
    for name, _ in DOCS.blocks(text):
        assert name in DOCS.RENDERERS, f"{page.name}: <!-- bench:{name} --> is not a block benchmarks/docs.py knows"
        for record in DOCS.RENDERERS[name].records:
            assert (RESULTS / f"{record}.json").is_file(), \
                f"{page.name}: block {name} needs benchmarks/results/{record}.json"
    assert DOCS.generate(text) == text, f"{page.name} differs from the records: run `make bench-docs`"


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_record_is_complete(path):
    rec = json.loads(path.read_text())
    assert rec["name"] == path.stem
    for key in ("command", "git", "date", "machine", "versions", "threads", "params", "repeats",
                "derived", "limits", "modules"):
        assert key in rec, f"{path.name}: no {key!r}"
    assert rec["modules"], f"{path.name}: lists no module it measures"
    for module in rec["modules"]:
        assert (REPO / module).is_file(), f"{path.name}: measured module {module} does not exist"
    for name, lim in rec["limits"].items():
        assert {"value", "limit", "fraction", "how"} <= set(lim), f"{path.name}: limit {name}"


def code_of(source: str) -> str:
    """What runs in a module's ``source``: its syntax tree without docstrings and imports (a
    module moved, or an import its code never used removed, is the same code; a name the code
    uses under another binding shows in the code itself)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):   # docstrings, and any other bare string: they do nothing
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                                 and isinstance(n.value.value, str))] or [ast.Pass()]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.Try)):
            node.body = [n for n in node.body if not isinstance(n, (ast.Import, ast.ImportFrom))] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def path_at(module: str, commit: str) -> str | None:
    """The path ``module`` had at ``commit``, following the renames since (None: it did not exist)."""
    path = module
    log = git("log", "--follow", "--name-status", "--format=", f"{commit}..HEAD", "--", module) or ""
    for line in log.splitlines():   # newest first: each rename leads one step further back
        fields = line.split("\t")
        if fields[0].startswith("R") and len(fields) == 3 and fields[2] == path:
            path = fields[1]
    return path if git("cat-file", "-e", f"{commit}:{path}") is not None else None


def code_changed(module: str, commit: str) -> bool:
    """Whether the code of ``module`` (a path now) differs from what it was at ``commit``."""
    then = path_at(module, commit)
    if then is None:
        return True
    return code_of(git("show", f"{commit}:{then}") or "") != code_of((REPO / module).read_text())


def test_code_of_ignores_moves_and_docs_but_not_behaviour():
    before = '"""Doc."""\nfrom vistrain.data.io import load\ndef f(x):\n    """Doc."""\n    return load(x) + 1\n'
    moved = '"""Other doc."""\nfrom vistrain.imageio.read import load\ndef f(x):\n    return load(x) + 1\n'
    assert code_of(before) == code_of(moved)
    assert code_of(before) != code_of(moved.replace("+ 1", "+ 2"))
    assert code_of(before) != code_of(moved.replace("import load", "import load as read").replace("load(x)", "read(x)"))
    assert code_of(before) == code_of("from vistrain.data.io import load, unused\n" + moved)  # an unused import


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_record_is_not_older_than_the_code_it_measures(path):
    if git("rev-parse", "--is-inside-work-tree") != "true":
        pytest.skip("not a git checkout: the age of the code is unknown")
    if git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("shallow clone: the commits that last touched the modules are not all here")
    rec = json.loads(path.read_text())
    made, modules = rec["git"], rec["modules"]
    rerun = f"re-run `{rec['command']}` (then `make bench-docs`) and commit the record"
    assert made.get("commit"), f"{path.name}: made outside a git checkout; {rerun}"
    assert not made.get("dirty_modules"), \
        f"{path.name}: made with uncommitted changes to {made['dirty_modules']}; {rerun}"
    if git("cat-file", "-e", f"{made['commit']}^{{commit}}") is None:
        newer = [m for m in modules if int(git("log", "-1", "--format=%ct", "--", m) or 0) > made["commit_time"]]
        assert not newer, f"{path.name}: {', '.join(newer)} changed after the record's commit; {rerun}"
        return
    # the record's commit is in this history: the code of each module then and now
    # (this also catches a merged branch whose commits are older than the record)
    changed = [m for m in modules if git("log", "--format=%h", f"{made['commit']}..HEAD", "--", m)
               and code_changed(m, made["commit"])]
    assert not changed, f"{path.name}: the code of {', '.join(changed)} changed since the record; {rerun}"
