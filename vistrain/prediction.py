"""What predicting returns and takes, and the classifier logic every engine shares (no torch).

* :class:`Prediction` / :class:`Score`: the one result type of ``predict``;
* :func:`image_entries`: files, folders, PIL images, NumPy arrays and torch tensors -> the images
  to predict, each decoded as a file with the same pixels would be (:func:`array_images`);
* :class:`BaseClassifier`: ``predict``, ``predict_proba``, ``predict_pixels`` over an engine's
  ``(N, K)`` probabilities of uint8 ``(C, S, S)`` pixels (:meth:`PixelPrep.array`).

Two classifiers build on it: :class:`vistrain.predictor.Classifier` (the run's torch model, or its
export run by ONNX Runtime) and :class:`vistrain.deploy.classifier.OnnxClassifier` (an export
alone, run by ONNX Runtime, in an install without PyTorch).  Nothing here imports torch: a tensor
given to ``predict`` is read through its own methods.

Example:
    >>> p = Prediction("a.png", "cat", 0.9, [Score("cat", 0.9, 0), Score("dog", 0.1, 1)])
    >>> p.label, p["top"][0]["class"]
    ('cat', 'cat')
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

from vistrain.config import TTA_MODES
from vistrain.data.shards.index import is_shard_folder
from vistrain.errors import DataError, ImageLoadError, RunDirError, VistrainError
from vistrain.imageio.read import IMAGE_EXTENSIONS, is_image_file
from vistrain.progress import progress_bar
from vistrain.rundir import RunFolder
from vistrain.transforms.pixels import PixelPrep

log = logging.getLogger("vistrain")

# (name shown in results, what to decode or None, why it cannot be predicted or None)
ImageEntry = tuple[str, "str | Path | Image.Image | None", "str | None"]
Errors = Literal["raise", "skip"]
NOT_FOUND = "no such file or folder"


class ImageNotFoundError(DataError, FileNotFoundError):
    """A path given to ``predict`` does not exist; both a :class:`VistrainError` (one line) and
    the ``FileNotFoundError`` a Python caller expects."""


class Score(NamedTuple):
    """One class of a prediction: its name, its probability and its index in ``classes``."""
    label: str
    probability: float
    index: int


@dataclass(frozen=True)
class Prediction:
    """The prediction for one image, the one type ``predict`` returns whatever the input.

    ``label``/``probability``: the most probable class; ``top_k``: the ``top_k`` most probable
    :class:`Score` s, best first; ``source``: the file path, or ``<array i>`` / ``<tensor i>`` /
    ``<image i>`` (position in the input) for in-memory images; ``error``: why the image could
    not be predicted (only with ``errors="skip"``; then ``label`` is None and ``top_k`` empty).
    :meth:`to_dict` is the JSON shape of ``vistrain predict --json``; ``p["top"]``,
    ``p["image"]`` and ``"error" in p`` read that shape too.

    Example:
        >>> p = Prediction("a.png", "cat", 0.9, [Score("cat", 0.9, 0), Score("dog", 0.1, 1)])
        >>> p.to_dict()["top"][1]
        {'class': 'dog', 'index': 1, 'probability': 0.1}
        >>> p
        Prediction('a.png': cat 90.0%, dog 10.0%)
    """
    source: str
    label: str | None
    probability: float | None
    top_k: list[Score] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        """``{"image", "top": [{"class", "index", "probability"}, ...]}`` or ``{"image", "error"}``."""
        if self.error is not None:
            return {"image": self.source, "error": self.error}
        return {"image": self.source, "top": [{"class": s.label, "index": s.index,
                                                "probability": s.probability} for s in self.top_k]}

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Prediction({self.source!r}: error: {self.error})"
        return f"Prediction({self.source!r}: " + ", ".join(
            f"{s.label} {s.probability:.1%}" for s in self.top_k) + ")"


def folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), hidden files and folders left out."""
    found = []
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.is_file() and is_image_file(path):
            found.append(path)
    return sorted(found)


def is_tensor(item) -> bool:
    """Whether ``item`` is a torch tensor, without importing torch: a tensor exists only where
    its caller has imported torch already."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(item, torch.Tensor)


def image_entries(images, errors: Errors | Literal["list"] = "list") -> list[ImageEntry]:
    """One entry per image of ``images``: a path (file or folder), a PIL image, a NumPy array or
    torch tensor (one image or a batch: :func:`array_images`), or a list of them.

    ``errors="list"``/``"skip"``: a missing path or a folder without images becomes an entry with
    its error, so that one mistyped name does not cost the rest of the batch; ``"raise"``: a
    missing path raises :class:`ImageNotFoundError`, a folder without images :class:`DataError`.
    """
    if isinstance(images, (str, Path, Image.Image, np.ndarray)) or is_tensor(images):
        images = [images]
    entries: list[ImageEntry] = []
    for item in images:
        if isinstance(item, Image.Image):
            entries.append((f"<image {len(entries)}>", item, None))
        elif isinstance(item, np.ndarray) or is_tensor(item):
            kind, first = ("array" if isinstance(item, np.ndarray) else "tensor"), len(entries)
            entries.extend((f"<{kind} {first + i}>", img, None)
                           for i, img in enumerate(array_images(item)))
        elif isinstance(item, (str, Path)):
            entries.extend(path_entries(Path(item), str(item)))
        else:
            raise VistrainError(f"cannot predict a {type(item).__name__}: give image file or folder "
                                "paths, PIL images, NumPy arrays (HWC uint8) or torch tensors (CHW)")
    if errors == "raise":
        for name, _, error in entries:
            if error == NOT_FOUND:
                raise ImageNotFoundError(f"{name}: {NOT_FOUND}; check the path (relative paths "
                                         f"start at {Path.cwd()}), or pass errors='skip'")
            if error is not None:
                raise DataError(f"{name}: {error}")
    return entries


def path_entries(path: Path, name: str) -> list[ImageEntry]:
    """The entries of one path: a file, a folder's images, or one entry saying why none."""
    if path.is_dir():
        found = folder_images(path)
        if not found and is_shard_folder(path):
            return [(name, None, "folder holds shards (tar files), not images; "
                     "predict the image files themselves")]
        if not found:
            return [(name, None, f"folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")]
        return [(str(p), p, None) for p in found]
    if path.exists():
        return [(name, path, None)]
    return [(name, None, NOT_FOUND)]


def array_images(array) -> list[Image.Image]:
    """PIL images of a NumPy array (``HW``, ``HWC`` or ``NHWC``) or a torch tensor (``HW``,
    ``CHW`` or ``NCHW``), channels 1 (grey), 3 (RGB) or 4 (RGBA); uint8, or float in [0, 1]
    (scaled by 255 and rounded, as saving it to a PNG would).  A PIL image is what a decoded file
    is, so an array is preprocessed exactly as a file of the same pixels.

    Example:
        >>> [im.size + (im.mode,) for im in array_images(np.zeros((2, 5, 4, 3), np.uint8))]
        [(4, 5, 'RGB'), (4, 5, 'RGB')]
        >>> array_images(np.ones((6, 7, 1)))[0].getpixel((0, 0))
        255
    """
    given = tuple(array.shape)
    if is_tensor(array):
        x = array.detach().cpu()
        x = x.float() if x.is_floating_point() else x
        array, layout = x.numpy(), "CHW or NCHW"
        if array.ndim in (3, 4):  # channels first -> channels last, as NumPy images are
            array = np.moveaxis(array, -3, -1)
    else:
        array, layout = np.asarray(array), "HWC or NHWC"
    if array.ndim == 2:
        array = array[None, :, :, None]
    elif array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape[1:3]:
        raise VistrainError(f"cannot predict an array of shape {given}: give images "
                            f"as {layout} with 1, 3 or 4 channels (or grey HW)")
    pixels = to_uint8(array)
    return [Image.fromarray(a[:, :, 0] if a.shape[-1] == 1 else a) for a in pixels]


def to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 as is; whole numbers in 0..255 as uint8; floats in [0, 1] times 255, rounded."""
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise VistrainError(f"{array.dtype} image values {array.min()}..{array.max()}: whole-"
                                "number pixels must be in 0..255 (or give floats in [0, 1])")
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise VistrainError(f"cannot predict an array of dtype {array.dtype}: give uint8, or "
                            "float in [0, 1]")
    if array.size and not np.isfinite(array).all():
        raise VistrainError("float image values must lie in [0, 1], got NaN or infinity; give "
                            "finite pixels (uint8, or floats in [0, 1])")
    if array.size and not (array.min() >= 0 and array.max() <= 1):
        raise VistrainError(f"float image values must lie in [0, 1], got {array.min():.3g}.."
                            f"{array.max():.3g}; divide by 255 or give uint8 pixels")
    return np.rint(array.astype(np.float64) * 255).astype(np.uint8)


def check_tta(tta: str) -> str:
    """``tta`` if it is one of :data:`~vistrain.transforms.tta.TTA_MODES`, else a one-line error."""
    if tta not in TTA_MODES:
        raise VistrainError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    return tta


class BaseClassifier:
    """Class names, the preprocessing and an engine's probabilities; ``predict`` takes files,
    folders, PIL images, NumPy arrays and torch tensors and returns :class:`Prediction` s.

    A subclass sets ``classes``, ``preprocess`` (a :class:`PixelPrep`), ``source``, ``engine``,
    ``temperature``, ``tta`` and ``session`` (its ONNX Runtime engine or None), and computes
    :meth:`_probabilities` and :attr:`artifact`.
    """

    classes: list[str]
    preprocess: PixelPrep
    source: str = ""
    engine: str = ""
    session = None
    temperature: float = 1.0
    tta: str = "none"

    def _probabilities(self, pixels: list) -> np.ndarray:
        """``(N, K)`` probabilities of ``N`` uint8 ``(C, S, S)`` images (a subclass's engine)."""
        raise NotImplementedError

    @property
    def artifact(self) -> str:
        """The file that computes the probabilities (named in the error of non-finite ones)."""
        raise NotImplementedError

    def pixels(self, source) -> np.ndarray:
        """The model input of one image (file or PIL image): ``(C, S, S)`` uint8, decoded,
        resized and cropped as the model was trained (what :meth:`predict_pixels` takes)."""
        return self.preprocess.array(source)

    def predict_pixels(self, pixels: list) -> np.ndarray:
        """``(N, K)`` class probabilities of ``N`` uint8 ``(C, S, S)`` images already resized and
        cropped by :meth:`pixels` (the entry point of batching callers, e.g. a server)."""
        return self._probabilities(pixels)

    def predict_proba(self, images, batch_size: int = 32) -> np.ndarray:
        """``(N, K)`` class probabilities, rows in the order of ``images`` (anything
        :meth:`predict` takes).  Every image must be readable: a missing path raises
        :class:`ImageNotFoundError`, an unreadable file :class:`ImageLoadError`.
        """
        rows = [source for _, source, _ in image_entries(images, errors="raise")]
        out = [self._probabilities([self.pixels(s) for s in rows[i:i + batch_size]])
               for i in range(0, len(rows), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def check_top_k(self, top_k) -> int:
        """``top_k`` limited to the number of classes K; below 1 or not a whole number: an error."""
        n = len(self.classes)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise VistrainError(f"top_k must be a whole number from 1 to {n} (the model's number of "
                                f"classes; larger values show all {n}), got {top_k!r}")
        return min(int(top_k), n)

    def predict(self, images, top_k: int = 5, batch_size: int = 32, progress: bool = True,
                errors: Errors = "raise") -> list[Prediction]:
        """One :class:`Prediction` per image, in input order (a folder's images sorted by path).

        Args:
            images: an image file or folder (str or Path), a PIL image, a NumPy array (``HW``,
                ``HWC`` or a batch ``NHWC``; uint8, or float in [0, 1]), a torch tensor (``HW``,
                ``CHW`` or ``NCHW``; uint8, or float in [0, 1]), or a list mixing these.  Arrays
                are preprocessed exactly as a PNG file of the same pixels.
            top_k: classes kept per image, best first (above the number of classes: all).
            errors: ``"raise"``: a missing path raises :class:`ImageNotFoundError` (a
                ``FileNotFoundError``), an unreadable file :class:`ImageLoadError`; ``"skip"``:
                those are listed with ``.error`` set, and a warning is logged.

        Example:
            >>> clf.predict(np.zeros((2, 28, 28, 3), np.uint8), top_k=1)   # doctest: +SKIP
            [Prediction('<array 0>': Bag 41.0%), Prediction('<array 1>': Bag 41.0%)]
        """
        results = self.predict_all(images, top_k=top_k, batch_size=batch_size, progress=progress,
                                   errors=errors)
        failed = [p for p in results if p.error is not None]
        if failed:
            log.warning("%d of %d images could not be predicted (errors='skip'), first: %s: %s",
                        len(failed), len(results), failed[0].source, failed[0].error)
        return results

    def predict_all(self, images, top_k: int = 5, batch_size: int = 32, progress: bool = True,
                    errors: Errors = "raise") -> list[Prediction]:
        """:meth:`predict` without the warning, for callers that report failures themselves."""
        if errors not in ("raise", "skip"):
            raise VistrainError(f"errors must be 'raise' or 'skip', got {errors!r}")
        k = self.check_top_k(top_k)
        entries = image_entries(images, errors=errors)
        results: list[Prediction] = []
        starts = range(0, len(entries), batch_size)
        for start in progress_bar(starts, desc="predicting", unit="batch", leave=False,
                                  enabled=progress and len(starts) > 1):
            chunk = [self._decode(entry, errors) for entry in entries[start:start + batch_size]]
            readable = [(name, pixels) for name, pixels, _ in chunk if pixels is not None]
            probs = self._probabilities([p for _, p in readable]) if readable else []
            row_probs = iter(probs)  # one row per readable image, in chunk order
            for name, pixels, error in chunk:
                results.append(self._prediction(name, next(row_probs), k) if pixels is not None
                               else Prediction(name, None, None, [], error))
        return results

    def _prediction(self, name: str, probs: np.ndarray, k: int) -> Prediction:
        order = np.argsort(-probs, kind="stable")[:k]
        top = [Score(self.classes[i], float(probs[i]), int(i)) for i in order]
        return Prediction(name, top[0].label, top[0].probability, top)

    def _decode(self, entry: ImageEntry, errors: Errors) -> tuple[str, np.ndarray | None, str | None]:
        name, source, error = entry
        if error is None:
            try:
                return name, self.pixels(source), None
            except ImageLoadError as err:
                if errors == "raise":
                    raise
                error = err.reason
        return name, None, error


def read_test_metrics(run_dir: Path) -> dict | None:
    """The ``"test"`` part of ``RUN/metrics.json`` (None when absent or unreadable)."""
    try:
        test = RunFolder(Path(run_dir), "train").metrics.get("test")
    except RunDirError:
        return None
    return None if test is None else test.to_doc()
