"""Stratified hold-out and k-fold splits: stratified, deterministic for a seed, disjoint."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vistrain.data.splits import stratified_holdout, stratified_kfold
from vistrain.errors import DataError


def labels_imbalanced():
    return [0] * 60 + [1] * 30 + [2] * 10


class TestHoldout:
    def test_disjoint_and_complete(self):
        s = stratified_holdout(labels_imbalanced(), val_fraction=0.2, test_fraction=0.2, seed=3)
        parts = [set(s[k]) for k in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set.union(*parts) == set(range(100))

    @pytest.mark.parametrize("seed", [0, 1, 7])
    def test_stratified_within_one_image(self, seed):
        labels = np.array(labels_imbalanced())
        s = stratified_holdout(labels, val_fraction=0.2, test_fraction=0.2, seed=seed)
        total = Counter(labels.tolist())
        for part in ("val", "test"):
            got = Counter(labels[s[part]].tolist())
            for c, n in total.items():
                assert abs(got[c] - n * len(s[part]) / len(labels)) <= 1

    def test_deterministic_for_a_seed_and_different_across_seeds(self):
        a = stratified_holdout(labels_imbalanced(), val_fraction=0.2, test_fraction=0.2, seed=5)
        b = stratified_holdout(labels_imbalanced(), val_fraction=0.2, test_fraction=0.2, seed=5)
        c = stratified_holdout(labels_imbalanced(), val_fraction=0.2, test_fraction=0.2, seed=6)
        assert a == b and a["test"] != c["test"]

    def test_too_small_class_names_the_class(self):
        with pytest.raises(DataError, match="'rare' \\(2\\)"):
            stratified_holdout([0] * 20 + [1] * 2, val_fraction=0.2, test_fraction=0.2, seed=0,
                               classes=["common", "rare"])


class TestKFold:
    def test_each_index_tested_once_and_stratified(self):
        labels = np.array(labels_imbalanced())
        folds = stratified_kfold(labels, 5, seed=0)
        tested = np.concatenate([te for _, te in folds])
        assert sorted(tested.tolist()) == list(range(len(labels)))
        for tr, te in folds:
            assert not set(tr) & set(te)
            for c, n in Counter(labels.tolist()).items():
                assert abs((labels[te] == c).sum() - n / 5) <= 1

    def test_fewer_images_than_folds_names_the_class(self):
        with pytest.raises(DataError, match="5-fold.*'b' \\(3\\)"):
            stratified_kfold([0] * 10 + [1] * 3, 5, seed=0, classes=["a", "b"])
