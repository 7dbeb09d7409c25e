"""The Python API: one function per CLI verb, callable any number of times in one process.

The end-to-end test runs in a fresh interpreter: it is about what a user's script sees (module
attributes replaced by submodule imports, logging never configured), which an interpreter
that already ran other tests would hide.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vistrain
from conftest import make_image_folder
from vistrain.errors import VistrainError
from vistrain.workflows.common import make_config
from vistrain.workflows.logs import show_log_lines

API = ["train", "load", "predict", "evaluate", "cv", "compare", "explain", "check", "lr_find"]
TINY = dict(model="vistrain/resnet-tiny", epochs=1, batch_size=8, preprocess={"size": 32},
            data={"num_workers": 0})  # the data section: the folder itself is positional

SCRIPT = textwrap.dedent("""
    import json, logging, sys
    from pathlib import Path
    import vistrain

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    tiny = json.loads(sys.argv[3])
    first = vistrain.train(data, out=out / "first", **tiny)
    second = vistrain.train(data, out=out / "second", seed=1, **tiny)  # used to fail: a module
    clf = vistrain.load(second.run_dir)
    one = clf.predict(data / "b" / "b_000.png", top_k=2)
    folder = vistrain.predict(first.run_dir, data / "c")
    metrics = vistrain.evaluate(first.run_dir, data, bootstrap=20, out=out / "eval")
    explained = vistrain.explain(second.run_dir, [data / "a" / "a_000.png"], out=out / "explain")
    # each fold's full report (Grad-CAM gallery, tested with the two runs above) costs ~10 s
    import vistrain.report.build
    vistrain.report.build.build_report = lambda run_dir: None
    cv = vistrain.cv(data, folds=2, out=out / "cv", **tiny)
    print(json.dumps({
        "runs": [str(r.run_dir) for r in (first, second)],
        "reports": [(r.run_dir / "report.html").is_file() for r in (first, second)],
        "test_accuracy": [r.metrics["test"]["accuracy"] for r in (first, second)],
        "classes": clf.classes, "one": [p.to_dict() for p in one],
        "folder": [p.to_dict() for p in folder], "metrics": metrics,
        "cv": {k: cv[k] for k in ("n_folds", "summary", "pooled_oof", "out_dir")},
        "explained": explained,
        "train_is_function": callable(vistrain.train) and not isinstance(vistrain.train, type(vistrain)),
        "handlers": len(logging.getLogger("vistrain").handlers),
        "root_handlers": len(logging.getLogger().handlers),
    }))
""")


def public_names(package) -> set[str]:
    """``__all__`` and the functions defined in the package: read from the declarations, since
    once the clashing submodule is imported the attribute is the module and looks harmless."""
    functions = {n for n, v in vars(package).items() if inspect.isfunction(v) and not n.startswith("_")}
    return set(getattr(package, "__all__", [])) | functions


def test_no_public_function_is_named_like_a_submodule():
    """``import vistrain.<name>`` rebinds ``vistrain.<name>`` to the module: a function of that name
    works once, then the module replaces it.  Checked for vistrain and every subpackage."""
    clashes = []
    packages = [vistrain] + [importlib.import_module(m.name) for m in
                             pkgutil.walk_packages(vistrain.__path__, "vistrain.") if m.ispkg]
    for package in packages:
        submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        clashes += [f"{package.__name__}.{name}" for name in sorted(public_names(package) & submodules)]
    assert clashes == []
    assert set(API) <= set(vistrain.__all__)


def test_api_mirrors_the_cli_with_runnable_examples():
    from vistrain.cli.main import COMMANDS
    for name in API:
        fn = getattr(vistrain, name)
        assert inspect.isfunction(fn), name
        assert fn.__module__.startswith("vistrain.workflows."), name
        assert ">>> import vistrain" in fn.__doc__ and f"vistrain.{name}(" in fn.__doc__, name
        verb = name.replace("_", "-")
        assert verb in COMMANDS or name == "load", name
    assert getattr(vistrain, "train") is vistrain.train  # cached after the first look-up
    with pytest.raises(AttributeError):
        vistrain.no_such_function


def test_import_and_help_do_not_load_torch():
    """``import vistrain`` and building the CLI stay light: ``vistrain --help`` and ``--version``."""
    code = ("import sys, vistrain, vistrain.cli.main as m; m.build_parser(); "
            "print(sorted(x for x in ('torch', 'timm', 'matplotlib', 'sklearn') if x in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.slow
def test_train_twice_then_every_job_in_one_fresh_interpreter(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=10, size=(36, 36))
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(tmp_path / "out"), json.dumps(TINY)],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)  # stdout holds the script's JSON only: log lines went to stderr
    assert out["train_is_function"] and out["reports"] == [True, True]
    for run, acc in zip(out["runs"], out["test_accuracy"]):
        assert (Path(run) / "model.safetensors").is_file() and 0 <= acc <= 1
    assert out["classes"] == ["a", "b", "c"]
    assert len(out["one"]) == 1 and out["one"][0]["image"].endswith("b_000.png")
    assert len(out["one"][0]["top"]) == 2
    assert len(out["folder"]) == 10 and all("top" in p for p in out["folder"])
    m = out["metrics"]
    assert m["n_samples"] == 30 and 0 <= m["accuracy"] <= 1
    assert (tmp_path / "out" / "eval" / "metrics.json").is_file()
    cv = out["cv"]
    assert cv["n_folds"] == 2 and cv["pooled_oof"]["n_samples"] == 30
    assert len(cv["summary"]["metrics"]["accuracy"]["values"]) == 2
    assert (Path(cv["out_dir"]) / "cv_metrics.json").is_file()
    record = out["explained"]["images"][0]
    assert record["predicted"] in out["classes"] and Path(record["files"]["cam"]).stat().st_size > 1000
    # log lines without any logging setup: one handler, on stderr, every epoch of every run
    assert out["handlers"] == 1 and out["root_handlers"] == 0
    epochs = [line for line in res.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 + 2, res.stderr[-3000:]  # two runs + two folds, one epoch each


@contextlib.contextmanager
def bare_logging():
    """No handler on the root or the vistrain logger (as in a fresh script); restored after.
    Entered inside the test body: pytest adds its capturing handlers to the root per phase."""
    root, ours = logging.getLogger(), logging.getLogger("vistrain")
    saved = root.handlers[:], ours.handlers[:], ours.level
    root.handlers[:], ours.handlers[:] = [], []
    ours.setLevel(logging.NOTSET)
    try:
        yield ours
    finally:
        root.handlers[:], ours.handlers[:] = saved[0], saved[1]
        ours.setLevel(saved[2])


def test_log_lines_shown_once_without_setup(capsys):
    with bare_logging() as ours:
        for _ in range(3):
            show_log_lines()
        assert len(ours.handlers) == 1 and ours.level == logging.INFO
        ours.info("epoch 1/1")
        assert capsys.readouterr().err == "epoch 1/1\n"
        logging.getLogger().addHandler(logging.NullHandler())  # the application configures logging
        ours.info("epoch 2/2")
        assert capsys.readouterr().err == ""  # shown by the application's handlers, not twice


def test_configured_logging_is_left_alone():
    with bare_logging() as ours:
        logging.getLogger().addHandler(logging.NullHandler())
        show_log_lines()
        assert ours.handlers == [] and ours.level == logging.NOTSET


def test_settings_shortcuts_sections_and_errors():
    cfg = make_config("d", None, {"epochs": 3, "lr": 0.1, "optim": {"name": "sgd"}, "seed": None})
    assert (cfg.train.epochs, cfg.optim.lr, cfg.optim.name) == (3, 0.1, "sgd")
    assert cfg.data.root == str(Path("d").resolve())  # absolute, as a run's config.yaml records it
    scratch = make_config("d", None, {"model": "vistrain/resnet-tiny"})
    assert scratch.strategy.name == "finetune" and scratch.model.pretrained is False
    with pytest.raises(VistrainError, match="unknown setting 'epoch'"):
        make_config("d", None, {"epoch": 3})
    with pytest.raises(VistrainError, match="no data folder"):
        make_config(None, None, {})
    with pytest.raises(VistrainError, match="train.epochs"):
        make_config("d", None, {"epochs": 0})


def test_data_keyword_is_the_section_or_the_folder():
    """``vistrain.train(folder, data={...})`` sets the data section; ``data=folder`` the folder."""
    cfg = make_config("d", None, {"data": {"num_workers": 2, "val_fraction": 0.2}, "epochs": 2})
    assert (cfg.data.root, cfg.data.num_workers, cfg.data.val_fraction) == (str(Path("d").resolve()), 2, 0.2)
    assert make_config(None, None, {"data": Path("e")}).data.root == str(Path("e").resolve())
    with pytest.raises(VistrainError, match="two data folders"):
        make_config("d", None, {"data": "e"})
    for fn in (vistrain.train, vistrain.cv, vistrain.compare, vistrain.check, vistrain.lr_find):
        first = next(iter(inspect.signature(fn).parameters.values()))
        assert first.name == "data" and first.kind is inspect.Parameter.POSITIONAL_ONLY, fn.__name__
    with pytest.raises(VistrainError, match="unknown config key|unknown setting data.nope"):
        vistrain.train("d", data={"nope": 1})


@pytest.mark.slow
def test_check_and_lr_find_from_python(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=8, size=(32, 32))
    res = vistrain.lr_find(data, steps=8, out=tmp_path / "lr.png", **TINY)
    assert len(res["lrs"]) <= 8 and res["lrs"] == sorted(res["lrs"])
    assert Path(res["plot"]).stat().st_size > 1000
    results = vistrain.check(data, steps=5, lr_steps=5, out=tmp_path / "checks", **TINY)
    assert [r.name for r in results][:2] == ["normalization", "overfit-small-sample"]
    assert (tmp_path / "checks" / "checks.json").is_file()


def test_resume_needs_the_run(tmp_path):
    with pytest.raises(VistrainError, match="out=RUN_DIR"):
        vistrain.train("d", resume=True)
    with pytest.raises(VistrainError, match="no config.yaml"):
        vistrain.train("d", out=tmp_path, resume=True)
