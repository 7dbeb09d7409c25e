"""Find the images and labels in a data folder.

Two layouts are recognised::

    DATA/<class>/<image>            one folder per class (sub-folders inside a class are searched)
    DATA/train/<class>/<image>      the user's own split; val/ and test/ are optional
    DATA/val/<class>/<image>        (also accepted: valid/, validation/)
    DATA/test/<class>/<image>

Class names are the folder names, sorted, so label ``i`` is ``classes[i]`` on every machine.

Example:
    >>> from vistrain.data.scan import scan_folder
    >>> index = scan_folder("examples/fashion-mnist-small")  # doctest: +SKIP
    >>> index.classes[:2], len(index)                        # doctest: +SKIP
    (['Ankle boot', 'Bag'], 1500)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vistrain.imageio.read import is_image_file
from vistrain.data.shards.index import is_shard_folder
from vistrain.errors import DataError

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class ImageIndex:
    """All images of a data set: ``paths[i]`` has label ``labels[i]`` (index into ``classes``).

    ``given_split[i]`` is ``"train" | "val" | "test"`` when the folder came pre-split, else None.
    """
    root: Path
    classes: list[str]
    paths: list[Path]
    labels: list[int]
    given_split: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    # WebDataset shards (a ShardIndex) when the data set is read from them: ``paths`` then name
    # the samples (``SHARDS/<key>``) and ``given_split`` is the split fixed when they were packed
    shards: object | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(self, indices) -> "ImageIndex":
        idx = list(indices)
        return ImageIndex(self.root, self.classes, [self.paths[i] for i in idx],
                          [self.labels[i] for i in idx],
                          [self.given_split[i] for i in idx] if self.given_split else None)

    def drop(self, bad_paths: set[str], reasons: dict[str, str]) -> "ImageIndex":
        """A copy without ``bad_paths``, remembering why each was skipped."""
        keep = [i for i, p in enumerate(self.paths) if str(p) not in bad_paths]
        out = self.subset(keep)
        out.skipped = self.skipped + [(p, reasons[p]) for p in sorted(bad_paths)]
        return out


def scan_folder(root: str | Path, *, min_classes: int = 2) -> ImageIndex:
    """Index ``root`` (layouts in the module docstring); raise :class:`DataError` if unusable."""
    layout = folder_layout(root)
    if layout.presplit:
        _check_classes(layout.root / "train", layout.splits["train"], min_classes)
        for split, cls in layout.splits.items():
            unknown = sorted(set(cls) - set(layout.splits["train"]))
            if unknown:
                raise DataError(f"{layout.root / split}: classes not present in train/: "
                                f"{', '.join(unknown)}; every class must have training images")
    else:
        _check_classes(layout.root, layout.splits[""], min_classes)
    return layout.to_index()


@dataclass
class FolderLayout:
    """What a data folder holds, before any check (``vistrain doctor`` reports on it as is).

    ``splits`` maps ``""`` to ``{class: image files}`` for ``DATA/<class>/``, or ``"train"``,
    ``"val"``, ``"test"`` to their ``{class: image files}`` for a pre-split folder.
    """
    root: Path
    splits: dict[str, dict[str, list[Path]]]

    @property
    def presplit(self) -> bool:
        return "" not in self.splits

    def classes(self) -> list[str]:
        """Sorted class names of every split (training requires them all to be in train/)."""
        return sorted({name for cls in self.splits.values() for name in cls})

    def to_index(self) -> ImageIndex:
        """Every image with its label; empty classes are kept (count 0)."""
        classes = self.classes()
        paths, labels, given = [], [], []
        for split in (("train", "val", "test") if self.presplit else ("",)):
            for k, name in enumerate(classes):
                files = self.splits.get(split, {}).get(name, [])
                paths += files
                labels += [k] * len(files)
                given += [split] * len(files)
        return ImageIndex(self.root, classes, paths, labels, given if self.presplit else None)


def folder_layout(root: str | Path) -> FolderLayout:
    """The images of ``root`` per class (and split); raises :class:`DataError` only when ``root``
    is not a folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder; give the folder that holds one sub-folder per class")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder; give the folder that holds one sub-folder per class")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_NAMES]
    if not (split_dirs and "train" in {SPLIT_NAMES[d.name.lower()] for d in split_dirs}):
        return FolderLayout(root, {"": {d.name: _images_under(d) for d in subdirs}})
    splits: dict[str, dict[str, list[Path]]] = {"train": {}}
    for d in split_dirs:
        classes = {c.name: _images_under(c) for c in sorted(d.iterdir())
                   if c.is_dir() and not c.name.startswith(".")}
        splits.setdefault(SPLIT_NAMES[d.name.lower()], {}).update(classes)
    return FolderLayout(root, splits)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _check_classes(root: Path, per_class: dict[str, list[Path]], min_classes: int) -> None:
    if not per_class:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)] if root.is_dir() else []
        hint = (f" ({len(loose)} images lie directly in it: move them into one sub-folder per class)"
                if loose else "")
        if is_shard_folder(root):
            raise DataError(f"{root}: holds WebDataset shards (`vistrain pack`), which `vistrain train` "
                            "reads; for this command give the image folder they were packed from")
        raise DataError(f"{root}: no class sub-folders found{hint}; expected DATA/<class>/<image>")
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        raise DataError(f"{root}: class folder(s) without images: {', '.join(empty)}; "
                        "add images or remove the folder")
    if len(per_class) < min_classes:
        raise DataError(f"{root}: found only {len(per_class)} class ({', '.join(per_class)}); "
                        f"a classifier needs at least {min_classes} class folders")
