"""``load`` and ``predict``: a run (or a pretrained ImageNet model) applied to images.

Example:
    >>> import vistrain
    >>> clf = vistrain.load("runs/demo")                                   # doctest: +SKIP
    >>> clf.predict("examples/fashion-mnist-small/Bag/0000.png")[0].label  # doctest: +SKIP
    'Bag'
    >>> preds = vistrain.predict("runs/demo", "examples/fashion-mnist-small/Bag")  # doctest: +SKIP
    >>> len(preds), preds[0].label, preds[0].to_dict()["top"][0]["class"]      # doctest: +SKIP
    (200, 'Bag', 'Bag')
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from vistrain.config.spelling import option
from vistrain.errors import VistrainError
from vistrain.predictor import Classifier, Prediction
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
            raise VistrainError(f"{option('engine', engine)} needs a run exported with `vistrain "
                                f"export RUN`; a pretrained {option('model', 'NAME')} runs with "
                                f"{option('engine', 'torch')}")
        return Classifier.from_pretrained(model, weights=weights, device=device, tta=tta)
    if not run_dir:
        raise VistrainError("give a run directory of `vistrain train` (or a pretrained model name)")
    return Classifier.from_run(run_dir, device=device, engine=engine, threads=threads, tta=tta)


def predict(run_dir: str | Path | None = None, images=(), *, model: str | None = None,
            weights: str | None = None, top_k: int = 5, device: str = "cpu",
            batch_size: int = 32, progress: bool = True, engine: str = "auto",
            threads: int | None = None, tta: str = "none", errors: str = "raise") -> list[Prediction]:
    """Top-``top_k`` classes of ``images``: what ``load(run_dir).predict(images, ...)`` returns,
    a list of :class:`vistrain.predictor.Prediction` (``.label``, ``.probability``, ``.top_k``,
    ``.source``, ``.to_dict()``), one per image in input order.

    ``images``: files, folders, PIL images, NumPy arrays (HWC/NHWC) or torch tensors (CHW/NCHW),
    or a list of them (see :meth:`vistrain.predictor.Classifier.predict`); ``errors``: ``"raise"``
    (a missing path raises ``FileNotFoundError``) or ``"skip"`` (listed with ``.error``, warned).
    ``model`` (with ``run_dir=None``) uses that pretrained ImageNet classifier instead of a run;
    ``engine``/``threads`` as for :func:`load`.  ``top_k`` above the number of classes shows them all.

    Example:
        >>> import vistrain
        >>> vistrain.predict(images="cat.jpg", model="tf_efficientnet_lite0", top_k=1)  # doctest: +SKIP
        [Prediction('cat.jpg': tabby 61.2%)]
    """
    show_log_lines()
    clf = load_classifier(run_dir, model=model, weights=weights, device=device, engine=engine,
                          threads=threads, tta=tta)
    check_images_given(images)
    return clf.predict(images, top_k=top_k, batch_size=batch_size, progress=progress, errors=errors)


def predict_job(run_dir: str | Path | None = None, images=(), *, model: str | None = None,
                weights: str | None = None, top_k: int = 5, device: str = "cpu",
                batch_size: int = 32, progress: bool = True, engine: str = "auto",
                threads: int | None = None, tta: str = "none") -> dict:
    """What ``vistrain predict`` prints: ``{"model", "engine", "tta", "predictions",
    "n_predicted", "n_failed"}``, ``predictions`` holding :meth:`Prediction.to_dict` of each image;
    an unreadable file has ``"error"`` instead of ``"top"`` and does not stop the others."""
    show_log_lines()
    clf = load_classifier(run_dir, model=model, weights=weights, device=device, engine=engine,
                          threads=threads, tta=tta)
    check_images_given(images)
    if clf.session is not None:  # on stderr: stdout holds one line per image
        log.info("engine: %s (%s)", clf.engine, clf.session.path)
    results = clf.predict_all(images, top_k=top_k, batch_size=batch_size, progress=progress,
                              errors="skip")
    failed = sum(r.error is not None for r in results)
    return {"model": clf.source, "engine": clf.engine, "tta": clf.tta,
            "predictions": [r.to_dict() for r in results],
            "n_predicted": len(results) - failed, "n_failed": failed}


def check_images_given(images) -> None:
    """An empty list of images is a mistake worth one line, not an empty result."""
    if isinstance(images, (list, tuple)) and not images:
        raise VistrainError("no images given: give image files or folders, PIL images or arrays")
