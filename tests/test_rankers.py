"""Rankers: the stage the labels allow, the paper's pseudo-negatives, and the linear model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info, threadpool_limits

from model.rankers import (
    CosineRanker,
    LinearRanker,
    fit_class_ranker,
    n_pseudo_negatives,
    project,
    sample_pseudo_negatives,
)


def unit_rows(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def two_clusters(n_pos: int, n_neg: int, dim: int = 16, spread: float = 0.3, seed: int = 0):
    """Unit vectors around two directions; returns X and a boolean `is_positive`."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(2, dim)))
    X = np.vstack(
        [
            centres[0] + spread * rng.normal(size=(n_pos, dim)),
            centres[1] + spread * rng.normal(size=(n_neg, dim)),
        ]
    )
    return unit_rows(X), np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]


# The paper's settings, which these tests were written for (the ranker's are in RankerConfig)
PAPER = {"f_a": 100.0, "C": 10.0, "bottom_fraction": 0.5, "keep_top": 0, "human_weight": 1.0}


def fit(X, pos, neg, *, scores=None, prototype=None, seed=0, **kw):
    labelled = np.zeros(len(X), bool)
    labelled[np.r_[pos, neg].astype(int)] = True
    unlabelled = np.flatnonzero(~labelled)
    rng = np.random.default_rng(seed)
    ranker, pseudo = fit_class_ranker(
        X,
        np.asarray(pos, int),
        np.asarray(neg, int),
        unlabelled,
        scores,
        prototype,
        rng=rng,
        **{**PAPER, **kw},
    )
    return ranker, pseudo, unlabelled


# --- stages ---------------------------------------------------------------------------------


def test_no_positive_ranks_by_cosine_to_the_prototype():
    X, _ = two_clusters(20, 200)
    prototype = np.arange(16, dtype=np.float32) - 5  # any non-zero direction, not unit length
    ranker, pseudo, _ = fit(X, [], [3, 4], prototype=prototype)
    assert isinstance(ranker, CosineRanker) and ranker.stage == "cosine"
    assert len(pseudo) == 0
    expected = X @ (prototype / np.linalg.norm(prototype))
    np.testing.assert_allclose(ranker.score(X), expected, atol=1e-5)
    assert ranker.weights[1] == 0.0


def test_no_positive_and_no_prototype_is_an_error():
    X, _ = two_clusters(5, 20)
    with pytest.raises(ValueError, match="prototype"):
        fit(X, [], [], prototype=None)


def test_zero_prototype_is_an_error():
    with pytest.raises(ValueError):
        CosineRanker.from_prototype(np.zeros(8, dtype=np.float32))


def test_positives_without_negatives_rank_by_the_centroid():
    X, is_pos = two_clusters(20, 200, spread=0.15)
    pos = np.flatnonzero(is_pos)[:5]
    prototype = -X[pos].mean(axis=0)  # must be ignored once positives exist
    ranker, pseudo, _ = fit(X, pos, [], prototype=prototype)
    assert isinstance(ranker, CosineRanker)
    assert len(pseudo) == 0
    centroid = X[pos].mean(axis=0)
    np.testing.assert_allclose(
        ranker.score(X), X @ (centroid / np.linalg.norm(centroid)), atol=1e-5
    )
    # the ranking is useful: the unlabelled positives come first
    order = np.argsort(-ranker.score(X))
    assert is_pos[order[:20]].all()


def test_positives_and_negatives_give_a_linear_ranker():
    X, is_pos = two_clusters(20, 200)
    pos, neg = np.flatnonzero(is_pos)[:5], np.flatnonzero(~is_pos)[:5]
    ranker, pseudo, _ = fit(X, pos, neg)
    assert isinstance(ranker, LinearRanker) and ranker.stage == "linear"
    assert len(pseudo) > 0
    w, b = ranker.weights
    np.testing.assert_allclose(ranker.score(X), X @ w + b, atol=1e-5)


# --- pseudo-negatives -----------------------------------------------------------------------


@pytest.mark.parametrize("f_a", [0, 1, 3.7, 10, 100])
def test_pseudo_negative_budget_is_the_papers(f_a):
    for n_pos in range(0, 12):
        for n_neg in range(0, 40, 3):
            n = n_pseudo_negatives(n_pos, n_neg, f_a)
            assert isinstance(n, int)
            assert abs(n - f_a * (n_pos + 0.1 * n_neg)) <= 0.5 + 1e-9


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "f_a"),
    [(1, 1, 10), (2, 7, 10), (5, 5, 20), (5, 30, 100), (1, 0.0, 0)],
)
def test_pseudo_negatives_count_is_capped_by_the_bottom_half(n_pos, n_neg, f_a):
    n_neg = int(n_neg)
    X, is_pos = two_clusters(30, 400)
    pos = np.flatnonzero(is_pos)[:n_pos]
    neg = np.flatnonzero(~is_pos)[: max(n_neg, 1)]  # at least one, to reach the linear stage
    ranker, pseudo, unlabelled = fit(X, pos, neg, f_a=f_a)
    wanted = n_pseudo_negatives(len(pos), len(neg), f_a)
    assert len(pseudo) == min(wanted, len(unlabelled) // 2)
    assert len(set(pseudo.tolist())) == len(pseudo)


def test_pseudo_negatives_come_from_the_bottom_half_of_the_unlabelled_and_are_unlabelled():
    rng = np.random.default_rng(3)
    X, is_pos = two_clusters(30, 400)
    pos, neg = np.flatnonzero(is_pos)[:4], np.flatnonzero(~is_pos)[:6]
    current = rng.normal(size=len(X)).astype(np.float32)  # the class's previous scores
    for seed in range(5):
        _, pseudo, unlabelled = fit(X, pos, neg, scores=current, f_a=30, seed=seed)
        assert len(pseudo) == min(n_pseudo_negatives(4, 6, 30), len(unlabelled) // 2)
        bottom_cut = np.sort(current[unlabelled])[len(unlabelled) // 2 - 1]
        assert np.all(current[pseudo] <= bottom_cut)
        assert not set(pseudo.tolist()) & set(np.r_[pos, neg].tolist())
        assert set(pseudo.tolist()) <= set(unlabelled.tolist())


def test_without_previous_scores_the_centroid_ranking_picks_the_bottom():
    X, is_pos = two_clusters(30, 400)
    pos, neg = np.flatnonzero(is_pos)[:5], np.flatnonzero(~is_pos)[:5]
    _, pseudo, unlabelled = fit(X, pos, neg, scores=None, f_a=20)
    centroid = X[pos].mean(axis=0)
    sim = X @ (centroid / np.linalg.norm(centroid))
    bottom_cut = np.sort(sim[unlabelled])[len(unlabelled) // 2 - 1]
    assert len(pseudo) > 0
    assert np.all(sim[pseudo] <= bottom_cut + 1e-6)
    assert not is_pos[pseudo].any()  # never a pseudo-labelled positive here


def test_pseudo_negatives_are_uniform_over_the_bottom_and_never_above_it():
    scores = np.arange(100, dtype=np.float32)[::-1].copy()  # row i scores 99 - i
    unlabelled = np.arange(0, 100, 2)  # 50 unlabelled rows; bottom half: the 25 lowest
    bottom = set(unlabelled[-25:].tolist())
    rng = np.random.default_rng(0)
    counts = np.zeros(100, int)
    for _ in range(500):
        draw = sample_pseudo_negatives(scores, unlabelled, 5, rng, 0.5, 0)
        assert len(draw) == 5 and len(set(draw.tolist())) == 5
        assert set(draw.tolist()) <= bottom
        counts[draw] += 1
    hits = counts[sorted(bottom)]
    assert hits.sum() == 2500
    assert hits.min() > 50 and hits.max() < 150  # uniform: 100 expected per row


def test_sample_pseudo_negatives_edge_cases():
    rng = np.random.default_rng(0)
    scores = np.linspace(0, 1, 10)
    assert len(sample_pseudo_negatives(scores, np.arange(10), 0, rng, 0.5, 0)) == 0
    assert len(sample_pseudo_negatives(scores, np.arange(0), 5, rng, 0.5, 0)) == 0
    one = sample_pseudo_negatives(scores, np.array([4]), 5, rng, 0.5, 0)
    assert one.tolist() == [4]  # a single unlabelled row is its own bottom half
    full = sample_pseudo_negatives(scores, np.arange(10), 100, rng, bottom_fraction=1.0, keep_top=0)
    assert sorted(full.tolist()) == list(range(10))


# --- the linear model -----------------------------------------------------------------------


def test_linear_ranker_separates_two_separable_clusters():
    X, is_pos = two_clusters(60, 300, spread=0.2, seed=1)
    rng = np.random.default_rng(1)
    train = rng.permutation(len(X))[:120]
    held_out = np.setdiff1d(np.arange(len(X)), train)
    assert is_pos[train].any() and is_pos[held_out].any()
    ranker = LinearRanker(C=10.0).fit(X[train], is_pos[train].astype(float))
    s = ranker.score(X[held_out])
    assert s[is_pos[held_out]].min() > 0 > s[~is_pos[held_out]].max()


def test_linear_ranker_needs_both_classes():
    X, _ = two_clusters(5, 5)
    with pytest.raises(ValueError, match="both"):
        LinearRanker(C=10.0).fit(X, np.ones(len(X)))


def test_class_weights_make_rare_positives_count():
    """Inverse-frequency weights predict more of a rare class than unweighted fitting."""
    X, is_pos = two_clusters(8, 600, spread=0.9, seed=2)
    y = is_pos.astype(float)
    balanced = LinearRanker(C=1.0).fit(X, y).score(X)
    plain = LinearRanker(C=1.0, class_weight=None).fit(X, y).score(X)
    assert np.sum(balanced[is_pos] > 0) > np.sum(plain[is_pos] > 0)
    assert np.sum(balanced > 0) > np.sum(plain > 0)


def test_folded_class_weights_give_sklearns_balanced_model():
    """The ranker folds `class_weight="balanced"` into the sample weights itself: the same
    model as scikit-learn's, human labels weighted apart from pseudo-negatives included."""
    X, is_pos = two_clusters(12, 400, spread=0.8, seed=3)
    y = is_pos.astype(float)
    w = np.where(np.arange(len(y)) < 50, 2.0, 1.0)
    ours = LinearRanker(C=10.0).fit(X, y, sample_weight=w)
    ref = LogisticRegression(C=10.0, class_weight="balanced", max_iter=200).fit(
        X, y, sample_weight=w
    )
    np.testing.assert_allclose(ours.coef_, ref.coef_[0], rtol=1e-5, atol=1e-6)
    assert ours.intercept_ == pytest.approx(float(ref.intercept_[0]), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="class_weight"):
        LinearRanker(C=10.0, class_weight={1: 5.0}).fit(X, y)


def test_the_linear_fit_runs_on_one_blas_thread(monkeypatch):
    """Two OpenBLAS pools (numpy's and scipy's) with two threads each make a step at 100k
    ~1.9x slower; the fit pins every BLAS library to one thread, and lets go after."""
    seen = []
    fit = LogisticRegression.fit

    def recording_fit(self, *args, **kwargs):
        seen.extend(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", recording_fit)
    X, is_pos = two_clusters(10, 50)
    with threadpool_limits(2):
        LinearRanker(C=10.0).fit(X, is_pos.astype(float))
        after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert seen and set(seen) == {1}
    assert set(after) == {2}


def test_warm_started_refit_is_in_place_and_matches_a_cold_fit():
    X, is_pos = two_clusters(40, 600, spread=0.6, seed=4)
    pos, neg = np.flatnonzero(is_pos), np.flatnonzero(~is_pos)
    first, _, _ = fit(X, pos[:5], neg[:5], f_a=20, seed=0)
    # one more label each; the same rng seed gives the same pseudo-negatives to both fits
    warm, pseudo_w, _ = fit(X, pos[:6], neg[:6], f_a=20, seed=1, previous=first)
    cold, pseudo_c, _ = fit(X, pos[:6], neg[:6], f_a=20, seed=1)
    assert warm is first  # refitted in place
    assert cold is not first
    np.testing.assert_array_equal(pseudo_w, pseudo_c)
    r = np.corrcoef(warm.score(X), cold.score(X))[0, 1]
    assert r > 0.99
    # a previous ranker with another C is not reused
    other, _, _ = fit(X, pos[:6], neg[:6], f_a=20, seed=1, previous=first, C=0.5)
    assert other is not first and other.C == 0.5


def test_a_previous_cosine_ranker_is_replaced_by_a_linear_one():
    X, is_pos = two_clusters(20, 100)
    pos, neg = np.flatnonzero(is_pos)[:3], np.flatnonzero(~is_pos)[:3]
    centroid, _, _ = fit(X, pos, [])
    ranker, _, _ = fit(X, pos, neg, previous=centroid)
    assert isinstance(ranker, LinearRanker)


def test_pseudo_negatives_never_come_from_the_kept_top():
    scores = np.arange(10, dtype=np.float32)  # row i scores i: the top rows are 9, 8, ...
    rng = np.random.default_rng(0)
    drawn = sample_pseudo_negatives(scores, np.arange(10), 100, rng, 0.95, keep_top=6)
    assert sorted(drawn.tolist()) == [0, 1, 2, 3]  # 95% would be 9 rows; the top 6 stay out
    big = np.arange(1000, dtype=np.float32)
    wide = sample_pseudo_negatives(big, np.arange(1000), 10_000, rng, 0.95, keep_top=6)
    assert len(wide) == 950 and wide.max() < 950  # on a large pool the share decides


def test_project_of_a_float16_matrix_is_float32_chunk_by_chunk():
    """A compact pool is multiplied in float32 chunks: the same product, whatever the chunk."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 16)).astype(np.float16)
    W, b = rng.normal(size=(16, 3)).astype(np.float32), np.array([0.5, -1.0, 0.0])
    exact = X.astype(np.float64) @ W + b
    for chunk in (7, 256, 4096):
        out = project(X, W, b, chunk=chunk)
        assert out.dtype == np.float32 and out.shape == (1000, 3)
        np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-4)
    v = project(X, W[:, 0], 2.0, chunk=100)
    assert v.shape == (1000,)
    np.testing.assert_allclose(v, exact[:, 0] - 0.5 + 2.0, rtol=1e-5, atol=1e-4)
