"""A classifier from an ONNX export alone, run by ONNX Runtime: no PyTorch anywhere.

:class:`OnnxClassifier` is what ``vistrain.load`` returns for a bare ``model.onnx`` (its metadata
holds the classes, the preprocessing and the temperature) and, where torch is not installed, for
a run folder with an up-to-date export.  It predicts exactly as :class:`vistrain.predictor.Classifier`
with the ONNX Runtime engine does (same pixels, same graph, same :class:`Prediction` s); what needs
the network itself (Grad-CAM, the torch engine, ``tta="flip+crops"``, whose crops are resized by a
torch kernel) is refused with a one-line error naming why.

Example:
    >>> import vistrain
    >>> clf = vistrain.load("runs/demo/export/model.onnx")             # doctest: +SKIP
    >>> clf.engine, clf.predict("shoe.png", top_k=1)[0].label          # doctest: +SKIP
    ('onnxruntime', 'Sneaker')
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vistrain.artifact_meta import WEIGHTS, check_finite_probabilities, read_meta, temperature
from vistrain.deploy.runtime import OrtEngine, open_export, read_onnx_file
from vistrain.errors import VistrainError
from vistrain.prediction import BaseClassifier, check_tta, read_test_metrics
from vistrain.transforms.pixels import PixelPrep

TORCH_ENGINES = ("torch",)
TORCH_HINT = "install PyTorch (pip install vistrain) for it"


class OnnxClassifier(BaseClassifier):
    """Class names, preprocessing and an :class:`OrtEngine`; ``predict`` as for every classifier.

    ``model`` is None (there is no torch model); ``no_model`` says why, for the callers that need
    one (``/explain``).
    """

    model = None
    device = "cpu"

    def __init__(self, session: OrtEngine, classes: list[str], preprocess: PixelPrep, *,
                 source: str, temperature: float = 1.0, tta: str = "none", no_model: str = ""):
        self.session, self.engine = session, session.name
        self.classes, self.preprocess, self.source = classes, preprocess, source
        self.temperature = float(temperature)  # applied inside the graph; reported only
        self.tta = check_onnx_tta(tta)
        self.no_model = no_model or f"{source} is an ONNX export without the run's PyTorch model"

    @classmethod
    def from_file(cls, path: str | Path, *, threads: int | None = None,
                  tta: str = "none") -> "OnnxClassifier":
        """The classifier of a bare exported ``.onnx`` file (classes and preprocessing from its
        metadata)."""
        session, record = read_onnx_file(path, threads=threads)
        return cls(session, record["classes"], PixelPrep.from_dict(record["preprocess"]),
                   source=str(path), temperature=temperature(record), tta=tta,
                   no_model=f"this server has only the ONNX file {path}, not the run's weights "
                            "and PyTorch; serve the run folder where PyTorch is installed")

    @classmethod
    def from_run(cls, run_dir: str | Path, *, engine: str = "auto", threads: int | None = None,
                 tta: str = "none") -> "OnnxClassifier":
        """The classifier of a run folder's export (``engine``: auto | onnxruntime |
        onnxruntime-int8), where torch is not installed: the export must be up to date."""
        if engine in TORCH_ENGINES:
            raise VistrainError(f"--engine {engine} needs PyTorch, which is not installed; "
                                f"{TORCH_HINT}, or use --engine onnxruntime with `vistrain export`")
        meta = read_meta(run_dir)
        fallback = "install PyTorch (pip install vistrain) to predict with the run's weights"
        session = open_export(run_dir, meta, "onnxruntime" if engine == "auto" else engine,
                              threads=threads, fallback=fallback)
        return cls(session, meta["classes"], PixelPrep.from_dict(meta["preprocess"]),
                   source=str(run_dir), temperature=temperature(meta), tta=tta,
                   no_model="PyTorch is not installed on this server; install it (pip install "
                            "vistrain) to explain with the run's weights")

    def _probabilities(self, pixels: list) -> np.ndarray:
        """``(N, K)`` probabilities of ``N`` uint8 ``(C, S, S)`` images: the graph applies the
        normalization and the temperature; with ``tta="flip"`` the mirror images' are averaged in."""
        x = np.stack([np.asarray(p) for p in pixels])
        probs = self.session.probabilities(x)
        if self.tta == "flip":
            probs = (probs + self.session.probabilities(x[..., ::-1])) / 2
        return check_finite_probabilities(probs, self.artifact)

    @property
    def artifact(self) -> str:
        return str(self.session.path)

    @property
    def weights_file(self) -> str:
        """The run's ``model.safetensors`` when the source is a run folder, else the export."""
        return str(Path(self.source) / WEIGHTS) if Path(self.source).is_dir() else self.artifact

    def __repr__(self) -> str:
        test = read_test_metrics(Path(self.source)) if Path(self.source).is_dir() else None
        acc = f", test accuracy {test['accuracy']:.3f}" if isinstance(test, dict) and "accuracy" in test else ""
        shown = ", ".join(self.classes[:8]) + (", ..." if len(self.classes) > 8 else "")
        return (f"OnnxClassifier {self.source}\n  {len(self.classes)} classes: {shown}{acc}\n"
                f"  input: {self.preprocess.describe()}\n"
                f"  engine: {self.engine} ({self.session.path}), temperature {self.temperature:.3g}, "
                f"tta {self.tta}")


def check_onnx_tta(tta: str) -> str:
    """``tta`` for an ONNX-only classifier: none or flip (``flip+crops`` resizes its crops with a
    torch kernel, which a torch-free install lacks)."""
    if check_tta(tta) == "flip+crops":
        raise VistrainError(f"tta 'flip+crops' needs PyTorch, which is not installed; use tta 'flip' "
                            f"or 'none', or {TORCH_HINT}")
    return tta
