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
from importlib.util import find_spec
from pathlib import Path

from vistrain.config.spelling import option
from vistrain.deploy.classifier import OnnxClassifier
from vistrain.errors import VistrainError
from vistrain.prediction import BaseClassifier, Prediction
from vistrain.workflows.logs import show_log_lines

log = logging.getLogger("vistrain")
ORT_ENGINES = ("auto", "onnxruntime", "onnxruntime-int8")


def load(run_dir: str | Path, device: str = "cpu", *, engine: str = "auto",
         threads: int | None = None, tta: str = "none") -> BaseClassifier:
    """The classifier of a finished run directory, or of an exported ``model.onnx`` alone.

    ``engine``: auto | torch | onnxruntime | onnxruntime-int8 (auto: ONNX Runtime on the CPU when
    ``vistrain export`` wrote an up-to-date ``RUN/export/model.onnx``, torch otherwise);
    ``threads``: ONNX Runtime threads (default: torch's).  A ``.onnx`` file (what ``vistrain
    export`` writes: classes and preprocessing in its metadata), or a run folder where PyTorch is
    not installed, gives an :class:`~vistrain.deploy.classifier.OnnxClassifier`: ONNX Runtime,
    NumPy and Pillow only, the same :class:`Prediction` s.

    Example:
        >>> import vistrain
        >>> clf = vistrain.load("runs/demo")                 # doctest: +SKIP
        >>> clf.classes[:2], clf.preprocess.size             # doctest: +SKIP
        (['Ankle boot', 'Bag'], 224)
        >>> vistrain.load("runs/demo/export/model.onnx").engine   # doctest: +SKIP
        'onnxruntime'
    """
    if is_onnx_file(run_dir) or not torch_installed():
        return load_onnx(run_dir, device=device, engine=engine, threads=threads, tta=tta)
    return torch_classifier(run_dir, device=device, engine=engine, threads=threads, tta=tta)


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file rather than a run folder (by its suffix)."""
    return Path(path).suffix.lower() == ".onnx" and not Path(path).is_dir()


def torch_installed() -> bool:
    """Whether PyTorch can be imported here, found without importing it (a serving install,
    ``vistrain[serve]`` without torch, predicts with ONNX Runtime alone)."""
    try:
        return find_spec("torch") is not None
    except (ImportError, ValueError):  # an import hook that refuses it, a broken torch
        return False


def load_onnx(path: str | Path, *, device: str = "cpu", engine: str = "auto",
              threads: int | None = None, tta: str = "none") -> OnnxClassifier:
    """The ONNX Runtime classifier of a ``.onnx`` file, or of a run folder's export (used where
    torch is not installed); anything that needs torch is a one-line error naming why."""
    if engine not in ORT_ENGINES:
        raise VistrainError(f"{option('engine', engine)} needs PyTorch and the run folder; an ONNX "
                            f"export runs with {option('engine', 'onnxruntime')}" if engine == "torch"
                            else f"unknown engine {engine!r}; choose one of auto, torch, "
                                 "onnxruntime, onnxruntime-int8")
    if device not in ("auto", "cpu"):
        raise VistrainError(f"{option('device', device)}: ONNX Runtime runs on the CPU here; drop "
                            f"{option('device', device)}, or install PyTorch and serve the run folder")
    if is_onnx_file(path):
        return OnnxClassifier.from_file(path, threads=threads, tta=tta)
    return OnnxClassifier.from_run(path, engine=engine, threads=threads, tta=tta)


def torch_classifier(run_dir: str | Path | None = None, *, model: str | None = None,
                     weights: str | None = None, device: str = "cpu", engine: str = "auto",
                     threads: int | None = None, tta: str = "none") -> BaseClassifier:
    """The run's torch-backed classifier (its model, or its export when ``engine`` picks ONNX
    Runtime), or with ``model`` the pretrained (ImageNet) classifier itself."""
    # imported here, not at the top: torch is optional on the serving path (an install of
    # vistrain[serve] has ONNX Runtime only), and this is the one place that needs the torch model
    from vistrain.predictor import Classifier
    device = concrete_device(device)
    if model:
        return Classifier.from_pretrained(model, weights=weights, device=device, tta=tta)
    return Classifier.from_run(run_dir, device=device, engine=engine, threads=threads, tta=tta)


def concrete_device(device: str) -> str:
    """``device`` with ``"auto"`` made concrete: ``"cuda"`` when there is a GPU, else ``"cpu"``
    (the command line's default for every verb), e.g. ``concrete_device("cpu") == "cpu"``."""
    if device != "auto":
        return device
    import torch  # the torch-backed engine only (see torch_classifier): is there a GPU for it?
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_classifier(run_dir: str | Path | None = None, *, model: str | None = None,
                    weights: str | None = None, device: str = "cpu", engine: str = "auto",
                    threads: int | None = None, tta: str = "none") -> BaseClassifier:
    """The classifier of a run or an exported ``.onnx`` file (``engine`` as for :func:`load`), or
    with ``model`` the pretrained (ImageNet) classifier itself (PyTorch: it has no export)."""
    if model:
        if engine not in ("auto", "torch"):
            raise VistrainError(f"{option('engine', engine)} needs a run exported with `vistrain "
                                f"export RUN`; a pretrained {option('model', 'NAME')} runs with "
                                f"{option('engine', 'torch')}")
        return torch_classifier(model=model, weights=weights, device=device, tta=tta)
    if not run_dir:
        raise VistrainError("give a run directory of `vistrain train` (or a pretrained model name)")
    return load(run_dir, device=device, engine=engine, threads=threads, tta=tta)


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
    ``run_dir`` may be an exported ``model.onnx`` (torch-free: see :func:`load`); ``model``
    (with ``run_dir=None``) uses that pretrained ImageNet classifier instead of a run;
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
