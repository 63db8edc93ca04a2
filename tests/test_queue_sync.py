"""The push planner: Label Studio's order must equal the queue, with as few writes as possible."""

from __future__ import annotations

import numpy as np
import pytest

from backend.queue_sync import longest_increasing, plan_push


def served_order(scores: dict[int, float]) -> list[int]:
    """What Label Studio's uncertainty sampling serves: lowest score first."""
    return sorted(scores, key=lambda t: scores[t])


def first_push(queue: list[int]) -> dict[int, float]:
    return plan_push({}, queue, set()).scores


def test_first_push_writes_the_queue_in_order():
    plan = plan_push({}, [5, 3, 9], set())
    assert set(plan.writes) == {5, 3, 9} and plan.deletes == []
    assert served_order(plan.scores) == [5, 3, 9]
    assert all(0 < s < 1 for s in plan.scores.values())


def test_unchanged_queue_writes_nothing():
    pushed = first_push(list(range(100)))
    plan = plan_push(pushed, list(range(100)), set())
    assert plan.writes == {} and plan.deletes == []


def test_labelling_the_head_and_appending_one_writes_one():
    pushed = first_push(list(range(100)))
    plan = plan_push(pushed, [*range(1, 100), 100], labelled={0})
    assert plan.writes.keys() == {100} and plan.deletes == []
    assert served_order(plan.scores)[:100] == [*range(1, 100), 100]


def test_moving_one_task_to_the_front_writes_one():
    pushed = first_push(list(range(50)))
    plan = plan_push(pushed, [42, *[t for t in range(50) if t != 42]], set())
    assert plan.writes.keys() == {42}
    assert served_order(plan.scores)[0] == 42


def test_a_dropped_task_ahead_of_the_queue_is_deleted_and_one_behind_is_kept():
    pushed = first_push(list(range(10)))
    plan = plan_push(pushed, [1, 2, 3, 4, 5, 6, 7, 8], labelled=set())  # 0 and 9 dropped
    assert plan.deletes == [0]
    assert 9 in plan.scores and served_order(plan.scores)[-1] == 9


@pytest.mark.parametrize("seed", range(20))
def test_random_reorders_keep_the_order_exact(seed):
    rng = np.random.default_rng(seed)
    pushed = first_push(list(rng.permutation(60)))
    for _ in range(30):
        queue = [int(t) for t in rng.choice(80, size=40, replace=False)]
        labelled = {int(t) for t in rng.choice(80, size=5, replace=False)} - set(queue)
        plan = plan_push(pushed, queue, labelled)
        served = [t for t in served_order(plan.scores) if t in set(queue)]
        assert served == queue
        ahead = [t for t in plan.scores if t not in queue]
        assert all(plan.scores[t] > plan.scores[queue[-1]] for t in ahead)
        assert not set(plan.deletes) & labelled
        pushed = plan.scores


def test_many_inserts_at_one_spot_fall_back_to_renumbering():
    pushed = first_push([0, 1])
    for new in range(2, 80):
        plan = plan_push(pushed, [0, new, *[t for t in pushed if t != 0]], set())
        assert served_order(plan.scores)[:2] == [0, new]
        pushed = plan.scores
    assert served_order(pushed)[0] == 0


def test_longest_increasing_matches_brute_force_length():
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = list(rng.random(9))
        got = longest_increasing(values)
        assert all(values[a] < values[b] for a, b in zip(got, got[1:], strict=False))
        best = 0
        for mask in range(1 << 9):
            sub = [values[i] for i in range(9) if mask >> i & 1]
            if all(a < b for a, b in zip(sub, sub[1:], strict=False)):
                best = max(best, len(sub))
        assert len(got) == best
