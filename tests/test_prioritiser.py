"""The prioritiser on real dbpedia14 embeddings: a queue that finds rare items, and its rules."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from model.labels import LabelState
from model.prioritiser import Pool, Prioritiser, RankerConfig, prototype_text
from model.rankers import CosineRanker, LinearRanker, n_pseudo_negatives

SEEDS_PER_TARGET = 5


def seeded_state(rp, seed: int = 0) -> LabelState:
    """Five human positives per target, chosen at random, as in the simulation."""
    rng = np.random.default_rng(seed)
    state = LabelState(list(rp.targets))
    for t in rp.targets:
        for r in rng.choice(np.flatnonzero(rp.labels == t), SEEDS_PER_TARGET, replace=False):
            state.set_label(rp.ids[r], t)
    return state


@pytest.fixture(scope="module")
def fitted(real_pool):
    pool = Pool(real_pool.ids, real_pool.X)
    state = seeded_state(real_pool)
    prio = Prioritiser(list(real_pool.targets), RankerConfig(random_state=0), real_pool.prototypes)
    return pool, state, prio.fit(pool, state)


def rare_mask(rp) -> np.ndarray:
    return np.isin(rp.labels, rp.targets)


def test_fit_trains_one_linear_ranker_per_target(real_pool, fitted):
    pool, state, prio = fitted
    assert list(prio.rankers_) == list(real_pool.targets)
    for ranker, ctx in zip(prio.rankers_.values(), prio.contexts_, strict=True):
        assert isinstance(ranker, LinearRanker)
        # the other target's seeds are this target's negatives
        assert (ctx.n_positives, ctx.n_negatives, ctx.linear) == (5, 5, True)
    S = prio.score(pool.X)
    assert S.shape == (len(pool.ids), len(real_pool.targets))
    for j, t in enumerate(prio.targets):
        np.testing.assert_allclose(S[:, j], prio.rankers_[t].score(pool.X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prio.scores_, S, rtol=1e-5, atol=1e-5)


def test_pseudo_negatives_are_drawn_from_the_bottom_of_the_ranking(real_pool, fitted):
    pool, state, prio = fitted
    n_unlabelled = len(pool.ids) - len(state.labels)
    assert len(prio.unlabelled_) == n_unlabelled
    for t in real_pool.targets:
        pseudo = prio.pseudo_negatives_[t]
        wanted = n_pseudo_negatives(SEEDS_PER_TARGET, SEEDS_PER_TARGET, 100.0)
        cfg = prio.config
        n_bottom = min(int(n_unlabelled * cfg.bottom_fraction), n_unlabelled - cfg.keep_top)
        assert len(pseudo) == min(wanted, n_bottom) > 0
        assert not pseudo & set(state.labels)
        assert pseudo <= set(pool.ids)
        # first fit: drawn from the bottom of the centroid-of-positives ranking
        rows = pool.rows(pseudo)
        centroid = pool.X[pool.rows(state.positives(t))].mean(axis=0)
        sim = pool.X @ (centroid / np.linalg.norm(centroid))
        cut = np.sort(sim[prio.unlabelled_])[n_bottom - 1]
        assert np.all(sim[rows] <= cut + 1e-6)
        # and mostly not rare items of this class (never pseudo-label the positives we seek)
        assert np.sum(real_pool.labels[rows] == t) <= 1


def test_queue_finds_rare_items_far_above_random(real_pool, fitted):
    pool, state, prio = fitted
    q = prio.queue(20)
    rows, ranks = q.rows, q.ranks
    assert len(q) == 20 == len(set(rows.tolist()))
    assert np.all(np.diff(ranks) >= 0)
    is_rare = rare_mask(real_pool)
    unlabelled = prio.unlabelled_
    random_expectation = 20 * is_rare[unlabelled].sum() / len(unlabelled)
    hits = int(is_rare[rows].sum())
    assert hits >= 5 * random_expectation, (hits, random_expectation)


def test_queue_never_returns_labelled_rows_while_labelling(real_pool):
    pool = Pool(real_pool.ids, real_pool.X)
    state = seeded_state(real_pool, seed=1)
    prio = Prioritiser(list(real_pool.targets), RankerConfig(random_state=1), real_pool.prototypes)
    is_rare = rare_mask(real_pool)
    found = 0
    for _ in range(12):
        q = prio.fit(pool, state).queue(30)
        rows, ranks = q.rows, q.ranks
        labelled = set(pool.rows(state.labels).tolist())
        assert not set(rows.tolist()) & labelled
        assert len(set(rows.tolist())) == len(rows) == 30
        assert np.all(np.diff(ranks) >= 0)
        for t in real_pool.targets:
            assert not prio.pseudo_negatives_[t] & set(state.labels)
        head = int(rows[0])
        state.set_label(pool.ids[head], str(real_pool.labels[head]))  # an oracle annotator
        found += bool(is_rare[head])
    random_expectation = 12 * is_rare.sum() / len(is_rare)
    assert found >= 5 * random_expectation


@pytest.mark.parametrize("choice", ["calibrated", "probability"])
def test_each_queued_row_carries_the_asking_class_and_its_logit(real_pool, choice):
    """What the class choice learns from: the queue says which class asked for each row and
    the logit that class gave it; recorded with the label, it calibrates the next choice."""
    pool = Pool(real_pool.ids, real_pool.X)
    state = seeded_state(real_pool, seed=2)
    cfg = RankerConfig(random_state=2, class_choice=choice)
    prio = Prioritiser(list(real_pool.targets), cfg, real_pool.prototypes)
    for _ in range(8):
        q = prio.fit(pool, state).queue(10)
        P = prio.probabilities(prio.score(pool.X[q.rows]))
        cls = [prio.targets.index(t) for t in q.targets]
        expected = np.log(P[np.arange(len(q)), cls] / (1 - P[np.arange(len(q)), cls]))
        np.testing.assert_allclose(q.logits, expected, rtol=1e-3, atol=1e-3)
        assert len(prio.class_precision_) == len(prio.targets)
        head = int(q.rows[0])
        state.record_query(pool.ids[head], q.targets[0], q.logits[0])
        state.set_label(pool.ids[head], str(real_pool.labels[head]))
    asked = [state.recent_asks(t, 40) for t in prio.targets]
    assert sum(len(logits) for logits, _ in asked) == 8


@pytest.mark.parametrize("seals_above", [0, None])
def test_fitting_reads_the_labels_the_pool_and_the_rarity_and_writes_none_of_them(
    real_pool, seals_above
):
    state = seeded_state(real_pool, seed=4)
    state.record_query(real_pool.ids[0], real_pool.targets[0], 0.5)
    pool = Pool(real_pool.ids, real_pool.X)
    rarity = np.random.default_rng(0).random(len(pool.ids))
    before = (copy.deepcopy(state), pool.X.copy(), list(pool.ids), rarity.copy())
    cfg = RankerConfig(random_state=4, seals_above=seals_above, seals_sample=200)
    prio = Prioritiser(list(real_pool.targets), cfg, real_pool.prototypes)
    for _ in range(2):  # a refit too: it draws from the first fit's ranking
        q = prio.fit(pool, state, rarity).queue(5)
        state_after, X_after, ids_after, rarity_after = before
        assert state == state_after
        np.testing.assert_array_equal(pool.X, X_after)
        np.testing.assert_array_equal(rarity, rarity_after)
        assert pool.ids == ids_after
    assert all(prio.pseudo_negatives_[t] for t in real_pool.targets)  # the fit's, not the state's
    assert not set(q.rows.tolist()) & set(pool.rows(state.labels).tolist())


def test_predict_names_a_target_with_a_score_in_0_1(real_pool, fitted):
    _, _, prio = fitted
    names, scores = prio.predict(real_pool.X_test)
    assert len(names) == len(scores) == len(real_pool.X_test)
    assert set(names) <= set(real_pool.targets)
    assert np.all((scores >= 0) & (scores <= 1))
    # the best target is right for held-out rare items, and they score higher than the rest
    rare = np.isin(real_pool.test_labels, real_pool.targets)
    agree = np.mean(np.array(names)[rare] == real_pool.test_labels[rare])
    assert agree >= 0.75
    assert np.median(scores[rare]) > np.median(scores[~rare])


def test_zero_shot_from_the_class_name_prototypes(real_pool):
    pool = Pool(real_pool.ids, real_pool.X)
    state = LabelState(list(real_pool.targets))
    prio = Prioritiser(list(real_pool.targets), RankerConfig(), real_pool.prototypes)
    prio.fit(pool, state)
    assert all(isinstance(r, CosineRanker) for r in prio.rankers_.values())
    assert all(not prio.pseudo_negatives_[t] for t in real_pool.targets)
    rows = prio.queue(20).rows
    is_rare = rare_mask(real_pool)
    assert is_rare[rows].sum() >= 3 * 20 * is_rare.mean()
    _, scores = prio.predict(real_pool.X_test)
    assert np.all((scores >= 0) & (scores <= 1))


def test_a_single_target_with_only_positives_ranks_by_their_centroid(real_pool):
    target = real_pool.targets[0]
    pool = Pool(real_pool.ids, real_pool.X)
    state = LabelState([target])
    is_target = real_pool.labels == target
    seeds = np.flatnonzero(is_target)[:SEEDS_PER_TARGET]
    for r in seeds:
        state.set_label(real_pool.ids[r], target)
    prio = Prioritiser([target], RankerConfig(), {}).fit(pool, state)
    assert isinstance(prio.rankers_[target], CosineRanker)
    rows = prio.queue(10).rows
    assert not set(rows.tolist()) & set(seeds.tolist())
    random_expectation = 10 * (is_target.sum() - len(seeds)) / (len(is_target) - len(seeds))
    assert np.sum(is_target[rows]) >= 5 * random_expectation


def test_a_class_without_positives_or_prototype_is_refused(real_pool):
    pool = Pool(real_pool.ids, real_pool.X)
    prio = Prioritiser(list(real_pool.targets), RankerConfig(), prototypes={})
    with pytest.raises(ValueError, match="prototype"):
        prio.fit(pool, LabelState(list(real_pool.targets)))


def test_queue_before_fit_raises():
    with pytest.raises(RuntimeError):
        Prioritiser(["a"]).queue(3)


def test_queue_is_empty_when_everything_is_labelled():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 8)).astype(np.float32)
    pool = Pool(list("abcdef"), X)
    state = LabelState(["x"])
    for i, t in enumerate(pool.ids):
        state.set_label(t, "x" if i < 3 else "y")
    q = Prioritiser(["x"]).fit(pool, state).queue(5)
    assert len(q.rows) == len(q.ranks) == len(q.targets) == len(q.logits) == 0


def test_pool_checks_ids_and_maps_them_to_rows():
    X = np.eye(3, dtype=np.float64)
    pool = Pool(["a", "b", "c"], X)
    assert pool.X.dtype == np.float32 and pool.X.flags["C_CONTIGUOUS"]
    assert pool.rows({"c", "a", "zzz"}).tolist() == [0, 2]  # unknown ids are skipped
    with pytest.raises(ValueError):
        Pool(["a", "b"], X)
    with pytest.raises(ValueError):
        Pool(["a", "b", "a"], X)


@pytest.mark.parametrize("seals_above", [0, 10**9])
def test_a_compact_pool_halves_the_memory_and_keeps_the_queue(real_pool, seals_above):
    """float16 rows (a large pool's storage) rank as the float32 ones do, with SEALS or not."""
    queues, scores = [], []
    for compact in (False, True):
        pool = Pool(real_pool.ids, real_pool.X, compact=compact)
        cfg = RankerConfig(random_state=3, seals_above=seals_above, seals_sample=500)
        prio = Prioritiser(list(real_pool.targets), cfg, real_pool.prototypes)
        rows = prio.fit(pool, seeded_state(real_pool, seed=3)).queue(20).rows
        queues.append(rows.tolist())
        scores.append(prio.score(real_pool.X))
    assert pool.X.dtype == np.float16
    assert pool.X.nbytes * 2 == Pool(real_pool.ids, real_pool.X).X.nbytes
    assert len(set(queues[0][:10]) & set(queues[1][:10])) >= 8, queues
    np.testing.assert_allclose(scores[1], scores[0], atol=0.05)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"f_a": -1}, "f_a"),
        ({"f_a": float("nan")}, "finite"),
        ({"C": 0}, "C must"),
        ({"outlier_prior": 1.5}, "outlier_prior"),
        ({"lexical_dims": 5000}, "lexical_dims"),
        ({"seals_above": -1}, "seals_above"),
        ({"bottom_fraction": 0}, "bottom_fraction"),
        ({"bottom_fraction": 1.5}, "bottom_fraction"),
        ({"strategy": "x"}, "unknown strategy 'x'"),
        ({"class_choice": "bandit"}, "class_choice"),  # removed: it measured no gain
    ],
)
def test_ranker_config_refuses_bad_settings_and_names_them(kwargs, word):
    with pytest.raises(ValueError, match=word):
        RankerConfig(**kwargs)


@pytest.mark.parametrize(
    ("target", "description", "expected"),
    [
        ("EducationalInstitution", None, "educational institution"),
        ("OfficeHolder", None, "office holder"),
        ("mean_of_transportation", None, "mean of transportation"),
        ("Artist", "painters, sculptors", "artist: painters, sculptors"),
    ],
)
def test_prototype_text_from_the_class_name(target, description, expected):
    assert prototype_text(target, description) == expected


def test_refit_after_new_tasks_join_the_pool(real_pool):
    state = seeded_state(real_pool)
    prio = Prioritiser(list(real_pool.targets), RankerConfig(), real_pool.prototypes)
    prio.fit(Pool(real_pool.ids[:500], real_pool.X[:500]), state)
    prio.fit(Pool(real_pool.ids, real_pool.X), state)  # 100 tasks imported since
    assert prio.scores_.shape == (len(real_pool.ids), len(real_pool.targets))
    # with SEALS: the new rows join the index, the cached neighbour lists and the sample
    prio = Prioritiser(list(real_pool.targets), RankerConfig(seals_above=0), real_pool.prototypes)
    prio.fit(Pool(real_pool.ids[:500], real_pool.X[:500]), state)
    index = prio.seals_.own_index
    prio.fit(Pool(real_pool.ids, real_pool.X), state)
    assert prio.seals_.own_index is index and index.ids == list(real_pool.ids)
    assert prio.seals_.size == len(real_pool.ids) and prio.view_.max() >= 500
    assert (prio.seals_.sample >= 500).any()  # the sample stands for the grown pool


def test_own_index_is_rebuilt_for_new_vectors_of_the_same_tasks(real_pool):
    """Refitted columns give every task a new vector: the prioritiser's own index (over
    every column) must index those, not keep the graph of the old ones."""
    state = seeded_state(real_pool)
    prio = Prioritiser(list(real_pool.targets), RankerConfig(seals_above=0), real_pool.prototypes)
    prio.fit(Pool(real_pool.ids, real_pool.X), state)
    old = prio.seals_.own_index
    X2 = real_pool.X[np.random.default_rng(0).permutation(len(real_pool.ids))]
    prio.fit(Pool(real_pool.ids, X2), state)
    assert prio.seals_.own_index is not old
    rows, _ = prio.seals_.own_index.index.neighbours(X2[:5], k=1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]  # each row's nearest is itself, in X2
    same = prio.seals_.own_index
    prio.fit(Pool(real_pool.ids, X2.copy()), state)  # equal vectors in a new array
    assert prio.seals_.own_index is same


def test_density_is_the_mean_cosine_to_the_candidates(real_pool):
    state = seeded_state(real_pool)
    prio = Prioritiser(list(real_pool.targets), RankerConfig(), real_pool.prototypes)
    prio.fit(Pool(real_pool.ids, real_pool.X), state)
    rows = prio.unlabelled_[:200]
    brute = (real_pool.X[rows] @ real_pool.X[rows].T).mean(axis=1)
    np.testing.assert_allclose(prio.density(rows, chunk=64), brute, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("uncertainty", ["margin", "information_density"])
def test_uncertainty_phase_asks_for_boundary_items(real_pool, uncertainty):
    state = seeded_state(real_pool)  # |Lp| = |Ln| = 5 per class: adaptive is past its switch
    config = RankerConfig(strategy="adaptive", uncertainty=uncertainty)
    prio = Prioritiser(list(real_pool.targets), config, real_pool.prototypes)
    rows = prio.fit(Pool(real_pool.ids, real_pool.X), state).queue(20).rows
    greedy = Prioritiser(list(real_pool.targets), RankerConfig(), real_pool.prototypes)
    greedy_rows = (
        greedy.fit(Pool(real_pool.ids, real_pool.X), seeded_state(real_pool)).queue(20).rows
    )
    closest = np.abs(prio.scores_[rows]).min(axis=1).mean()
    assert closest < np.abs(greedy.scores_[greedy_rows]).min(axis=1).mean()
    assert not set(rows.tolist()) & set(prio.labelled_.tolist())


def test_seals_mode_ranks_a_working_set_and_returns_pool_rows(real_pool):
    state = seeded_state(real_pool)
    config = RankerConfig(seals_above=0, seals_k=20, seals_sample=100)
    prio = Prioritiser(list(real_pool.targets), config, real_pool.prototypes)
    pool = Pool(real_pool.ids, real_pool.X)
    rows = prio.fit(pool, state).queue(10).rows
    assert len(prio.view_) < len(real_pool.ids)  # not the whole pool
    labelled = {pool.row[t] for t in state.labels}
    assert not set(rows.tolist()) & labelled
    assert set(rows.tolist()) <= set(prio.view_.tolist())
    assert np.isin(real_pool.labels[rows], real_pool.targets).sum() >= 3
    # a new label queries the index once more; the working set only grows by its neighbours
    state.set_label(pool.ids[rows[0]], str(real_pool.labels[rows[0]]))
    queries = prio.seals_.candidates.queries
    prio.fit(pool, state)
    assert prio.seals_.candidates.queries == queries + 1


def test_the_seals_working_set_is_kept_between_steps_and_its_scores_reused(real_pool):
    """A step appends the rows that joined the working set and keeps the others in place;
    the pseudo-negatives come from the last ranking, the joining rows scored by its rankers."""
    state = seeded_state(real_pool)
    config = RankerConfig(seals_above=0, seals_k=20, seals_sample=100, random_state=1)
    prio = Prioritiser(list(real_pool.targets), config, real_pool.prototypes)
    pool = Pool(real_pool.ids, real_pool.X)
    rows = prio.fit(pool, state).queue(1).rows
    working, before = prio.seals_.working, prio.view_.copy()
    old_scores = prio.raw_scores_.copy()
    state.set_label(pool.ids[rows[0]], str(real_pool.labels[rows[0]]))
    previous = prio._previous_scores(Pool(working.ids, working.X))
    np.testing.assert_array_equal(previous, old_scores)  # the same rows: the same scores
    prio.fit(pool, state)
    assert prio.seals_.working is working and len(prio.view_) > len(before)
    np.testing.assert_array_equal(prio.view_[: len(before)], before)  # kept in place
    np.testing.assert_array_equal(working.X, real_pool.X[prio.view_])
    # the scores the refit drew from: the old rows' as they were, the new rows' by the old
    # rankers (checked against a refit from scratch that is handed the same rankers)
    grown = Pool(working.ids, working.X)
    again = Prioritiser(list(real_pool.targets), config, real_pool.prototypes)
    again.rankers_, again.ids_ = prio.rankers_, prio.ids_[: len(before)]
    again.raw_scores_ = prio.raw_scores_[: len(before)]
    reused = again._previous_scores(grown)
    np.testing.assert_array_equal(reused[: len(before)], prio.raw_scores_[: len(before)])
    np.testing.assert_allclose(reused[len(before) :], prio.score(grown.X[len(before) :]), rtol=1e-6)
    # another pool (not this one with rows appended): nothing to reuse
    assert prio._previous_scores(Pool(pool.ids[::-1], pool.X[::-1])) is None
    # new vectors for the same tasks (refitted lexical columns): copied afresh, not kept
    X2 = real_pool.X.copy()
    X2[:, -1] += 0.5
    prio.fit(Pool(real_pool.ids, X2), state)
    assert prio.seals_.working is not working
    np.testing.assert_array_equal(prio.seals_.working.X, X2[prio.view_])


def test_a_first_fit_draws_pseudo_negatives_from_the_bottom_of_the_centroids_ranking(real_pool):
    """With no earlier ranking to draw from, the positives' centroid ranks the pool; its top
    `keep_top` rows hold the class's positives and give no pseudo-negative."""
    state = seeded_state(real_pool)
    prio = Prioritiser(list(real_pool.targets), RankerConfig(), real_pool.prototypes)
    pool = Pool(real_pool.ids, real_pool.X)
    prio.fit(pool, state)
    for t in real_pool.targets:
        centroid = real_pool.X[pool.rows(state.positives(t))].mean(axis=0)
        pseudo = pool.rows(prio.pseudo_negatives_[t])
        top = np.argsort(-(real_pool.X @ centroid))[: prio.config.keep_top]
        assert len(pseudo) and not set(pseudo.tolist()) & set(top.tolist()), t


def test_seals_with_a_handed_index_over_the_embedding_columns_follows_the_pool_as_it_grows(
    real_pool,
):
    """The worker keeps the index (over the embedding, not the lexical columns after it) and
    grows it by the imported rows; the cached neighbour lists take in those rows exactly as
    a fresh index over the grown pool finds them."""
    from model.features import with_lexical
    from model.seals import PoolIndex

    rng = np.random.default_rng(0)
    L = rng.normal(size=(len(real_pool.ids), 8)).astype(np.float32)
    L /= np.linalg.norm(L, axis=1, keepdims=True)
    X = with_lexical(real_pool.X, L)  # 384 embedding columns (scaled by 1/√2), 8 lexical
    dim, m = real_pool.X.shape[1], len(real_pool.ids) - 100
    state = seeded_state(real_pool)
    config = RankerConfig(seals_above=1, seals_k=20, seals_sample=50, random_state=0)
    protos = {t: np.r_[v, np.zeros(8, np.float32)] for t, v in real_pool.prototypes.items()}
    first = Pool(real_pool.ids[:m], X[:m])
    state_first = LabelState(list(real_pool.targets))
    for task, label in state.labels.items():
        if task in first.row:
            state_first.set_label(task, label)
    index = PoolIndex.build(first.ids, first.X, dim)
    prio = Prioritiser(list(real_pool.targets), config, protos)
    prio.fit(first, state_first, index=index)
    assert prio.seals_.candidates.index is index.index and prio.seals_.own_index is None
    pool = Pool(real_pool.ids, X)
    with pytest.raises(ValueError, match="neighbour index holds"):
        prio.fit(pool, state, index=index)  # the caller grows its index with the pool
    index.grow(pool.ids, pool.X)
    prio.fit(pool, state, index=index)
    fresh = Prioritiser(list(real_pool.targets), config, protos)
    fresh.fit(pool, state, index=PoolIndex.build(pool.ids, pool.X, dim))
    for key in state_first.labels:
        row = pool.row[key]
        grown = prio.seals_.candidates.neighbours_of(row)
        rebuilt = fresh.seals_.candidates.neighbours_of(row)
        assert len(set(grown) & set(rebuilt)) >= 18  # of 20; HNSW is approximate
        assert (grown >= m).any() or not (rebuilt >= m).any()
    # the embedding columns alone: the same neighbours as an index of the raw embedding
    raw = PoolIndex.build(pool.ids, real_pool.X, dim)
    some = real_pool.X[:5]
    np.testing.assert_array_equal(
        raw.index.neighbours(some, 10)[0], index.index.neighbours(X[:5, :dim], 10)[0]
    )


@pytest.mark.parametrize(
    "n, sample, expected",
    [
        (600, None, 600),
        (19_731, None, 2_000),
        (50_000, None, 5_000),
        (10**6, None, 20_000),
        (50_000, 100, 100),
        (50, 100, 50),
    ],
)
def test_the_seals_sample_is_a_tenth_of_the_pool_between_2000_and_20000_rows(n, sample, expected):
    from model.seals import SealsView

    assert SealsView(k=100, sample=sample).sample_size(n) == expected
