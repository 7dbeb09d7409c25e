"""The layer contract of docs/ARCHITECTURE.md: vistrain's modules import only downward.

Layers, low to high; a module may import its own layer and those below it:

    errors, fsutil, config, device, progress
    data, transforms, models
    artifact, artifact_meta, rundir, evaluation
    training
    interpret
    report
    prediction, predictor, deploy, server, workflows
    cli, vistrain/__init__.py

``KNOWN_UPWARD`` lists the upward imports that remain, each inside a function and each named in
docs/ARCHITECTURE.md; the test fails on any other, and when one of these disappears (so the list
only shrinks).
"""
from __future__ import annotations

import ast
from pathlib import Path

import vistrain

LAYERS = [("errors", "fsutil", "config", "device", "progress"),
          ("data", "transforms", "models"),
          ("artifact", "artifact_meta", "rundir", "evaluation"),
          ("training",),
          ("interpret",),
          ("report",),
          ("prediction", "predictor", "deploy", "server", "workflows"),
          ("cli", "__init__", "__main__")]

KNOWN_UPWARD: set[tuple[str, str]] = set()


def _layer(top: str) -> int | None:
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def imported_modules(tree: ast.AST) -> list[str]:
    """Every ``vistrain.X...`` module a file imports (``from vistrain import X`` counts as X)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "vistrain":
                found += [f"vistrain.{a.name}" for a in node.names]
            elif node.module.startswith("vistrain."):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("vistrain.")]
    return found


def upward_imports(package: Path) -> set[tuple[str, str]]:
    """``(file relative to the package, module)`` for each import of a higher layer."""
    bad = set()
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        src = _layer(rel.parts[0].removesuffix(".py"))
        for module in imported_modules(ast.parse(path.read_text(), str(path))):
            dst = _layer(module.split(".")[1])
            if src is not None and dst is not None and dst > src:
                bad.add((rel.as_posix(), module))
    return bad


def test_no_module_imports_a_higher_layer():
    package = Path(vistrain.__file__).parent
    found = upward_imports(package)
    assert found - KNOWN_UPWARD == set(), f"upward imports (see docs/ARCHITECTURE.md): {sorted(found - KNOWN_UPWARD)}"
    assert KNOWN_UPWARD - found == set(), f"gone, remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - found)}"


def test_every_top_level_module_has_a_layer():
    package = Path(vistrain.__file__).parent
    tops = {p.name.removesuffix(".py") for p in package.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__pycache__"}
    assert {t for t in tops if _layer(t) is None} == set()


def test_the_check_catches_an_added_upward_import(tmp_path):
    """The same check on a copy of two modules, one given an import of a higher layer."""
    pkg = tmp_path / "vistrain"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "scan.py").write_text("from vistrain.errors import DataError\n")
    assert upward_imports(pkg) == set()
    (pkg / "data" / "scan.py").write_text("def f():\n    from vistrain.training.run import run_training\n")
    assert upward_imports(pkg) == {("data/scan.py", "vistrain.training.run")}
