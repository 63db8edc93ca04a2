"""The feature update (model.feature_update): what it learns, through fit and transform."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from model.feature_update import FeatureUpdate, background_classes


def corners_world(seed: int, n: int = 4000):
    """A rare class (about 10%) no hyperplane of the frozen columns separates: the points
    with x0 * x1 > 1, in two opposite corners."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    return X, X[:, 0] * X[:, 1] > 1.0


def test_it_keeps_the_frozen_columns_and_adds_the_learnt_ones():
    X, y = corners_world(0)
    rows = np.arange(400)
    update = FeatureUpdate(hidden=16, clusters=8, random_state=0)
    Z = update.fit(X, {"corners": rows[y[rows]]}, {"corners": rows[~y[rows]]}).transform(X)
    assert Z.shape == (len(X), X.shape[1] + 16)
    assert np.array_equal(Z[:, : X.shape[1]], X)
    assert np.all(Z[:, X.shape[1] :] >= 0)  # rectified


def test_the_learnt_columns_rank_a_class_the_frozen_ones_cannot():
    """Trained on 400 labels, a linear ranker on [x, h(x)] ranks the rest of the pool far
    better than one on x alone (AUC near 0.5: two opposite corners are no half-space)."""
    X, y = corners_world(1)
    train, rest = np.arange(400), np.arange(400, len(X))
    labels = {"corners": train[y[train]]}, {"corners": train[~y[train]]}
    Z = FeatureUpdate(hidden=32, clusters=8, epochs=100, lr=1e-2).fit(X, *labels).transform(X)

    def auc(F):
        model = LogisticRegression(C=10, class_weight="balanced", max_iter=1000)
        model.fit(F[train], y[train])
        return roc_auc_score(y[rest], model.decision_function(F[rest]))

    assert auc(X) < 0.65
    assert auc(Z) > 0.9  # measured: 0.97-0.98 over three worlds


def test_the_same_state_learns_the_same_features():
    X, y = corners_world(2)
    rows = np.arange(300)
    args = X, {"corners": rows[y[rows]]}, {"corners": rows[~y[rows]]}
    a = FeatureUpdate(hidden=8, clusters=4, epochs=20, random_state=3).fit(*args).transform(X)
    b = FeatureUpdate(hidden=8, clusters=4, epochs=20, random_state=3).fit(*args).transform(X)
    assert np.array_equal(a, b)


def test_background_classes_split_the_pool():
    X, _ = corners_world(3)
    c = background_classes(X, 16)
    assert c.shape == (len(X),) and len(np.unique(c)) == 16
    assert len(np.unique(background_classes(X[:50], 16))) == 5  # at most a tenth of the rows


@pytest.mark.parametrize(
    "positives, negatives",
    [({}, {}), ({"a": np.array([1, 2])}, {"a": np.array([], dtype=int)}), ({"a": []}, {"a": [3]})],
)
def test_without_a_class_to_learn_from_it_says_so(positives, negatives):
    X, _ = corners_world(4, n=100)
    with pytest.raises(ValueError, match="positives and negatives"):
        FeatureUpdate().fit(X, positives, negatives)


def test_a_loop_with_feature_updates_ranks_on_the_learnt_columns_from_the_next_label():
    """`feature_update_every` in the simulated loop: after an update every class ranks on
    [x, h(x)]; a pool whose picks are all hits (nothing to learn from) keeps its features."""
    from model.prioritiser import RankerConfig
    from model.simulate import run

    X, y = corners_world(5, n=1500)
    labels = np.where(y, "corners", "other")
    seeds = {int(r): "corners" for r in np.flatnonzero(y)[:5]}
    config = RankerConfig(feature_update_every=20, lexical_dims=0, outlier_prior=0.0)
    res = run(X, labels, ["corners"], seeds, 45, "system", config)
    assert len(res.found) == 45 and res.found == sorted(res.found)
    coef = res.prioritiser.rankers_["corners"].weights[0]
    assert len(coef) == X.shape[1] + FeatureUpdate().hidden
    everything = np.full(len(X), "corners")  # every pick a hit: no negative to learn from
    res = run(X, everything, ["corners"], seeds, 25, "system", replace(config, f_a=0))
    assert len(res.prioritiser.rankers_["corners"].weights[0]) == X.shape[1]
