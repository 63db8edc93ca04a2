"""LabelState: per-target positive and negative sets derived from human labels."""

from __future__ import annotations

import numpy as np
import pytest

from model.labels import LabelState

TARGETS = ["artist", "company"]


@pytest.fixture
def state() -> LabelState:
    s = LabelState(list(TARGETS))
    s.set_label(1, "artist")
    s.set_label(2, "company")
    s.set_label(3, "village")  # not a target: a negative for every target
    s.set_label(4, "artist")
    return s


def test_positives_and_negatives_are_derived_per_target(state):
    assert state.positives("artist") == {1, 4}
    assert state.negatives("artist") == {2, 3}
    assert state.positives("company") == {2}
    assert state.negatives("company") == {1, 3, 4}


def test_relabel_moves_a_task_between_sets_for_every_target(state):
    state.set_label(1, "company")
    assert state.positives("artist") == {4}
    assert state.negatives("artist") == {1, 2, 3}
    assert state.positives("company") == {1, 2}
    assert state.negatives("company") == {3, 4}
    state.set_label(2, "village")
    assert 2 not in state.positives("company")
    for t in TARGETS:
        assert 2 in state.negatives(t)


@pytest.mark.parametrize("call", ["positives", "negatives"])
def test_unknown_target_raises(state, call):
    with pytest.raises(KeyError, match="sculptor"):
        getattr(state, call)("sculptor")


def test_counts(state):
    assert state.counts() == {
        "artist": {"positives": 2, "negatives": 2},
        "company": {"positives": 1, "negatives": 3},
    }


@pytest.mark.parametrize("targets", [[], ["a", "b", "a"]])
def test_targets_must_be_given_and_distinct(targets):
    with pytest.raises(ValueError):
        LabelState(targets)


def test_random_event_sequences_keep_the_sets_consistent():
    """Against a plain dict of task -> label, after every create / update / delete (a delete
    rebuilds the state from the labels left, as each retrain does from the store)."""
    rng = np.random.default_rng(0)
    vocabulary = [*TARGETS, "village", "film"]
    state, truth = LabelState(list(TARGETS)), {}
    for _ in range(400):
        task = int(rng.integers(0, 30))
        if rng.random() < 0.25:
            truth.pop(task, None)
            state = LabelState(list(TARGETS))
            for t, label in truth.items():
                state.set_label(t, label)
        else:
            label = vocabulary[rng.integers(len(vocabulary))]
            state.set_label(task, label)
            truth[task] = label
        for t in TARGETS:
            pos, neg = state.positives(t), state.negatives(t)
            assert pos == {k for k, v in truth.items() if v == t}
            assert neg == {k for k, v in truth.items() if v != t}
            assert not pos & neg


def test_recent_asks_carry_the_logit_the_class_had_when_it_asked():
    state = LabelState(["a", "b"])
    for task, asked, logit, label in [
        (1, "a", 2.0, "a"),
        (2, "a", None, "x"),
        (3, "a", -1.0, "x"),
        (4, "b", 0.5, "b"),
    ]:
        state.record_query(task, asked, logit)
        state.set_label(task, label)
    state.record_query(5, "a", 9.0)  # asked, not labelled yet: no evidence
    logits, hits = state.recent_asks("a", window=10)
    np.testing.assert_array_equal(logits, [2.0, -1.0])  # task 2 has no logit: left out
    np.testing.assert_array_equal(hits, [1.0, 0.0])
    assert state.recent_asks("a", window=1)[0].tolist() == [-1.0]
    state.record_query(3, "a")  # asked again without a logit: the old one is forgotten
    assert state.recent_asks("a", window=10)[0].tolist() == [2.0]
    assert state.recent_asks("b", window=10)[1].tolist() == [1.0]
    with pytest.raises(KeyError):
        state.record_query(6, "zebra")


def test_a_multi_label_task_is_positive_for_each_class_it_names_and_negative_for_the_rest():
    state = LabelState(["Artist", "Athlete", "Company"])
    state.set_label(1, frozenset({"Artist", "Athlete"}))
    state.set_label(2, "Company")
    state.set_label(3, "Village")
    assert state.positives("Artist") == {1} and state.positives("Athlete") == {1}
    assert state.negatives("Artist") == {2, 3} and state.negatives("Company") == {1, 3}
    state.record_query(1, "Athlete", 0.5)
    assert state.recent_asks("Athlete", 10)[1].tolist() == [1.0]  # a hit for the asker
