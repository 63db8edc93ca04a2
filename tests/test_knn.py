"""The kNN blend (model.knn, `RankerConfig.knn_blend`): near the positives found so far, where
one hyperplane cannot reach, and never in the scores the pseudo-negatives are drawn from."""

from __future__ import annotations

import numpy as np
import pytest

from model.knn import knn_posterior, nearest_labelled
from model.labels import LabelState
from model.prioritiser import Pool, Prioritiser, RankerConfig


def two_clumps(seed: int = 0, n_other: int = 1500, per_clump: int = 20, dim: int = 16):
    """A rare class in two tight clumps at opposite directions, which no single hyperplane
    puts on one side, among a diffuse background."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=dim)
    X = np.vstack([c + 0.25 * rng.normal(size=(per_clump, dim)),
                   -c + 0.25 * rng.normal(size=(per_clump, dim)),
                   rng.normal(size=(n_other, dim))])  # fmt: skip
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    labels = np.array(["A"] * (2 * per_clump) + ["other"] * n_other)
    return X, labels


def fitted(X, labels, blend: float) -> Prioritiser:
    state = LabelState(["A"])
    for i in [0, 1, 20, 21, *range(40, 140)]:  # two positives per clump, 100 negatives
        state.set_label(i, str(labels[i]))
    config = RankerConfig(knn_blend=blend, outlier_prior=0)
    return Prioritiser(["A"], config, {"A": X[0]}).fit(Pool(list(range(len(X))), X), state)


def test_the_blend_asks_near_every_clump_of_positives():
    X, labels = two_clumps()
    runs = {w: fitted(X, labels, w) for w in (0.0, 0.5, 0.8)}
    hits = {w: int((labels[p.queue(20).rows] == "A").sum()) for w, p in runs.items()}
    assert hits[0.0] <= 2  # one hyperplane ranks neither clump on top
    assert hits[0.8] > hits[0.5] > hits[0.0]  # the more weight, the more asked near them
    # the pseudo-negatives and the estimates read the linear model's own scores
    np.testing.assert_allclose(runs[0.8].raw_scores_, runs[0.0].raw_scores_, rtol=1e-4, atol=1e-4)


def test_the_posterior_is_the_smoothed_share_of_positive_neighbours():
    X = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3]]
    X[4] = (X[2] + X[3]) / np.sqrt(2)  # between the two negatives
    neighbours, similarity = nearest_labelled(X, np.array([0, 2, 3]), k=2)
    assert neighbours.shape == (5, 2) and 0 in neighbours[1]  # row 1 is row 0's twin
    positive = np.array([True, False, False, False, False])
    post = knn_posterior(neighbours, similarity, positive)
    assert post[1] > 0.99  # its twin, a positive, outweighs a neighbour at cosine 0
    assert post[4] == 0  # both neighbours negatives
    assert post[3] < 0.01  # itself a negative, labelled


def test_a_blend_weight_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="knn_blend"):
        RankerConfig(knn_blend=1.0)
