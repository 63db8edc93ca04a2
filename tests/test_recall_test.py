"""The verified recall (model.recall_test): right at its level, and its price said first."""

from __future__ import annotations

import numpy as np
import pytest

from model.estimate import Pick
from model.recall_test import sample_test, second_phase


@pytest.mark.parametrize("missing", [3, 5, 12])
def test_a_recall_short_of_the_target_is_seldom_verified(missing):
    """40 found and `missing` left among 3,000: recall is 40/43 = 0.93 or less, short of
    0.95 (which allows 2 misses). Read after every uniform draw, the test may verify a wrong
    recall in at most 5% of second phases (plus the noise of 400: 0.03)."""
    rng = np.random.default_rng(missing)
    left = np.arange(3000) < missing
    runs = [second_phase(left, 40, rng, 0.95) for _ in range(400)]
    assert np.mean([recall < 0.95 for _, recall in runs]) <= 0.05 + 0.03
    # the price of ruling out a few hidden among thousands: most of the pool
    assert np.median([draws for draws, _ in runs]) > 0.5 * 3000


def test_a_phase_that_starts_far_below_the_target_is_verified_only_near_it():
    """From recall 0.6 the phase finds the rest on the way, and is read at every draw as it
    passes through the recalls just short of 0.95: the hardest case for a test read often."""
    rng = np.random.default_rng(7)
    left = np.arange(5000) < 40  # 60 found, 40 left: recall 0.6
    runs = [second_phase(left, 60, rng, 0.95) for _ in range(300)]
    assert np.mean([recall < 0.95 for _, recall in runs]) <= 0.05 + 0.035


def test_a_complete_class_is_verified_after_the_labels_it_said():
    """Nothing left among 3,000 after 40 found: the count said beforehand is the draws the
    second phase takes, and the test then verifies."""
    history = [Pick(True)] * 40 + [Pick(False, 0.0)] * 100
    verified, more = sample_test(history, 3000, 0.95)
    assert not verified and 0.6 * 3000 < more < 0.8 * 3000
    draws, recall = second_phase(np.zeros(3000, bool), 40, np.random.default_rng(0), 0.95)
    assert recall == 1.0 and draws == more
    sample = [Pick(False, 0.0, True, 0.001, True, 3000 - i, 3140) for i in range(more)]
    assert sample_test(history + sample, 3000 - more, 0.95) == (True, 0)
    assert sample_test(history + sample[:-1], 3000 - more + 1, 0.95) == (False, 1)


def test_a_hit_in_the_sample_raises_the_price():
    history = [Pick(True)] * 40 + [Pick(False, 0.0)] * 100
    misses = [Pick(False, 0.0, True, 0.001, True, 3000 - i, 3140) for i in range(500)]
    hit = [Pick(True, 0.0, True, 0.001, True, 2500, 3140)]
    _, after_misses = sample_test(history + misses, 2500, 0.95)
    _, after_a_hit = sample_test(history + misses + hit, 2499, 0.95)
    assert after_a_hit > after_misses


def test_draws_of_the_ranked_half_never_count_as_a_sample():
    history = [Pick(True)] * 40 + [Pick(False, 0.0, True, 0.01, False, 3000)] * 2500
    assert sample_test(history, 500, 0.95)[0] is False


def test_a_lower_target_is_cheaper_to_verify():
    history = [Pick(True)] * 40 + [Pick(False, 0.0)] * 100
    assert sample_test(history, 3000, 0.8)[1] < sample_test(history, 3000, 0.95)[1]


def test_an_import_after_the_sample_restarts_it():
    """1,000 tasks imported after 2,100 uniform misses: the draws never saw them, so the
    sample starts again and the price is that of a pool with no sample."""
    history = [Pick(True)] * 40 + [Pick(False, 0.0)] * 100
    sample = [Pick(False, 0.0, True, 0.001, True, 3000 - i, 3140) for i in range(2100)]
    assert sample_test(history + sample, 900, 0.95)[0] is True
    grown = sample_test(history + sample, 1900, 0.95)  # the pool now holds 1,000 more
    assert grown == sample_test(history + [Pick(False, 0.0)] * 2100, 1900, 0.95)
    assert grown[0] is False
