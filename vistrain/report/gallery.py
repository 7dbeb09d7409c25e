"""The gallery of a run's report: the top losses and most-confused pairs, with Grad-CAM.

Three separate steps: :func:`gallery_items` chooses the images (from ``predictions.json`` and
``splits.json`` alone), :func:`load_cam_model` loads the trained model once, and
:func:`input_and_cam_png` draws one card's picture.  Grad-CAM is computed for at most
``MAX_CAM_IMAGES`` images, so the report stays seconds on a CPU; a model that cannot be loaded
leaves the plain model inputs and a note.

Example:
    >>> from vistrain.rundir import RunFolder
    >>> g = gallery_items(RunFolder.read("runs/demo"))             # doctest: +SKIP
    >>> g.losses[0].file, g.losses[0].loss                         # doctest: +SKIP
    ('Coat/img_0042.png', 4.21)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vistrain.artifact import load_model
from vistrain.evaluation.png import array_png
from vistrain.interpret.cam import compute_cam, feature_map_cam, overlay
from vistrain.report.page import Card, Cards, Heading, Text, note, picture
from vistrain.report.run_sections import readable_meta
from vistrain.rundir import RunFolder
from vistrain.transforms.preprocess import Preprocess

MAX_CAM_IMAGES = 12


@dataclass(frozen=True)
class GalleryItem:
    """One evaluated image: its index id, file (relative to the data root) and resolved path (None
    when unreachable or outside the data root), true/predicted class, their probabilities, loss."""
    id: int
    file: str | None
    path: Path | None
    true: int
    pred: int
    p_true: float
    p_pred: float
    loss: float


@dataclass(frozen=True)
class ConfusedPair:
    true: int
    pred: int
    count: int
    items: list[GalleryItem]


@dataclass(frozen=True)
class Gallery:
    part: str | None
    losses: list[GalleryItem] = field(default_factory=list)
    pairs: list[ConfusedPair] = field(default_factory=list)


def gallery_items(folder: RunFolder, n_losses: int = 8, n_pairs: int = 2, per_pair: int = 2) -> Gallery:
    """The ``n_losses`` highest-loss images of the evaluated part and, for the ``n_pairs`` most
    frequent (true, predicted) confusions, their ``per_pair`` most confident members.

    ``predictions.json`` stores per part ``indices`` (ids into the scanned image index) aligned
    with ``labels`` and ``probs``; ``splits.json`` maps the same ids to file names.
    """
    part = folder.evaluated_part()
    if part is None:
        return Gallery(None)
    pred_part = folder.predictions[part]
    ids, y, p = pred_part.indices, pred_part.labels, pred_part.probs
    files = folder.splits.files_of(part)
    loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))
    pred = p.argmax(1)

    def item(j) -> GalleryItem:
        rel = files.get(int(ids[j]))
        return GalleryItem(int(ids[j]), rel, folder.data_file(rel), int(y[j]), int(pred[j]),
                           float(p[j, y[j]]), float(p[j, pred[j]]), float(loss[j]))
    losses = [item(j) for j in np.argsort(-loss, kind="stable")[:n_losses]]
    k = p.shape[1]
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    np.fill_diagonal(cm, 0)
    pairs = []
    for flat in np.argsort(-cm, axis=None, kind="stable")[:n_pairs]:
        a, b = divmod(int(flat), k)
        if cm[a, b] == 0:
            break
        members = np.flatnonzero((y == a) & (pred == b))
        members = members[np.argsort(-p[members, b], kind="stable")][:per_pair]
        pairs.append(ConfusedPair(a, b, int(cm[a, b]), [item(j) for j in members]))
    return Gallery(part, losses, pairs)


def load_cam_model(folder: RunFolder) -> tuple[nn.Module, Preprocess]:
    """The run's trained model (CPU, eval mode) and its preprocessing; RunDirError when missing."""
    return load_model(folder.path)[0], Preprocess.from_dict(folder.meta.preprocess)


def input_and_cam_png(pre: Preprocess, path: Path, model: nn.Module | None = None,
                      target: int = 0) -> bytes:
    """The model input of ``path`` (H, W) and, with a ``model``, its Grad-CAM overlay for class
    ``target`` next to it (H, 2W), as PNG bytes."""
    x = pre.pixels(path)                                   # (C, H, W) uint8
    img = x.permute(1, 2, 0).numpy()
    img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
    if model is None:
        return array_png(img)
    cam, _ = compute_cam(model, pre.normalize(x[None]), target_class=target)
    return array_png(np.concatenate([img, overlay(img, cam[0].numpy())], axis=1))


def cam_pngs(pre: Preprocess, paths: list[Path], model: nn.Module, targets: list[int]) -> list[bytes]:
    """:func:`input_and_cam_png` of several images with one batched Grad-CAM pass
    (:func:`~vistrain.interpret.cam.feature_map_cam`: one forward without autograd, a backward
    through the head only): a card at a time cost a probe forward to find the layer plus a forward
    and a backward through the whole network per image (~80 % of the report's time)."""
    xs = torch.stack([pre.pixels(p) for p in paths])                  # (N, C, H, W) uint8
    cams, _ = feature_map_cam(model, pre.normalize(xs), target_class=targets)
    out = []
    for x, cam in zip(xs, cams):
        img = x.permute(1, 2, 0).numpy()
        img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
        out.append(array_png(np.concatenate([img, overlay(img, cam.numpy())], axis=1)))
    return out


class _CardPictures:
    """Card pictures of a gallery: Grad-CAM for the first ``limit`` distinct images (computed
    together by :meth:`prepare`), the model input alone for the others."""

    def __init__(self, folder: RunFolder, limit: int):
        self.limit, self.done, self.error = limit, {}, None
        try:
            self.model, self.pre = load_cam_model(folder)
        except Exception as err:  # the report must still be written without Grad-CAM
            meta = readable_meta(folder)  # None: the default preprocessing still shows the images
            self.model, self.error = None, str(err)
            self.pre = Preprocess.from_dict(meta.preprocess) if meta else Preprocess()

    def prepare(self, items: list[GalleryItem]) -> None:
        """Grad-CAM pictures of the first ``limit`` distinct reachable ``items``, in one batch."""
        if self.model is None:
            return
        todo: dict[int, GalleryItem] = {}
        for it in items:
            if len(todo) < self.limit and it.id not in todo and it.path is not None and it.path.is_file():
                todo[it.id] = it
        if not todo:
            return
        chosen = list(todo.values())
        try:
            pngs = cam_pngs(self.pre, [it.path for it in chosen], self.model, [it.pred for it in chosen])
        except Exception as err:  # an unreadable image or a model CAM cannot handle: plain inputs
            self.error = f"{type(err).__name__}: {err}"
            return
        self.done = {it.id: picture(png, f"{it.file} and Grad-CAM", width=240) for it, png in zip(chosen, pngs)}

    def __call__(self, it: GalleryItem):
        if it.id in self.done:
            return self.done[it.id]
        if it.path is None or not it.path.is_file():
            return note("image file not reachable")
        return picture(input_and_cam_png(self.pre, it.path), str(it.file), width=240)


def gallery_blocks(folder: RunFolder, max_cam: int = MAX_CAM_IMAGES) -> list:
    g = gallery_items(folder)
    if not g.losses:
        return [note("no predictions.json: no gallery")]
    pictures, classes = _CardPictures(folder, max_cam), folder.classes
    pictures.prepare([*g.losses, *(it for pair in g.pairs for it in pair.items)])

    def name(i: int) -> str:
        return classes[i] if i < len(classes) else str(i)

    def cards(items: list[GalleryItem]) -> Cards:
        return Cards([Card(pictures(it), str(it.file or it.id),
                           [f"true: {name(it.true)} (p={it.p_true:.3f})",
                            f"predicted: {name(it.pred)} (p={it.p_pred:.3f})", f"loss {it.loss:.3f}"])
                      for it in items])
    out = [Text(f"{g.part} part. Each card: the model input and its Grad-CAM heat map for the predicted "
                f"class (at most {max_cam} maps are computed).")]
    out += [Heading("Top losses"), cards(g.losses), Heading("Most-confused pairs")]
    if not g.pairs:
        out.append(note("no misclassification"))
    for pair in g.pairs:
        out += [Heading(f"true {name(pair.true)} \u2192 predicted {name(pair.pred)}: {pair.count} image(s)", 4),
                cards(pair.items)]
    if pictures.error:
        out.append(note(f"Grad-CAM unavailable: {pictures.error}"))
    return out
