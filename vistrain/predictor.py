"""Predict with a trained run or a pretrained ImageNet classifier, preprocessing re-applied exactly.

``Classifier.predict`` takes what a notebook holds: an image file, a folder (its images,
recursively, sorted), a PIL image, a NumPy array (``HWC``/``NHWC`` or grey ``HW``; uint8, or float
in [0, 1]), a torch tensor (``CHW``/``NCHW`` or ``HW``; uint8, or float in [0, 1]), or a list
mixing these.  It returns one type whatever the input: a list of :class:`Prediction`, one per
image, in input order.  An array goes through exactly the steps a PNG file with the same pixels
goes through (converted to a PIL image, then :meth:`Preprocess.pixels`), so both give the same
probabilities.

A path that does not exist or a file that cannot be read raises (``FileNotFoundError`` /
:class:`~vistrain.errors.ImageLoadError`); with ``errors="skip"`` the others are predicted, the
failed ones are listed with ``.error`` set and a warning is logged.

The probabilities come from one of two engines (``Classifier.engine``): the run's PyTorch model
(``"torch"``) or its ONNX export run by ONNX Runtime (``"onnxruntime"``, ``"onnxruntime-int8"``;
see :mod:`vistrain.deploy.engine`); ``from_run(..., engine="auto")`` takes ONNX Runtime on the CPU
when the run has an up-to-date export.  Both are fed by the same :meth:`Preprocess.pixels`.

Example:
    >>> import numpy as np, vistrain
    >>> clf = vistrain.load("runs/demo")                                # doctest: +SKIP
    >>> p = clf.predict("shoe.png", top_k=2)[0]                         # doctest: +SKIP
    >>> p.label, round(p.probability, 2), p.top_k[1].label             # doctest: +SKIP
    ('Sneaker', 0.93, 'Sandal')
    >>> clf.predict(np.zeros((28, 28, 3), np.uint8))[0].source          # doctest: +SKIP
    '<array 0>'
    >>> [p.error for p in clf.predict(["shoe.png", "gone.png"], errors="skip")]  # doctest: +SKIP
    [None, 'no such file or folder']
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vistrain.artifact import load_model
from vistrain.artifact_meta import WEIGHTS, check_finite_probabilities, temperature
from vistrain.deploy.engine import open_engine
from vistrain.deploy.runtime import OrtEngine
from vistrain.models import create
from vistrain.prediction import BaseClassifier, check_tta, read_test_metrics
from vistrain.rundir.summary import run_summary
from vistrain.transforms.normalize import resolve_normalization
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.tta import tta_views


class Classifier(BaseClassifier):
    """A model, its class names and its preprocessing; ``predict`` takes files, folders, PIL images,
    NumPy arrays and torch tensors and returns :class:`Prediction` s; ``repr`` is a few lines.

    ``engine`` is ``"torch"`` or the name of the ONNX Runtime engine (``session``) that computes
    the probabilities; ``model`` is the PyTorch model either way (explanations need it).
    """

    def __init__(self, model: torch.nn.Module, classes: list[str], preprocess: Preprocess,
                 *, source: str = "", device: str = "cpu", session: OrtEngine | None = None,
                 temperature: float = 1.0, tta: str = "none"):
        self.model = model.to(device).eval()
        self.classes, self.preprocess, self.source = classes, preprocess, source
        self.device = torch.device(device)
        self.session = session
        self.engine = session.name if session is not None else "torch"
        self.temperature = float(temperature)  # fitted on the run's validation split
        self.tta = check_tta(tta)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", engine: str = "auto",
                 threads: int | None = None, tta: str = "none") -> "Classifier":
        """The run's classifier; ``engine``: auto | torch | onnxruntime | onnxruntime-int8
        (auto: ONNX Runtime when ``device`` is the CPU and ``RUN/export/model.onnx`` matches the
        run's weights, else torch); ``threads``: ONNX Runtime threads (default torch's);
        ``tta``: test-time augmentation, none | flip | flip+crops (:mod:`vistrain.transforms.tta`).
        The run's fitted temperature (``model.json`` ``calibration``) scales the logits.

        Example:
            >>> clf = Classifier.from_run("runs/demo", engine="auto")   # doctest: +SKIP
            >>> clf.engine                                              # doctest: +SKIP
            'onnxruntime'
        """
        model, meta = load_model(run_dir, device=device)
        session = open_engine(run_dir, meta, engine, device=device, threads=threads)
        return cls(model, meta["classes"], Preprocess.from_dict(meta["preprocess"]),
                   source=str(run_dir), device=device, session=session,
                   temperature=temperature(meta), tta=tta)

    @classmethod
    def from_pretrained(cls, name: str, *, weights: str | None = None, device: str = "cpu",
                        tta: str = "none") -> "Classifier":
        """The pretrained classifier itself (e.g. ImageNet-1k) with the model's own preprocessing."""
        model, cfg = create(name, None, pretrained=True, weights=weights)
        norm = resolve_normalization("model", model_mean=cfg.mean, model_std=cfg.std)
        pre = Preprocess(size=cfg.input_size[-1], interpolation=cfg.interpolation,
                         crop_pct=cfg.crop_pct, normalize_mode=norm.mode, scale=norm.scale,
                         mean=norm.mean, std=norm.std)
        classes = cfg.label_names or [str(i) for i in range(cfg.num_classes)]
        return cls(model, classes, pre, source=f"{name} ({cfg.weights_source})", device=device, tta=tta)

    def _probabilities(self, pixels: list) -> np.ndarray:
        """``(N, K)`` probabilities of ``N`` uint8 ``(C, S, S)`` images (arrays or tensors):
        ``softmax(logits / T)``, averaged over the test-time augmentation views when ``tta``
        asks for them."""
        views = tta_views(torch.stack([torch.as_tensor(p) for p in pixels]), self.tta)
        if len(views) == 1:  # no test-time augmentation: nothing to average
            return check_finite_probabilities(self._view_probabilities(views[0]), self.artifact)
        return check_finite_probabilities(np.mean([self._view_probabilities(v) for v in views], axis=0),
                                          self.artifact)

    @property
    def artifact(self) -> str:
        """The file that computes the probabilities: the export in use, else the run's weights."""
        return str(self.session.path) if self.session is not None else self.weights_file

    @property
    def weights_file(self) -> str:
        """The run's ``model.safetensors`` (or the pretrained model's name): what ``model`` holds."""
        return str(Path(self.source) / WEIGHTS) if Path(self.source).is_dir() else self.source

    @torch.no_grad()
    def _view_probabilities(self, x: torch.Tensor) -> np.ndarray:
        if self.session is not None:  # the graph normalizes and scales by T inside, from uint8
            return self.session.probabilities(x.cpu())
        x = self.preprocess.normalize(x.to(self.device))
        return (self.model(x).float() / self.temperature).softmax(1).cpu().numpy()

    def __repr__(self) -> str:
        run_dir = Path(self.source) if (Path(self.source) / "metrics.json").is_file() else None
        test = read_test_metrics(run_dir) if run_dir is not None else None
        extra = (f"  engine: {self.engine}, temperature {self.temperature:.3g}, tta {self.tta}",)
        if run_dir is None:
            return run_summary(f"Classifier {self.source}", None, self.classes, test, extra)
        return run_summary("Classifier", run_dir, self.classes, test, extra)
