"""The benchmark's background-split linear stage (benchmarks/background_split.py): what it
can rank that one hyperplane cannot, and that it runs inside the simulated loop."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.background_split import SplitRanker, split_linear_stage
from model.feature_update import background_classes
from model.prioritiser import RankerConfig
from model.rankers import LinearRanker
from model.simulate import run


def sandwich(n_side: int = 300, n_pos: int = 30, seed: int = 0):
    """A rare class between two common ones on a line: no half-space holds it alone."""
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(-1, 0.15, n_side), rng.normal(1, 0.15, n_side), rng.normal(0, 0.1, n_pos)]
    X = np.column_stack([x, rng.normal(0, 0.1, len(x)), np.ones(len(x))]).astype(np.float32)
    y = np.r_[np.zeros(2 * n_side), np.ones(n_pos)]
    return X, y


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    pos, neg = scores[y == 1], scores[y == 0]
    return float((pos[:, None] > neg[None, :]).mean())


def test_the_split_ranks_a_class_that_one_hyperplane_cannot():
    X, y = sandwich()
    w = np.ones(len(y), np.float32)
    linear = LinearRanker(10.0).fit(X, y, sample_weight=w)
    split = SplitRanker(10.0).fit(X, y, background_classes(X, 8), w)
    assert auc(linear.score(X), y) < 0.75
    assert auc(split.score(X), y) > 0.97


def test_a_refit_with_one_more_label_changes_the_scores():
    X, y = sandwich()
    background = background_classes(X, 8)
    w = np.ones(len(y), np.float32)
    split = SplitRanker(10.0).fit(X, y, background, w)
    before = split.score(X)
    y2 = y.copy()
    y2[np.argmin(np.abs(X[:300, 0] + 0.5))] = 1  # a left-side row relabelled positive
    after = split.fit(X, y2, background, w).score(X)
    assert not np.allclose(before, after)


def test_one_class_only_is_refused():
    X, y = sandwich()
    with pytest.raises(ValueError, match="both positives and negatives"):
        SplitRanker(10.0).fit(X, np.zeros(len(y)), background_classes(X, 8), np.ones(len(y)))


def test_inside_the_loop_it_finds_the_sandwiched_class():
    X, y = sandwich()
    labels = np.where(y == 1, "rare", "common")
    seeds = {int(i): "rare" for i in np.flatnonzero(y == 1)[:5]}
    config = RankerConfig(lexical_dims=0, outlier_prior=0)
    with split_linear_stage(clusters=8):
        found = run(X, labels, ["rare"], seeds, 40, "system", config).found
    assert found[-1] >= 0.9 * (y.sum() - 5)
