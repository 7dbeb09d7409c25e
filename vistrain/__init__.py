"""vistrain: a folder of images in; a well-trained, honestly evaluated, explainable classifier out.

The Python API mirrors the command line, one function per verb (each is the function the verb
itself calls, in ``vistrain/workflows/``)::

    import vistrain
    result = vistrain.train("examples/fashion-mnist-small", out="runs/demo", epochs=20)
    print(result.metrics["test"]["accuracy"], result.run_dir / "report.html")
    clf = vistrain.load("runs/demo")
    print(clf.predict("examples/fashion-mnist-small/Bag", top_k=3)[0])
    print(vistrain.evaluate("runs/demo", "other_images")["accuracy"])
    vistrain.export("runs/demo")                 # runs/demo/export/model.onnx, parity checked
    vistrain.serve("runs/demo", port=8000)       # HTTP API and web page until Ctrl-C

The data verbs are there too: ``stats``, ``preview``, ``augment_preview`` and ``cache_info``
(``vistrain cache``), ``doctor``, and ``build_report`` (``vistrain report``).

``train``, ``load``, ``predict``, ``evaluate``, ``cv``, ``compare``, ``explain``, ``check`` and
``lr_find`` can be called any number of times in one process.  Their keyword settings are the
command line's flags (``batch_size=64`` is ``--batch-size 64``, one table for both):
``vistrain.make_config(data, **settings)`` returns the config a job would train with, the one
``vistrain train DATA [flags] --print-config`` prints.  Log lines (one per epoch) appear
on stderr without any logging setup; an application that configures logging keeps control.

The functions are imported on first use (PEP 562): ``import vistrain``, ``vistrain --help`` and
``vistrain --version`` then cost milliseconds instead of the seconds torch takes to load.
"""
from __future__ import annotations

import importlib

from vistrain.errors import missing_train_extra  # imports nothing: `import vistrain` stays fast

__version__ = "0.1.0"

# public function -> module of vistrain.workflows that defines it.  No name here may be the name
# of a module or subpackage of vistrain: importing that module would replace the function.
_API = {"train": "train", "load": "predict", "predict": "predict", "evaluate": "evaluate",
        "cv": "cv", "compare": "compare", "explain": "explain", "check": "check",
        "lr_find": "lr_find", "export": "export", "serve": "serve", "stats": "stats",
        "preview": "preview", "augment_preview": "preview", "cache_info": "cache",
        "build_report": "report", "doctor": "doctor", "pack": "pack",
        "default_out_dir": "common", "make_config": "common"}

__all__ = ["train", "load", "predict", "evaluate", "cv", "compare", "explain", "check", "lr_find",
           "export", "serve", "stats", "preview", "augment_preview", "cache_info", "build_report",
           "doctor", "pack", "make_config", "__version__"]


def __getattr__(name: str):
    if name in _API:  # lazy on purpose: a workflow imports torch (see the module docstring)
        try:
            module = importlib.import_module(f"vistrain.workflows.{_API[name]}")
        except ImportError as err:  # a serving install (no torch) asked for a training job
            missing = missing_train_extra(err, f"vistrain.{name}")
            if missing is None:
                raise
            raise missing from None
        value = getattr(module, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'vistrain' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
