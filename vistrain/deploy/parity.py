"""The images an export is checked on, and the numbers that compare two engines on them.

Parity is measured on the run's own held-out images: the ``test`` part of ``splits.json`` (the
``val`` part when the run has no test part), found under the data folder the run recorded (or
``data``, a moved copy).  Calibration images for int8 come from the ``train`` part, so the test
images never influence the quantized model they then score.

Example:
    >>> import numpy as np
    >>> compare(np.array([[.75, .25], [.25, .75]]), np.array([[.625, .375], [.75, .25]]))
    {'n': 2, 'top1_agreement': 0.5, 'max_abs_diff': 0.5}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vistrain.data.cache.build import build_pixel_cache
from vistrain.data.scan import scan_folder
from vistrain.errors import DataError, RunDirError
from vistrain.rundir import RunFolder
from vistrain.transforms.preprocess import Preprocess


@dataclass
class SplitImages:
    """Decoded images of one part of a run's split: ``pixels`` uint8 ``(N, C, S, S)`` (made by
    :meth:`Preprocess.pixels`), ``labels`` ``(N,)`` indices into the run's classes."""
    part: str
    root: Path
    files: list[str]
    pixels: np.ndarray
    labels: np.ndarray
    skipped: dict[str, str]


def split_files(run_dir: str | Path, part: str, *,
                data: str | Path | None = None) -> tuple[str, Path, list[str]]:
    """``(part used, data folder, files relative to it)`` of ``part`` of the run's split; the test
    part falls back to ``val`` when it is empty.  One-line errors for a run without splits.json or
    images that are not where the run (or ``data``) says; a name of splits.json that leads outside
    the data folder is refused (nothing outside it is opened)."""
    folder = RunFolder.read(run_dir)
    parts = folder.splits.parts
    if not parts:
        raise RunDirError(f"{folder.path / 'splits.json'}: missing, so the run's test images are "
                          "unknown; restore it or train the run again")
    used = "val" if part == "test" and not (parts.get("test") and parts["test"].files) else part
    files = [str(f) for f in (parts[used].files if used in parts else [])]
    if not files:
        raise RunDirError(f"{folder.path}: its split has no {part} images to check the export on; "
                          "train with a test or validation part (data.test_fraction > 0)")
    recorded = folder.run.data_root
    if data is None and recorded is None:
        raise DataError(f"{folder.path}: does not record its data folder; give --data DIR (the "
                        "folder it was trained on) to find its test images")
    root = Path(data if data is not None else recorded).resolve()
    outside = [f for f in files if not (root / f).resolve().is_relative_to(root)]
    if outside:
        raise RunDirError(f"{folder.path / 'splits.json'}: names a file outside the data folder "
                          f"({outside[0]}); restore it or train the run again")
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        where = "in its data folder" if root.is_dir() else "reachable: the data folder does not exist,"
        raise DataError(f"{folder.path}: {len(missing)} of its {len(files)} {used} images are not "
                        f"{where} {root} (first: {missing[0]}); give --data DIR, a copy of the "
                        "data it was trained on")
    return used, root, files


def load_split(run_dir: str | Path, classes: list[str], pre: Preprocess, part: str = "test", *,
               data: str | Path | None = None, limit: int | None = None,
               progress: bool = False) -> SplitImages:
    """Decode ``part`` of the run's split (at most ``limit`` images, spread evenly over the list,
    which is sorted by class) with ``pre.pixels``; labels from the scanned data folder."""
    used, root, files = split_files(run_dir, part, data=data)
    if limit is not None and limit < len(files):
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    index = scan_folder(root, min_classes=1)
    label_of = {Path(p).relative_to(index.root).as_posix(): index.classes[y]
                for p, y in zip(index.paths, index.labels)}
    names = [label_of.get(Path(f).as_posix()) for f in files]
    if any(n not in classes for n in names):
        raise DataError(f"{root}: its class folders do not match the run's classes; give --data "
                        "DIR, the data the run was trained on")
    pixels, bad = build_pixel_cache([root / f for f in files], pre.pixels,
                                    (pre.channels, pre.size, pre.size), progress=progress,
                                    desc=f"decoding {used} images")
    keep = [i for i, f in enumerate(files) if str(root / f) not in bad]
    return SplitImages(used, root, [files[i] for i in keep], pixels[keep],
                       np.array([classes.index(names[i]) for i in keep], dtype=np.int64), bad)


def batched(fn, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """``fn`` (uint8 ``(n, C, S, S)`` tensor -> ``(n, K)`` probabilities) over ``pixels`` in batches."""
    out = [np.asarray(fn(torch.from_numpy(np.ascontiguousarray(pixels[i:i + batch_size]))))
           for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out)


def compare(ref: np.ndarray, new: np.ndarray) -> dict:
    """Top-1 agreement and largest absolute probability difference of two ``(N, K)`` arrays."""
    ref, new = np.asarray(ref, np.float64), np.asarray(new, np.float64)
    return {"n": int(len(ref)), "top1_agreement": float((ref.argmax(1) == new.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(ref - new).max())}


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(probs).argmax(1) == labels).mean())
