"""The layer contract of docs/ARCHITECTURE.md: vistrain's modules import only downward.

Layers, low to high; a module may import its own layer and those below it:

    errors, fsutil, config, device, progress, imageio
    data, transforms, models
    artifact, artifact_meta, rundir, evaluation
    training
    interpret
    report
    prediction, predictor, deploy, server, workflows
    cli, vistrain/__init__.py

``KNOWN_UPWARD`` lists the upward imports that remain, each inside a function and each named in
docs/ARCHITECTURE.md; the test fails on any other, and when one of these disappears (so the list
only shrinks).  Imports by name count too: ``importlib.import_module("vistrain.X")`` and an
f-string with a constant ``vistrain.X.`` prefix (or ``{__name__}``) are imports of ``vistrain.X``.

Within one layer a top-level name may import another (``workflows`` imports ``predictor``), but
never in a circle: ``SIDEWAYS_CYCLES`` lists the circles that remain, and it only shrinks too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import vistrain

LAYERS = [("errors", "fsutil", "config", "device", "progress", "imageio"),
          ("data", "transforms", "models"),
          ("artifact", "artifact_meta", "rundir", "evaluation"),
          ("training",),
          ("interpret",),
          ("report",),
          ("prediction", "predictor", "deploy", "server", "workflows"),
          ("cli", "__init__", "__main__")]

KNOWN_UPWARD: set[tuple[str, str]] = set()

# Same-layer circles still there.  config <-> fsutil: fsutil's messages spell flags with
# config.spelling.option, TrainConfig.save writes through fsutil.atomic_write_text.  (data and
# transforms no longer meet in a circle: images are read by imageio, the layer below both.)
SIDEWAYS_CYCLES: set[frozenset[str]] = {frozenset({"config", "fsutil"})}


def _layer(top: str) -> int | None:
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def imported_modules(tree: ast.AST, name: str = "vistrain") -> list[str]:
    """Every ``vistrain.X...`` module a file (the module ``name``) imports: statements
    (``from vistrain import X`` counts as X) and ``import_module`` calls by name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "vistrain":
                found += [f"vistrain.{a.name}" for a in node.names]
            elif node.module.startswith("vistrain."):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("vistrain.")]
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            module = _static_module(node.args[0], name)
            if module.startswith("vistrain."):
                found.append(module)
    return found


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
        (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


def _static_module(arg: ast.expr, name: str) -> str:
    """The module an ``import_module`` argument names, as far as it is known before it runs:
    ``"vistrain.a.b"`` whole, ``f"vistrain.a.{x}"`` and ``f"{__name__}.{x}"`` up to the last dot
    before the first unknown part; "" when nothing is known."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if not isinstance(arg, ast.JoinedStr):
        return ""
    prefix = ""
    for part in arg.values:
        if isinstance(part, ast.Constant):
            prefix += str(part.value)
        elif isinstance(part.value, ast.Name) and part.value.id == "__name__":
            prefix += name
        else:
            return prefix.rpartition(".")[0]
    return prefix


def _module_name(rel: Path) -> str:
    """``data/scan.py`` -> ``vistrain.data.scan``, ``data/__init__.py`` -> ``vistrain.data``."""
    parts = rel.with_suffix("").parts
    return ".".join(("vistrain",) + (parts[:-1] if parts[-1] == "__init__" else parts))


def _imports(package: Path):
    """``(file relative to the package, its top-level name, module imported)`` for every import."""
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        for module in imported_modules(ast.parse(path.read_text(), str(path)), _module_name(rel)):
            yield rel, rel.parts[0].removesuffix(".py"), module


def upward_imports(package: Path) -> set[tuple[str, str]]:
    """``(file relative to the package, module)`` for each import of a higher layer."""
    bad = set()
    for rel, top, module in _imports(package):
        src, dst = _layer(top), _layer(module.split(".")[1])
        if src is not None and dst is not None and dst > src:
            bad.add((rel.as_posix(), module))
    return bad


def sideways_cycles(package: Path) -> set[frozenset[str]]:
    """The circles among the top-level names of one layer: each a set of names that reach one
    another through imports within their layer (a strongly connected component of two or more)."""
    edges: dict[str, set[str]] = {}
    for _, top, module in _imports(package):
        dst = module.split(".")[1]
        if dst != top and _layer(top) is not None and _layer(top) == _layer(dst):
            edges.setdefault(top, set()).add(dst)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reached = {top: reach(top) for top in edges}
    return {frozenset({top} | {o for o in reached[top] if top in reached.get(o, ())})
            for top in edges if top in reached[top]}


def test_no_module_imports_a_higher_layer():
    package = Path(vistrain.__file__).parent
    found = upward_imports(package)
    assert found - KNOWN_UPWARD == set(), f"upward imports (see docs/ARCHITECTURE.md): {sorted(found - KNOWN_UPWARD)}"
    assert KNOWN_UPWARD - found == set(), f"gone, remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - found)}"


def test_no_circle_within_a_layer():
    package = Path(vistrain.__file__).parent
    found = sideways_cycles(package)
    assert found - SIDEWAYS_CYCLES == set(), f"imports in a circle within one layer: {sorted(map(sorted, found - SIDEWAYS_CYCLES))}"
    assert SIDEWAYS_CYCLES - found == set(), f"gone, remove from SIDEWAYS_CYCLES: {sorted(map(sorted, SIDEWAYS_CYCLES - found))}"


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


def test_the_check_follows_imports_by_name(tmp_path):
    """``import_module`` with a constant name, an f-string prefix or ``{__name__}`` is an import."""
    pkg = tmp_path / "vistrain"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "scan.py").write_text("import importlib\n"
                                          "importlib.import_module('vistrain.training.run')\n")
    (pkg / "data" / "__init__.py").write_text("from importlib import import_module\n"
                                              "def f(n):\n    return import_module(f'vistrain.report.{n}')\n")
    (pkg / "models").mkdir()
    (pkg / "models" / "__init__.py").write_text("import importlib\n"
                                                "def f(n):\n    importlib.import_module(f'{__name__}.{n}')\n"
                                                "    importlib.import_module(n)\n")
    assert upward_imports(pkg) == {("data/scan.py", "vistrain.training.run"),
                                   ("data/__init__.py", "vistrain.report")}
    assert imported_modules(ast.parse((pkg / "models" / "__init__.py").read_text()), "vistrain.models") \
        == ["vistrain.models"]


def test_the_check_catches_a_circle_within_a_layer(tmp_path):
    pkg = tmp_path / "vistrain"
    for sub in ("data", "models", "transforms"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "data" / "a.py").write_text("from vistrain.models import b\n")
    (pkg / "models" / "b.py").write_text("from vistrain.transforms import c\nfrom vistrain.errors import E\n")
    assert sideways_cycles(pkg) == set()  # a line, not a circle; errors is a layer below
    (pkg / "transforms" / "c.py").write_text("def f():\n    import importlib\n"
                                            "    importlib.import_module('vistrain.data.a')\n")
    assert sideways_cycles(pkg) == {frozenset({"data", "models", "transforms"})}


# ---- every name from the module that defines it ----------------------------------------------
def _module_tables(package: Path) -> tuple[dict, dict, set]:
    """``(defined, imported, packages)``: per module, the names it defines at the top level, the
    names it imports from vistrain modules (name -> (module, original name)), and which modules
    are packages (an ``__init__``: a package's API may gather its modules' names)."""
    defined, imported, packages = {}, {}, set()
    for path in package.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        name = _module_name(path.relative_to(package))
        tree = ast.parse(path.read_text(), str(path))
        if path.name == "__init__.py":
            packages.add(name)
        names, imports = set(), {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Name,)) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vistrain"):
                for a in node.names:
                    imports[a.asname or a.name] = (node.module, a.name)
        defined[name], imported[name] = names, imports
    return defined, imported, packages


def borrowed_imports(package: Path, files: list[Path]) -> set[tuple[str, str]]:
    """``(file, "module.name")`` for each ``from vistrain.module import name`` in ``files`` where
    the module is not a package and only imports ``name`` itself (a re-export)."""
    defined, imported, packages = _module_tables(package)
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in defined
                    and node.module not in packages):
                continue
            for a in node.names:
                if a.name in imported[node.module] and a.name not in defined[node.module]:
                    found.add((path.name, f"{node.module}.{a.name}"))
    return found


def test_every_name_is_imported_from_the_module_that_defines_it():
    """A module's names are its own: nothing imports a name from a module that only imports it
    (that module would be a facade whose readers cannot see where the name lives).  A package's
    ``__init__`` is the one place that may gather names, as ``vistrain`` and ``vistrain.models``."""
    package = Path(vistrain.__file__).parent
    root = package.parent
    files = [p for d in ("vistrain", "tests", "benchmarks") for p in (root / d).rglob("*.py")
             if "__pycache__" not in p.parts]
    assert borrowed_imports(package, files) == set()


def test_the_check_catches_a_borrowed_name(tmp_path):
    pkg = tmp_path / "vistrain"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "a.py").write_text("def load():\n    pass\n")
    (pkg / "data" / "b.py").write_text("from vistrain.data.a import load\n")
    user = tmp_path / "user.py"
    user.write_text("from vistrain.data.a import load\n")
    assert borrowed_imports(pkg, [user]) == set()
    user.write_text("from vistrain.data.b import load\n")
    assert borrowed_imports(pkg, [user]) == {("user.py", "vistrain.data.b.load")}
