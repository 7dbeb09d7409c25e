"""ArrayBatches: rows stay with their labels, in the epoch's order, from a memory map, in every mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vistrain.data.loader import ArrayBatches


@pytest.fixture
def rows(tmp_path):
    n = 53
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(n, 3, 4, 4))
    x[:] = (np.arange(n) % 256).astype(np.uint8).reshape(n, 1, 1, 1)   # every pixel of row i is i
    x.flush()
    return np.load(tmp_path / "x.npy", mmap_mode="r"), np.arange(n) * 10


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("rank,world", [(0, 1), (1, 3)])
def test_batches_follow_the_epoch_order(rows, prefetch, rank, world):
    x, y = rows
    loader = ArrayBatches(x, y, batch_size=8, shuffle=True, seed=3, rank=rank, world_size=world,
                          prefetch=prefetch)
    loader.set_epoch(2)
    order = loader.epoch_indices()
    seen = []
    for xb, yb in loader:
        assert xb.dtype == torch.uint8 and xb.shape[1:] == (3, 4, 4) and xb.is_contiguous()
        assert torch.equal(xb[:, 0, 0, 0].long() * 10, yb)   # each row with its own label
        assert (xb == xb[:, :1, :1, :1]).all()               # whole rows, not mixed
        seen.extend((yb // 10).tolist())
    assert seen == order.tolist()
    assert len(seen) == -(-len(y) // world) and len(loader) == -(-len(seen) // 8)
    loader.set_epoch(3)
    assert loader.epoch_indices().tolist() != seen           # a new permutation each epoch


def test_reader_errors_reach_the_consumer(rows):
    x, y = rows

    class Broken:
        shape, dtype = x.shape, x.dtype

        def __getitem__(self, idx):
            raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        list(ArrayBatches(Broken(), y, batch_size=8, prefetch=2))
