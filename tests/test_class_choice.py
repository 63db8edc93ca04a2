"""Which class asks first (model/class_choice.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from model.class_choice import calibrated_choice, platt_fit
from model.prioritiser import RankerConfig


def _asks(slope: float, offsets: tuple[float, ...], n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for b in offsets:
        logits = rng.normal(3.0, 1.5, n)
        p = 1 / (1 + np.exp(-(slope * logits + b)))
        out.append((logits, (rng.random(n) < p).astype(float)))
    return out


def test_platt_fit_is_the_logistic_regression_under_a_weak_prior():
    asks = _asks(0.5, (-2.0, 0.0, 1.0), 300)
    theta, _ = platt_fit(asks, offset_sd=1e3, slope_sd=1e3)
    X = np.vstack(
        [
            np.column_stack([lg, np.tile(np.eye(3)[c], (len(lg), 1))])
            for c, (lg, _) in enumerate(asks)
        ]
    )
    y = np.concatenate([h for _, h in asks])
    sk = LogisticRegression(C=1e8, fit_intercept=False, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(theta, sk.coef_[0], atol=1e-3)


def test_without_picks_a_class_keeps_the_prior():
    theta, cov = platt_fit([(np.empty(0), np.empty(0))] * 2, offset_sd=1.5)
    np.testing.assert_allclose(theta, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), [1.0, 1.5, 1.5])


def test_a_class_that_ran_dry_gives_way():
    """Both classes hit 19 of 20 picks at logit ~4.6 (a recent-precision bandit cannot tell
    them apart); now A's first choice has logit 1 (it has found its positives) and B's 4.5:
    the calibrated choice asks B."""
    history = (np.full(20, 4.6), np.r_[np.ones(19), 0.0])
    mean, head = calibrated_choice(np.array([1.0, 4.5]), [history, history], 1.5, None)
    assert head == 1 and mean[0] < mean[1] - 0.3


def test_a_class_whose_logits_run_high_is_discounted():
    """A's picks at logit 5 hit half the time, B's at logit 3 always: B's head goes first
    although A's logit is higher."""
    a = (np.full(30, 5.0), np.tile([1.0, 0.0], 15))
    b = (np.full(30, 3.0), np.ones(30))
    mean, head = calibrated_choice(np.array([5.0, 3.0]), [a, b], 1.5, None)
    assert head == 1 and mean[0] < 0.6 < mean[1]


def test_thompson_draws_explore_while_the_evidence_is_thin():
    """Same logits; B's picks hit more often. After 8 picks each A still gets some turns;
    after 30 it gets (almost) none."""
    rng = np.random.default_rng(0)
    heads = np.array([3.0, 3.0])

    def share_b(hits_a: list[float], hits_b: list[float]) -> float:
        asks = [(np.full(len(h), 3.0), np.array(h)) for h in (hits_a, hits_b)]
        return float(np.mean([calibrated_choice(heads, asks, 1.5, rng)[1] for _ in range(400)]))

    thin = share_b([1] * 5 + [0] * 3, [1] * 7 + [0])
    thick = share_b([1, 0, 0] * 10, [1] * 27 + [0] * 3)
    assert 0.55 < thin < 0.95 and thick > 0.97


def test_unknown_class_choice_is_refused():
    with pytest.raises(ValueError, match="class_choice"):
        RankerConfig(class_choice="bandit")  # removed: it measured no gain
