"""What one training run works on: the prepared data and the run context.

:class:`PreparedData` holds the decoded pixels and the split; :class:`RunContext` bundles it with
the settings, the model, its pretrained config, the resolved preprocessing, the runtime and the
output folder -- the one argument that strategies, diagnostics, the LR finder and strategy auto
receive, instead of ``(cfg, model, pcfg, pre, data, rt, out)`` travelling as seven.

Example:
    >>> import numpy as np
    >>> from vistrain.data.scan import ImageIndex
    >>> index = ImageIndex("d", ["a", "b"], ["d/a/1.png", "d/b/2.png", "d/b/3.png"], [0, 1, 1])
    >>> data = PreparedData(index, np.zeros((3, 3, 8, 8), np.uint8), np.arange(3),
    ...                     {"train": [0, 2], "val": [1]}, "key")
    >>> data.labels().tolist(), data.part_rows("train").tolist(), data.num_classes
    ([0, 1, 1], [0, 2], 2)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

from vistrain.config import TrainConfig
from vistrain.data.scan import ImageIndex
from vistrain.data.stream import PixelStream
from vistrain.device import Runtime
from vistrain.models import PretrainedCfg
from vistrain.transforms.preprocess import Preprocess


@dataclass
class PreparedData:
    """Decoded pixels of the usable images and the split, as rows of ``pixels``."""
    index: ImageIndex
    pixels: np.ndarray          # (N_all, C, S, S) uint8, rows of unusable files are zero
    rows: np.ndarray            # (N,) row in ``pixels`` of each image of ``index``
    parts: dict[str, list[int]]  # {"train": [...], "val": [...], "test": [...]}: indices into ``index``
    pixel_key: str
    # (N_all, C, T, T) larger train-time pixels (T = floor(size / crop_pct)) for random-resized
    # crop to see beyond the eval centre crop; None: train on ``pixels`` (see data/cache/__init__.py)
    train_pixels: np.ndarray | None = None
    # where the pixels live: {"estimate_bytes", "where": "disk" | "memory" | "stream" |
    # "shards"[, "reason"]} (run.json)
    cache: dict | None = None
    # the pixels decoded per batch instead of cached (then ``pixels`` is None and ``rows`` is
    # ``arange(N)``): image files past the cache budget, or shards
    stream: PixelStream | None = None

    def labels(self) -> np.ndarray:
        """``(N,)`` int64 label of each image of ``index``."""
        return np.asarray(self.index.labels, dtype=np.int64)

    def part_ids(self, name: str) -> np.ndarray:
        """``(n,)`` int64 indices into ``index`` of part ``name`` (empty when there is none)."""
        return np.asarray(self.parts.get(name, []), dtype=np.int64)

    def part_rows(self, name: str) -> np.ndarray:
        """``(n,)`` rows of ``pixels`` of part ``name``."""
        return self.rows[np.asarray(self.parts[name], dtype=np.int64)]

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)

    def materialize(self, parts: dict[str, np.ndarray]) -> "PreparedData":
        """Streamed data restricted to ``parts`` (indices into ``index``) with their evaluation
        pixels decoded into memory: what the checks, which pick a few hundred images at random,
        work on.  Cached data is returned as it is."""
        if self.stream is None:
            return self
        ids = np.unique(np.concatenate([np.asarray(v, np.int64) for v in parts.values()]))
        where = {int(i): j for j, i in enumerate(ids)}
        sub = {k: [where[int(i)] for i in v] for k, v in parts.items()}
        key = f"{self.pixel_key}-{hashlib.sha256(ids.tobytes()).hexdigest()[:12]}"
        return PreparedData(self.index.subset(ids), self.stream.take(ids), np.arange(len(ids)), sub,
                            key, cache={"where": "memory", "reason": "a sample of the streamed data"})


@dataclass
class RunContext:
    """One run's inputs, as :func:`vistrain.training.prepare.prepare_run` makes them for every run.

    ``out`` is the run folder (checkpoints, metrics), None where nothing is written (the checks,
    the LR finder); ``progress`` draws progress bars.  Nothing here is changed by a strategy:
    a plan built from a context leaves ``cfg`` as it was.
    """
    cfg: TrainConfig
    model: nn.Module
    pcfg: PretrainedCfg
    pre: Preprocess
    data: PreparedData
    rt: Runtime
    out: Path | None = None
    progress: bool = True
    # strategy=auto: the reasoning of the choice (run.json), and the time.monotonic() at which
    # training stops because the budget is spent (None: no limit)
    auto: dict | None = None
    deadline: float | None = None

    def with_model(self, model: nn.Module) -> "RunContext":
        """The same context around another module (e.g. a deep copy the checks may train)."""
        return replace(self, model=model)


def spatial_preprocess(cfg: TrainConfig, pcfg: PretrainedCfg) -> Preprocess:
    """Resize/crop settings from the config, defaulting to the model's pretrained config."""
    p = cfg.preprocess
    return Preprocess(size=p.size or pcfg.input_size[-1], resize_mode=p.resize_mode,
                      interpolation=p.interpolation or pcfg.interpolation,
                      crop_pct=p.crop_pct or pcfg.crop_pct, fill=p.fill,
                      background=tuple(p.background), channels=1 if p.grayscale else 3)
