"""``pack``: write an image folder as WebDataset shards for data sets larger than the pixel cache.

The default ``size`` is the side the pixel cache stores for training (the train square of
:class:`~vistrain.data.cache.pixels.EvalAndTrainPixels`): the default model's input size over its
crop fraction, ``floor(224 / 0.875) = 256`` for tf_efficientnet_lite0.  Images are shrunk so that
their shorter side is at most that (never enlarged), which keeps every pixel random-resized-crop
training at the model's resolution can use, and nothing more.  ``size=0`` keeps native sizes.

The parts (train/val/test) are the ones a training run on the folder makes
(:func:`vistrain.data.splits.make_parts` with the same fractions, seed and groups), recorded per
sample, so a run on the shards holds out exactly what a run on the folder would.

``compress="auto"`` gzips the shards (``.tar.gz``) when the images are small (mean under 16 KB):
tar's 512-byte headers and padding would otherwise double the bytes of e.g. 32 px PNGs.

Example:
    >>> import vistrain
    >>> out = vistrain.pack("examples/fashion-mnist-small", out="/tmp/fm-shards")  # doctest: +SKIP
    >>> out["samples"], out["shards"], out["parts"]["test"]                        # doctest: +SKIP
    (2000, 1, 300)
"""
from __future__ import annotations

from pathlib import Path

from vistrain.config import TrainConfig
from vistrain.data.scan import scan_folder
from vistrain.data.shards.index import INDEX
from vistrain.data.shards.write import write_shards
from vistrain.data.splits import make_parts
from vistrain.data.stats import default_preprocess
from vistrain.errors import VistrainError
from vistrain.transforms.resize import crop_scale_size
from vistrain.workflows.logs import show_log_lines


def pack(data: str | Path, /, *, out: str | Path, size: int | None = None, model: str | None = None,
         encoding: str = "auto", quality: int = 95, shard_mb: float = 256,
         val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0,
         groups: str | None = None, group_regex: str | None = None, workers: int = -1,
         overwrite: bool = False, progress: bool = True, compress: str = "auto") -> dict:
    """Write ``data`` as ``out/shard-NNNNNN.tar[.gz]`` + ``out/index.json``.

    ``size``: shorter side at most this (None: :func:`train_source_size` of ``model``; 0: native).
    ``encoding``: ``auto`` (JPEG sources stay JPEG at ``quality``, others PNG), ``png``, ``jpeg``.
    ``compress``: ``auto`` (gzip when the mean encoded image is under 16 KB), ``none``, ``gzip``.
    The split arguments are training's (``--val-fraction`` ...).  Returns a summary: ``out``,
    ``index``, ``shards`` (count), ``samples``, ``bytes``, ``source_bytes`` (file sizes),
    ``source_disk_bytes`` (blocks they occupy), ``ratio`` and ``disk_ratio`` (shards / those),
    ``parts`` (samples per part), ``size``, ``encoding``, ``compress`` (``none|gzip``),
    ``skipped`` (``[{file, reason}]``).
    """
    show_log_lines()
    if size is not None and size < 0:
        raise VistrainError(f"size must be >= 0 (0: native size), got {size}")
    if shard_mb <= 0 or not 1 <= quality <= 100:
        raise VistrainError("shard_mb must be > 0 and quality in 1..100; e.g. --shard-mb 256 --quality 95")
    cfg = TrainConfig()
    d = cfg.data
    d.root, d.val_fraction, d.test_fraction, d.split_seed = str(data), val_fraction, test_fraction, split_seed
    d.groups, d.group_regex = groups, group_regex
    cfg.check()  # the fractions, seed and group settings are validated as training validates them
    index = scan_folder(data)
    side = train_source_size(model) if size is None else (size or None)
    doc = write_shards(index, out, parts=make_parts(index, d), source_size=side, encoding=encoding,
                       quality=quality, shard_bytes=int(shard_mb * 2**20), workers=workers,
                       progress=progress, seed=split_seed, overwrite=overwrite, compress=compress)
    return summary(doc)


def train_source_size(model: str | None = None) -> int:
    """The side the pixel cache's train square has for ``model`` (default: the config's model):
    ``floor(input size / crop_pct)``, e.g. 256 for tf_efficientnet_lite0 (224, 0.875)."""
    pre = default_preprocess(model)
    return crop_scale_size(pre.size, pre.crop_pct)


def summary(doc: dict) -> dict:
    """The facts of a written shard folder (see :func:`pack`)."""
    total, src, disk = doc["total_bytes"], doc["source_bytes"], doc["source_disk_bytes"]
    parts = {p: sum(c.values()) for p, c in doc["part_counts"].items()}
    return {"out": doc["out"], "index": str(Path(doc["out"]) / INDEX), "shards": len(doc["shards"]),
            "samples": doc["samples"], "bytes": total, "source_bytes": src, "source_disk_bytes": disk,
            "ratio": total / src if src else None, "disk_ratio": total / disk if disk else None,
            "parts": {p: parts.get(p, 0) for p in ("train", "val", "test")},
            "classes": len(doc["classes"]), "size": doc["source_size"], "encoding": doc["encoding"],
            "compress": doc.get("compress", "none"), "skipped": doc["skipped"]}
