"""vistrain.fsutil's one atomic-write helper: the temporary-name rule as a parameter, cleanup."""
from __future__ import annotations

import json
import os

import pytest

from vistrain import fsutil
from vistrain.data.cache_budget import PART, cache_entries


def test_default_rule_is_the_hidden_pid_name_that_resume_cleans_up(tmp_path):
    tmp = fsutil.temp_beside(tmp_path / "metrics.json")
    assert tmp.name == f".metrics.json.{os.getpid()}.tmp" and tmp.is_file()
    assert fsutil.remove_stale_temporaries(tmp_path) == [tmp.name]


def test_suffix_rule_gives_unique_names_the_cache_budget_counts_as_unfinished(tmp_path):
    a, b = (fsutil.temp_beside(tmp_path / "pixels-k.npy", PART) for _ in range(2))
    assert a != b and all(p.name.startswith("pixels-k.npy.") and p.suffix == PART for p in (a, b))
    assert all(e.partial for e in cache_entries(tmp_path))
    assert fsutil.remove_stale_temporaries(tmp_path) == []   # a run's cleanup leaves them alone


@pytest.mark.parametrize("suffix", [None, PART])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, suffix):
    path = tmp_path / "x.json"
    fsutil.atomic_write_json(path, {"old": 1}, suffix=suffix)
    with pytest.raises(ZeroDivisionError), fsutil.atomic_path(path, suffix=suffix) as tmp:
        tmp.write_text("half")
        1 / 0
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_bytes_with_fsync_and_a_suffix(tmp_path):
    fsutil.atomic_write_bytes(tmp_path / "w.bin", b"abc", fsync=True, suffix=PART)
    assert (tmp_path / "w.bin").read_bytes() == b"abc" and len(list(tmp_path.iterdir())) == 1
