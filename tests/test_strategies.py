"""Query strategies per class and their combination into one queue."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.prioritiser import RankerConfig
from model.strategies import (
    STRATEGIES,
    ClassContext,
    adaptive,
    combine,
    information_density,
    margin,
    most_likely_positive,
)


@pytest.fixture
def scores() -> np.ndarray:
    """Both signs, so the most-likely-positive keys (-s) and margin keys (|s|) differ."""
    return np.random.default_rng(0).normal(size=50).astype(np.float32)


def is_positive_order(keys, scores) -> bool:
    return np.array_equal(keys, -scores)


def is_margin_order(keys, scores) -> bool:
    return np.array_equal(keys, np.abs(scores))


def test_the_two_orders_are_what_they_say(scores):
    ctx = ClassContext(1, 1, linear=True)
    keys = most_likely_positive(scores, ctx)
    assert np.argmin(keys) == np.argmax(scores)
    keys = margin(scores, ctx)
    assert np.argmin(keys) == np.argmin(np.abs(scores))
    assert not is_margin_order(-scores, scores)  # the fixture tells the two apart


def test_adaptive_switches_to_margin_exactly_when_positives_reach_negatives(scores):
    for n_pos in range(8):
        for n_neg in range(8):
            keys = adaptive(scores, ClassContext(n_pos, n_neg, linear=True))
            if n_pos < n_neg:
                assert is_positive_order(keys, scores), (n_pos, n_neg)
            else:
                assert is_margin_order(keys, scores), (n_pos, n_neg)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_cosine_rankers_never_use_the_margin(name, scores):
    strategy = STRATEGIES[name]
    for s in (scores, -np.abs(scores), np.abs(scores)):
        for n_pos, n_neg in [(0, 0), (0, 5), (5, 0), (5, 5), (9, 2)]:
            keys = strategy(s, ClassContext(n_pos, n_neg, linear=False))
            assert is_positive_order(keys, s), (name, n_pos, n_neg)


def test_positive_and_margin_strategies_on_a_linear_ranker(scores):
    ctx = ClassContext(2, 9, linear=True)
    assert is_positive_order(STRATEGIES["positive"](scores, ctx), scores)
    assert is_margin_order(STRATEGIES["margin"](scores, ctx), scores)


def test_unknown_strategy_name_raises_and_names_the_choices():
    with pytest.raises(ValueError, match="most_uncertain.*positive"):
        RankerConfig(strategy="most_uncertain")
    with pytest.raises(ValueError, match="entropy"):  # removed: it ordered as the margin
        RankerConfig(strategy="adaptive", uncertainty="entropy")


def brute_force_combine(keys, n, tiebreak=None, class_order=None):
    """Full per-class ranks; sort by (best rank, order of its class, tiebreak, position)."""
    m = len(keys[0])
    best = np.full(m, np.iinfo(np.int64).max)
    cls = np.zeros(m, dtype=np.int64)
    for c, k in enumerate(keys):
        rank = np.empty(m, dtype=np.int64)
        rank[np.argsort(k, kind="stable")] = np.arange(m)
        cls = np.where(rank < best, c, cls)
        best = np.minimum(best, rank)
    tb = np.zeros(m) if tiebreak is None else tiebreak
    co = np.zeros(len(keys)) if class_order is None else class_order
    order = sorted(range(m), key=lambda i: (best[i], co[cls[i]], tb[i], i))[:n]
    return np.array(order, dtype=np.int64), best[order], cls[order]


@pytest.mark.parametrize("n", [1, 2, 5, 17, 60, 200])
@pytest.mark.parametrize("extras", [False, True])
def test_combine_equals_brute_force(n, extras):
    rng = np.random.default_rng(n)
    for _ in range(60):
        m = int(rng.integers(1, 120))
        k = int(rng.integers(1, 6))
        keys = [rng.normal(size=m) for _ in range(k)]
        tiebreak = rng.normal(size=m) if extras else None
        class_order = rng.normal(size=k) if extras else None
        got = combine(keys, n, tiebreak=tiebreak, class_order=class_order)
        want = brute_force_combine(keys, n, tiebreak, class_order)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        assert len(got[0]) == min(n, m) == len(set(got[0].tolist()))


def test_combine_interleaves_the_classes_fairly():
    # class 0 wants items 0, 1, 2 ...; class 1 wants items 9, 8, 7 ...
    keys = [np.arange(10.0), -np.arange(10.0)]
    order, ranks, classes = combine(keys, 4)
    assert order.tolist() == [0, 9, 1, 8]
    assert ranks.tolist() == [0, 0, 1, 1]
    assert classes.tolist() == [0, 1, 0, 1]


def test_class_order_decides_which_class_asks_first():
    keys = [np.arange(10.0), -np.arange(10.0)]
    order, _, classes = combine(keys, 4, class_order=np.array([0.5, -0.5]))
    assert order.tolist() == [9, 0, 8, 1] and classes.tolist() == [1, 0, 1, 0]


def test_combine_with_nothing_to_choose():
    assert len(combine([], 5)[0]) == 0
    assert len(combine([np.array([])], 5)[0]) == 0
    assert len(combine([np.arange(4.0)], 0)[0]) == 0


def test_information_density_on_a_uniform_density_orders_like_the_margin(scores):
    """Entropy is monotone in |score|: without density to weigh it, the margin's order."""
    ctx = ClassContext(3, 3, linear=True, density=np.full(len(scores), 0.5))
    np.testing.assert_array_equal(
        np.argsort(information_density(scores, ctx), kind="stable"),
        np.argsort(np.abs(scores), kind="stable"),
    )


def test_information_density_prefers_dense_candidates_among_equally_uncertain():
    scores = np.array([0.0, 0.0, 3.0])
    ctx = ClassContext(3, 3, linear=True, density=np.array([0.1, 0.9, 0.9]))
    assert np.argsort(information_density(scores, ctx)).tolist()[0] == 1
    with pytest.raises(ValueError, match="density"):
        information_density(scores, ClassContext(3, 3, linear=True))


def test_adaptive_uses_the_configured_uncertainty_after_the_switch():
    scores = np.array([0.0, 0.1, 3.0])
    density = np.array([0.01, 1.0, 1.0])
    ctx = ClassContext(5, 5, linear=True, uncertainty="information_density", density=density)
    assert np.argmin(adaptive(scores, ctx)) == 1  # margin alone would pick 0
    assert np.argmin(adaptive(scores, replace(ctx, uncertainty="margin"))) == 0
