"""The data doctor's checks of the folder layout, before any image is decoded.

``no-class-folders``, ``empty-class``, ``single-class``, ``class-not-in-train`` (a val/ or test/
class without training images): errors, training refuses such a folder; ``split-named-class``
(a ``val/`` folder without ``train/`` is a class); ``outside-class-folder`` (images training
ignores because no class folder holds them); ``non-image-file`` and ``system-files``
(``.DS_Store``, ``Thumbs.db``, ``._*`` resource forks, hidden folders).

Example:
    >>> from vistrain.data.scan import folder_layout
    >>> findings = structure_findings(folder_layout("data/"))   # doctest: +SKIP
    >>> [f.code for f in findings]                             # doctest: +SKIP
    ['single-class', 'system-files']
"""
from __future__ import annotations

import os
from pathlib import Path

from vistrain.data.doctor.report import Finding, listing
from vistrain.imageio.read import is_image_file
from vistrain.data.scan import SPLIT_NAMES, FolderLayout

SYSTEM_NAMES = {".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".directory", "__macosx"}


def structure_findings(layout: FolderLayout) -> list[Finding]:
    """Problems of the folder layout itself; every one that makes training refuse is an error."""
    if not layout.presplit:
        out = _class_findings(layout.root, layout.splits[""])
        lookalike = sorted(c for c in layout.splits[""] if c.lower() in SPLIT_NAMES)
        if lookalike:
            out.append(Finding("warning", "split-named-class", f"folder(s) {', '.join(lookalike)} "
                               "look like a split, but without a train/ folder they are classes",
                               [str(layout.root / c) for c in lookalike],
                               "add a train/ folder to give your own split, or rename them"))
        return out + _stray_findings(layout)
    train = layout.splits["train"]
    out = _class_findings(layout.root / "train", train)
    for split, per_class in layout.splits.items():
        if split == "train":
            continue
        out += [f for f in _class_findings(layout.root / split, per_class) if f.code == "empty-class"]
        unknown = sorted(set(per_class) - set(train))
        if unknown:
            out.append(Finding("error", "class-not-in-train", f"{layout.root / split}: class(es) "
                               f"{', '.join(unknown)} have no folder in train/",
                               [str(p) for c in unknown for p in per_class[c]],
                               "every class needs training images: add train/<class>/ or remove them"))
    return out + _stray_findings(layout)


def _class_findings(root: Path, per_class: dict[str, list[Path]]) -> list[Finding]:
    if not per_class:
        return [Finding("error", "no-class-folders", f"{root}: no class sub-folders",
                        [str(root)], "put the images in one sub-folder per class: DATA/<class>/<image>")]
    out = []
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        out.append(Finding("error", "empty-class", f"{root}: class folder(s) without images: "
                           f"{', '.join(empty)}", [str(root / c) for c in empty],
                           "add images or remove the folder"))
    with_images = [name for name, files in per_class.items() if files]
    if len(with_images) == 1:
        out.append(Finding("error", "single-class", f"{root}: only one class has images "
                           f"({with_images[0]})", [str(root / with_images[0])],
                           "a classifier needs at least 2 class folders with images"))
    return out


def _stray_findings(layout: FolderLayout) -> list[Finding]:
    """Files training ignores: outside class folders, not images by name, system/hidden files."""
    outside, non_image, system = [], [], []
    for folder, dirs, files in os.walk(layout.root):
        here = Path(folder)
        for d in list(dirs):
            if d.startswith(".") or d.lower() in SYSTEM_NAMES:
                system.append(str(here / d))
                dirs.remove(d)  # not searched by training either
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or name.lower() in SYSTEM_NAMES:
                system.append(str(path))
            elif not is_image_file(path):
                non_image.append(str(path))
            elif not _in_class_folder(layout, path):
                outside.append(str(path))
    out = []
    if outside:
        out.append(Finding("warning", "outside-class-folder", f"{len(outside)} image(s) outside any "
                           f"class folder, ignored by training: {listing(outside)}", outside,
                           "move them into the folder of their class (DATA/<class>/ or "
                           "DATA/<split>/<class>/)"))
    if non_image:
        out.append(Finding("info", "non-image-file", f"{len(non_image)} file(s) without an image "
                           f"extension, ignored by training: {listing(non_image)}", non_image,
                           "nothing to do if they are notes; convert images with other extensions"))
    if system:
        out.append(Finding("info", "system-files", f"{len(system)} hidden or system file(s) "
                           f"(.DS_Store, Thumbs.db, ._* resource forks, hidden folders), ignored "
                           f"by training: {listing(system)}", system,
                           "delete them, e.g. find DATA -name .DS_Store -delete"))
    return out


def _in_class_folder(layout: FolderLayout, path: Path) -> bool:
    parts = path.relative_to(layout.root).parts
    if not layout.presplit:
        return len(parts) >= 2
