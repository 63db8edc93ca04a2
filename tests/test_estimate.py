"""The estimate of rare items left (model.estimate), through its public functions.

The synthetic worlds draw each task's class from a known logistic calibration of its score,
then label down the ranking as the loop does (the top-scored unlabelled task each time),
with an optional audit share. The truth is known, so coverage and errors can be counted.
"""

from __future__ import annotations

import numpy as np
import pytest

from model.estimate import (
    Pick,
    audit_probabilities,
    draw_audit,
    estimate,
    expected_wait,
)
from model.rankers import sigmoid
from model.recall_test import sample_test


def world(
    seed: int,
    n: int = 4000,
    labels: int = 150,
    audit_rate: float = 0.0,
    slope: float = 1.5,
    offset: float = -7.0,
    tail: int = 0,
):
    """(history, unlabelled scores, true positives, the rest of the ranking's classes).

    `tail` positives are added at the bottom of the ranking, where no calibration of the
    head predicts them: a ranker that missed a whole group."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 2, n)
    y = rng.random(n) < sigmoid(slope * s + offset)
    if tail:
        y[np.argsort(s)[:tail]] = True
    labelled = np.zeros(n, dtype=bool)
    seeds = rng.choice(np.flatnonzero(y), 5, replace=False)
    labelled[seeds] = True
    history = [Pick(True) for _ in seeds]
    order = iter(np.argsort(-s))
    for _ in range(labels):
        if rng.random() < audit_rate:
            unlabelled = np.flatnonzero(~labelled)
            draw = draw_audit(sigmoid(s[unlabelled]), rng)
            i = unlabelled[draw.index]
            pick = Pick(bool(y[i]), float(s[i]), True, draw.q, draw.uniform, len(unlabelled))
        else:
            i = next(r for r in order if not labelled[r])
            pick = Pick(bool(y[i]), float(s[i]))
        history.append(pick)
        labelled[i] = True
    rest = y[np.argsort(-s)][~labelled[np.argsort(-s)]]
    return history, s[~labelled], int(y.sum()), rest


@pytest.mark.parametrize("audit_rate", [0.0, 0.1])
def test_the_interval_holds_the_true_count_at_its_level(audit_rate):
    hits, errors = [], []
    for seed in range(60):
        history, scores, truth, _ = world(seed, audit_rate=audit_rate)
        e = estimate(history, scores, seed=seed)
        assert e.low <= e.total <= e.high
        hits.append(e.low <= truth <= e.high)
        errors.append(abs(e.total - truth) / truth)
    assert np.mean(hits) >= 0.8
    # the median: an audit hit deep in the tail weighs 1/q, so the mean is heavy-tailed
    # (over 400 worlds: median 0.15, mean 0.32, both with the audit)
    assert np.median(errors) < 0.25


def test_a_naive_count_from_ranked_labels_is_far_off_and_the_estimate_is_not():
    """The labels' share of positives, scaled to the pool, counts the head of the ranking as
    if it were the pool: the selection the estimate corrects."""
    history, scores, truth, _ = world(0, labels=200)
    asked = [p for p in history if p.score is not None]
    naive = np.mean([p.positive for p in asked]) * (len(history) + len(scores))
    e = estimate(history, scores)
    assert abs(naive - truth) / truth > 1.0
    assert abs(e.total - truth) / truth < 0.3


def test_recall_and_its_bound_follow_the_interval():
    history, scores, _, _ = world(1)
    e = estimate(history, scores)
    assert e.found == sum(p.positive for p in history)
    assert e.recall == pytest.approx(e.found / e.total)
    assert e.recall_low == pytest.approx(e.found / e.high)
    assert 0 < e.recall_low <= e.recall <= 1


def test_labels_to_next_find_matches_the_wait_down_the_ranking():
    predicted, waited = [], []
    for seed in range(40):
        history, scores, _, rest = world(seed, labels=100)
        e = estimate(history, scores, seed=seed)
        if e.labels_to_next_find is None or not rest.any():
            continue
        predicted.append(e.labels_to_next_find)
        waited.append(int(np.argmax(rest)) + 1)
    assert len(predicted) >= 30
    assert 0.6 < np.mean(waited) / np.mean(predicted) < 1.6


# a ranking that separates the class well: labelled deep enough, nearly all are found
SEPARATED = {"n": 3000, "labels": 400, "slope": 4.0, "offset": -14.0}


@pytest.mark.parametrize("seed", range(3))
def test_stop_fires_once_nearly_everything_is_found_with_an_audit_sample(seed):
    history, scores, truth, _ = world(seed, audit_rate=0.1, **SEPARATED)
    e = estimate(history, scores, seed=seed)
    assert e.found >= 0.95 * truth
    assert e.stop
    assert e.recall_low >= 0.95


def test_stop_needs_the_audit_sample():
    history, scores, truth, _ = world(0, **SEPARATED)
    e = estimate(history, scores)
    assert e.found >= 0.95 * truth and e.recall_low >= 0.95  # the bound is reached ...
    assert not e.stop  # ... but the tail was never sampled
    assert "audit" in e.reason


@pytest.mark.parametrize("seed", range(10))
def test_stop_never_fires_when_few_were_found(seed):
    """A group of positives at the bottom of the ranking: the audit sample lands among them
    now and then, and the rule must not declare recall reached while they are missing."""
    history, scores, truth, _ = world(seed, n=1500, labels=400, audit_rate=0.1, tail=60)
    e = estimate(history, scores, seed=seed)
    assert e.found < 0.95 * truth
    assert not e.stop


def test_stop_never_fires_early_in_a_plain_run():
    for seed in range(20):
        history, scores, truth, _ = world(seed, labels=60, audit_rate=0.1)
        e = estimate(history, scores, seed=seed)
        if e.found < 0.95 * truth:
            assert not e.stop


# --- what cannot be estimated: None and a reason, never a number or an exception -------------


def assert_unknown(e, word: str) -> None:
    numbers = (e.total, e.low, e.high, e.recall, e.recall_low, e.labels_to_next_find)
    assert all(v is None for v in numbers)
    assert not e.stop
    assert word in e.reason


def test_no_positive_yet_is_unknown():
    history = [Pick(False, float(s)) for s in np.linspace(2, 1, 30)]
    e = estimate(history, np.linspace(1, -3, 500))
    assert e.found == 0
    assert_unknown(e, "no positive")


def test_an_empty_pool_is_unknown():
    assert_unknown(estimate([], np.array([])), "empty")


def test_a_single_class_project_is_unknown():
    """Every label positive (a project with one category): no negative to calibrate on."""
    history = [Pick(True)] * 5 + [Pick(True, 1.0)] * 3
    e = estimate(history, np.zeros(100))
    assert e.found == 8
    assert_unknown(e, "no negative")


def test_picks_that_all_missed_are_unknown():
    history = [Pick(True)] * 5 + [Pick(False, float(s)) for s in np.linspace(3, 1, 20)]
    e = estimate(history, np.linspace(1, -3, 500))
    assert e.found == 5
    assert_unknown(e, "all hits or all misses")


def test_a_fully_labelled_pool_has_an_exact_count():
    history = [Pick(True)] * 5 + [Pick(i % 3 == 0, 1.0 - i / 10) for i in range(20)]
    e = estimate(history, np.array([]))
    assert e.total == e.low == e.high == e.found == 5 + 7
    assert e.recall == 1.0 and e.stop


def test_non_finite_scores_are_refused():
    history = [Pick(True), Pick(False, 0.0), Pick(True, 1.0)]
    with pytest.raises(ValueError, match="finite"):
        estimate(history, np.array([0.0, np.nan]))


# --- the audit sample's draw ---------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.1, 0.5, 1.0])
def test_audit_probabilities_are_a_defensive_mixture(share):
    p = np.random.default_rng(0).beta(0.3, 5, size=1000)
    q = audit_probabilities(p, share)
    assert q.sum() == pytest.approx(1.0)
    assert np.all(q >= share / len(p) - 1e-15)  # every task can be drawn
    assert np.corrcoef(p, q)[0, 1] == pytest.approx(1.0) or share == 1.0
    assert q[np.argmax(p)] >= q[np.argmin(p)]


def test_audit_probabilities_without_any_signal_are_uniform():
    q = audit_probabilities(np.zeros(50))
    assert np.allclose(q, 1 / 50)


@pytest.mark.parametrize(
    "p, share", [(np.array([]), 0.5), (np.array([0.1, -0.2]), 0.5), (np.ones(3), 0.0)]
)
def test_audit_probabilities_refuse_bad_input(p, share):
    with pytest.raises(ValueError):
        audit_probabilities(p, share)


def test_draw_audit_draws_by_its_probabilities():
    p = np.array([0.9, 0.5, 0.05, 0.0])
    q = audit_probabilities(p)
    rng = np.random.default_rng(0)
    draws = [draw_audit(p, rng) for _ in range(4000)]
    freq = np.bincount([d.index for d in draws], minlength=len(p)) / len(draws)
    assert np.allclose(freq, q, atol=0.03)
    assert all(d.q == pytest.approx(q[d.index]) for d in draws[:50])
    # the uniform half, alone, is a uniform sample: it reaches the task scored 0 as often
    uniform = [d.index for d in draws if d.uniform]
    assert len(uniform) == pytest.approx(2000, abs=150)
    assert np.allclose(np.bincount(uniform, minlength=len(p)) / len(uniform), 0.25, atol=0.04)


def test_the_estimate_carries_the_sample_test():
    history, scores, _, _ = world(3, audit_rate=0.3, labels=200)
    e = estimate(history, scores)
    assert not e.verified
    assert e.random_labels_to_verify == sample_test(history, len(scores), 0.95)[1] > 0
    assert estimate([Pick(False, 0.0)] * 3, np.zeros(10)).random_labels_to_verify is None


def test_labels_to_the_next_find_over_grouped_tasks_equal_those_over_each_task():
    """The estimate groups the ranking's tail into levels of equal probability: the wait
    over (probability, count) levels is the wait over the tasks one by one."""
    rng = np.random.default_rng(4)
    p = np.sort(rng.uniform(0, 0.02, 50))[::-1]
    counts = rng.integers(1, 40, 50)
    one_by_one = expected_wait(np.repeat(p, counts))
    assert one_by_one is not None
    assert expected_wait(p, counts.astype(float)) == pytest.approx(one_by_one, rel=1e-9)
    assert expected_wait(np.full(3, 0.01)) is None  # a hit is unlikely anywhere in it
