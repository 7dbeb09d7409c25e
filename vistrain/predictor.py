"""Predict with a trained run or a pretrained ImageNet classifier, preprocessing re-applied exactly.

``Classifier.predict`` takes one image file, a folder (its images, recursively, sorted), a PIL
image, or a list mixing these.  A file that cannot be read does not stop the others: its entry
carries ``"error"`` (the reason) instead of ``"top"``.

The probabilities come from one of two engines (``Classifier.engine``): the run's PyTorch model
(``"torch"``) or its ONNX export run by ONNX Runtime (``"onnxruntime"``, ``"onnxruntime-int8"``;
see :mod:`vistrain.deploy.engine`); ``from_run(..., engine="auto")`` takes ONNX Runtime on the CPU
when the run has an up-to-date export.  Both are fed by the same :meth:`Preprocess.pixels`.

Example:
    >>> import vistrain
    >>> clf = vistrain.load("runs/demo")                      # doctest: +SKIP
    >>> clf.predict("shoe.png", top_k=2)[0]["top"][0]         # doctest: +SKIP
    {'class': 'Sneaker', 'index': 7, 'probability': 0.93}
    >>> [r.get("error") for r in clf.predict(["shoe.png", "notes.txt"])]  # doctest: +SKIP
    [None, 'not an image file PIL can read; remove it from the data folder']
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.artifact import WEIGHTS, check_finite_probabilities, load_model, temperature
from vistrain.config import TTA_MODES
from vistrain.data.io import IMAGE_EXTENSIONS, is_image_file
from vistrain.data.shards_index import is_shard_folder
from vistrain.deploy.engine import OrtEngine, open_engine
from vistrain.errors import ImageLoadError, VistrainError
from vistrain.models import create
from vistrain.progress import progress_bar
from vistrain.transforms.normalize import resolve_normalization
from vistrain.transforms.preprocess import Preprocess
from vistrain.transforms.tta import tta_views

# (name shown in results, what to decode or None, why it cannot be predicted or None)
ImageEntry = tuple[str, "str | Path | Image.Image | None", "str | None"]


def folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), hidden files and folders left out."""
    found = []
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.is_file() and is_image_file(path):
            found.append(path)
    return sorted(found)


def image_entries(images) -> list[ImageEntry]:
    """One entry per image of ``images``: a path (file or folder), a PIL image, or a list of them.

    A missing path or a folder without images becomes an entry with its error, not an exception,
    so that one mistyped name does not cost the rest of the batch.
    """
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    entries: list[ImageEntry] = []
    for i, item in enumerate(images):
        if isinstance(item, Image.Image):
            entries.append((f"<image {i}>", item, None))
        elif not isinstance(item, (str, Path)):
            raise VistrainError(f"cannot predict a {type(item).__name__}: give image file or folder "
                                "paths or PIL images")
        elif Path(item).is_dir():
            found = folder_images(Path(item))
            if not found and is_shard_folder(item):
                entries.append((str(item), None, "folder holds shards (tar files), not images; "
                                "predict the image files themselves"))
            elif not found:
                entries.append((str(item), None, "folder holds no image files "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))})"))
            entries.extend((str(p), p, None) for p in found)
        elif Path(item).exists():
            entries.append((str(item), item, None))
        else:
            entries.append((str(item), None, "no such file or folder"))
    return entries


def check_tta(tta: str) -> str:
    """``tta`` if it is one of :data:`~vistrain.transforms.tta.TTA_MODES`, else a one-line error."""
    if tta not in TTA_MODES:
        raise VistrainError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    return tta


class Classifier:
    """A model, its class names and its preprocessing; ``predict`` takes files, folders or PIL images.

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

    def predict_pixels(self, pixels: list[torch.Tensor]) -> np.ndarray:
        """``(N, K)`` class probabilities of ``N`` uint8 ``(C, S, S)`` images already resized and
        cropped by ``self.preprocess.pixels`` (the entry point of batching callers, e.g. a server)."""
        return self._probabilities(pixels)

    def _probabilities(self, pixels: list[torch.Tensor]) -> np.ndarray:
        """``(N, K)`` probabilities of ``N`` uint8 ``(C, S, S)`` images: ``softmax(logits / T)``,
        averaged over the test-time augmentation views when ``tta`` asks for them."""
        views = tta_views(torch.stack(pixels), self.tta)
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

    def predict_proba(self, images, batch_size: int = 32) -> np.ndarray:
        """``(N, K)`` class probabilities, rows in the order of ``images`` (as for :meth:`predict`).

        Every image must be readable: an unreadable one raises :class:`ImageLoadError`.
        """
        rows = []
        for name, source, error in image_entries(images):
            if error is not None:
                raise ImageLoadError(name, error)
            rows.append(source)
        out = [self._probabilities([self.preprocess.pixels(s) for s in rows[i:i + batch_size]])
               for i in range(0, len(rows), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def check_top_k(self, top_k) -> int:
        """``top_k`` limited to the number of classes K; below 1 or not a whole number: an error."""
        n = len(self.classes)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise VistrainError(f"top_k must be a whole number from 1 to {n} (the model's number of "
                                f"classes; larger values show all {n}), got {top_k!r}")
        return min(int(top_k), n)

    def predict(self, images, top_k: int = 5, batch_size: int = 32, progress: bool = True) -> list[dict]:
        """One dict per image, in input order (a folder's images sorted by path):
        ``{"image", "top": [{"class", "index", "probability"}, ...]}`` with the ``top_k`` most
        probable classes (``top_k`` above the number of classes shows them all), or
        ``{"image", "error": reason}`` for a file that could not be read.
        """
        k = self.check_top_k(top_k)
        entries = image_entries(images)
        results: list[dict] = []
        starts = range(0, len(entries), batch_size)
        for start in progress_bar(starts, desc="predicting", unit="batch", leave=False,
                                  enabled=progress and len(starts) > 1):
            chunk = [self._decode(entry) for entry in entries[start:start + batch_size]]
            readable = [(result, pixels) for result, pixels in chunk if pixels is not None]
            probs = self._probabilities([p for _, p in readable]) if readable else []
            for (result, _), p in zip(readable, probs):
                order = np.argsort(-p, kind="stable")[:k]
                result["top"] = [{"class": self.classes[i], "index": int(i), "probability": float(p[i])}
                                 for i in order]
            results.extend(result for result, _ in chunk)
        return results

    def _decode(self, entry: ImageEntry) -> tuple[dict, torch.Tensor | None]:
        name, source, error = entry
        if error is None:
            try:
                return {"image": name}, self.preprocess.pixels(source)
            except ImageLoadError as err:
                error = err.reason
        return {"image": name, "error": error}, None
