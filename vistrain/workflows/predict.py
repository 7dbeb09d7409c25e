"""``load`` and ``predict``: a run (or a pretrained ImageNet model) applied to images.

Example:
    >>> import vistrain
    >>> clf = vistrain.load("runs/demo")                                   # doctest: +SKIP
    >>> clf.predict("examples/fashion-mnist-small/Bag/0000.png")[0]["top"][0]["class"]  # doctest: +SKIP
    'Bag'
    >>> out = vistrain.predict("runs/demo", "examples/fashion-mnist-small/Bag")  # doctest: +SKIP
    >>> out["n_predicted"], out["n_failed"]                                # doctest: +SKIP
    (200, 0)
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from vistrain.errors import VistrainError
from vistrain.predictor import Classifier
from vistrain.workflows.common import show_log_lines

log = logging.getLogger("vistrain")


def load(run_dir: str | Path, device: str = "cpu", *, engine: str = "auto",
         threads: int | None = None, tta: str = "none") -> Classifier:
    """A :class:`vistrain.predictor.Classifier` for a finished run directory.

    ``engine``: auto | torch | onnxruntime | onnxruntime-int8 (auto: ONNX Runtime on the CPU when
    ``vistrain export`` wrote an up-to-date ``RUN/export/model.onnx``, torch otherwise);
    ``threads``: ONNX Runtime threads (default: torch's).

    Example:
        >>> import vistrain
        >>> clf = vistrain.load("runs/demo")                 # doctest: +SKIP
        >>> clf.classes[:2], clf.preprocess.size             # doctest: +SKIP
        (['Ankle boot', 'Bag'], 224)
        >>> clf.engine                                       # doctest: +SKIP
        'torch'
    """
    return Classifier.from_run(run_dir, device=concrete_device(device), engine=engine,
                               threads=threads, tta=tta)


def concrete_device(device: str) -> str:
    """``device`` with ``"auto"`` made concrete: ``"cuda"`` when there is a GPU, else ``"cpu"``
    (the command line's default for every verb), e.g. ``concrete_device("cpu") == "cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_classifier(run_dir: str | Path | None = None, *, model: str | None = None,
                    weights: str | None = None, device: str = "cpu", engine: str = "auto",
                    threads: int | None = None, tta: str = "none") -> Classifier:
    """The run's classifier (``engine`` as for :func:`load`), or with ``model`` the pretrained
    (ImageNet) classifier itself (PyTorch: it has no export)."""
    device = concrete_device(device)
    if model:
        if engine not in ("auto", "torch"):
            raise VistrainError(f"--engine {engine} needs a run exported with `vistrain export RUN`; "
                                "a pretrained --model runs with --engine torch")
        return Classifier.from_pretrained(model, weights=weights, device=device, tta=tta)
    if not run_dir:
        raise VistrainError("give a run directory of `vistrain train` (or a pretrained model name)")
    return Classifier.from_run(run_dir, device=device, engine=engine, threads=threads, tta=tta)


def predict(run_dir: str | Path | None = None, images=(), *, model: str | None = None,
            weights: str | None = None, top_k: int = 5, device: str = "cpu",
            batch_size: int = 32, progress: bool = True, engine: str = "auto",
            threads: int | None = None, tta: str = "none") -> dict:
    """Top-``top_k`` classes of ``images`` (files, folders, PIL images, or a list of them).

    Returns ``{"model", "engine", "predictions", "n_predicted", "n_failed"}``; ``engine`` is the
    one that computed them (``engine``/``threads`` as for :func:`load`); ``predictions`` holds one
    entry per image as :meth:`vistrain.predictor.Classifier.predict` makes them (an unreadable
    file has ``"error"`` instead of ``"top"`` and does not stop the others).  ``model`` (with
    ``run_dir=None``) uses that pretrained ImageNet classifier instead of a run.  ``top_k`` above
    the number of classes shows them all.

    Example:
        >>> import vistrain
        >>> vistrain.predict(images="cat.jpg", model="tf_efficientnet_lite0", top_k=1)  # doctest: +SKIP
        {'model': 'tf_efficientnet_lite0 (...)', 'predictions': [{'image': 'cat.jpg', 'top': [...]}], ...}
    """
    show_log_lines()
    clf = load_classifier(run_dir, model=model, weights=weights, device=device, engine=engine,
                          threads=threads, tta=tta)
    if isinstance(images, (list, tuple)) and not images:
        raise VistrainError("no images given: give image files or folders")
    if clf.session is not None:  # on stderr: stdout holds one line per image
        log.info("engine: %s (%s)", clf.engine, clf.session.path)
    results = clf.predict(images, top_k=top_k, batch_size=batch_size, progress=progress)
    failed = sum("error" in r for r in results)
    return {"model": clf.source, "engine": clf.engine, "tta": clf.tta, "predictions": results,
            "n_predicted": len(results) - failed, "n_failed": failed}
