import numpy as np
import pytest

from model.seals import NeighbourIndex, SealsCandidates, WorkingSet

DIM = 32


def unit(rng, n, dim=DIM, clusters=20):
    """Clustered unit vectors: a centre plus a low-dimensional spread, like embeddings."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    c = rng.integers(0, clusters, n)
    X = centres[c] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def exact_knn(X, Q, k):
    return np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :k]


def candidates(cache, X, labelled, mask):
    cache.update(X, np.asarray(labelled))
    return cache.candidates(mask)


def built(X, **kw):
    index = NeighbourIndex(X.shape[1], capacity=16, **kw)
    index.add(np.arange(len(X)), X)
    return index


def test_exact_duplicate_is_its_own_nearest_neighbour():
    rng = np.random.default_rng(0)
    X = unit(rng, 2000)
    index = built(X)
    assert len(index) == 2000 and index.capacity >= 2000  # grew from 16
    rows, sims = index.neighbours(X[[5, 77, 1999]], k=10)
    assert rows.shape == (3, 10)
    assert list(rows[:, 0]) == [5, 77, 1999]
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first


def test_float16_pool_is_accepted():
    rng = np.random.default_rng(1)
    X = unit(rng, 500).astype(np.float16)
    index = built(X)
    rows, _ = index.neighbours(X[[3]].astype(np.float32), k=1)
    assert rows[0, 0] == 3


def test_candidates_are_unlabelled_and_within_the_exact_union():
    rng = np.random.default_rng(2)
    n, k = 3000, 20
    X = unit(rng, n)
    index = built(X)
    labelled = rng.choice(n, size=15, replace=False)
    mask = np.ones(n, dtype=bool)
    mask[labelled] = False
    cand = candidates(SealsCandidates(index, k), X, labelled, mask)
    assert len(cand) == len(np.unique(cand)) and np.all(np.diff(cand) > 0)
    assert mask[cand].all()  # unlabelled only
    exact = np.unique(exact_knn(X, X[labelled], k))
    exact = exact[mask[exact]]
    # each candidate is a neighbour of some labelled item (ANN: almost always an exact one)
    assert len(np.intersect1d(cand, exact)) / len(cand) >= 0.9
    assert len(np.intersect1d(cand, exact)) / len(exact) >= 0.9  # recall vs exact kNN


def test_ann_recall_against_brute_force():
    rng = np.random.default_rng(3)
    X = unit(rng, 4000)
    index = built(X)
    q = rng.choice(len(X), size=50, replace=False)
    ann, _ = index.neighbours(X[q], k=50)
    exact = exact_knn(X, X[q], 50)
    recall = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(ann, exact, strict=True)])
    assert recall >= 0.9


def test_incremental_add_finds_later_rows():
    rng = np.random.default_rng(4)
    X = unit(rng, 3000)
    index = NeighbourIndex(DIM, capacity=100)
    for s in range(0, 3000, 700):  # uneven batches, several resizes
        index.add(np.arange(s, min(s + 700, 3000)), X[s : s + 700])
    assert len(index) == 3000
    rows, _ = index.neighbours(X[[2999, 1400, 0]], k=1)
    assert list(rows[:, 0]) == [2999, 1400, 0]


def test_rows_added_after_a_label_join_its_cached_neighbours():
    rng = np.random.default_rng(5)
    X = unit(rng, 2000)
    index = NeighbourIndex(DIM)
    index.add(np.arange(1000), X[:1000])
    cache = SealsCandidates(index, k=10)
    mask = np.ones(2000, dtype=bool)
    mask[[0, 1]] = False
    candidates(cache, X, [0, 1], mask)
    # a near duplicate of labelled row 0 arrives in a later import
    X[1500] = X[0] + 1e-3 * rng.standard_normal(DIM).astype(np.float32)
    X[1500] /= np.linalg.norm(X[1500])
    index.add(np.arange(1000, 2000), X[1000:])
    cache.added(np.arange(1000, 2000), X[1000:])
    assert 1500 in cache.neighbours_of(0)[:2]
    assert 1500 in candidates(cache, X, [0, 1], mask)
    # the merged lists equal the exact top 10 over all 2000 rows (up to ANN misses)
    fresh = SealsCandidates(index, k=10)
    fresh.update(X, [0, 1])
    for r in (0, 1):
        assert len(np.intersect1d(cache.neighbours_of(r), fresh.neighbours_of(r))) >= 9


def test_per_label_cache_matches_recomputing():
    rng = np.random.default_rng(6)
    n, k = 3000, 15
    X = unit(rng, n)
    index = built(X)
    cache = SealsCandidates(index, k)
    order = rng.choice(n, size=40, replace=False)
    labelled = list(order[:10])
    mask = np.ones(n, dtype=bool)
    mask[labelled] = False
    for r in order[10:]:
        cached = candidates(cache, X, labelled, mask)
        recomputed = candidates(SealsCandidates(index, k), X, labelled, mask)
        assert np.array_equal(cached, recomputed)
        labelled.append(r)
        mask[r] = False
    assert cache.queries == 39  # one query per label, never a re-query
    assert candidates(cache, X, labelled[:5], mask).size > 0


def test_cache_grows_only_and_handles_small_index_and_keys():
    rng = np.random.default_rng(7)
    X = unit(rng, 30)
    index = built(X)
    cache = SealsCandidates(index, k=50)  # more neighbours than rows
    mask = np.ones(30, dtype=bool)
    mask[[2]] = False
    cand = candidates(cache, X, [2], mask)
    assert set(cand) == set(range(30)) - {2}
    # a prototype (no pool row) can seed candidates before any label exists
    cache2 = SealsCandidates(index, k=5)
    assert cache2.add_queries([("proto", "artist")], X[[7]]) == 1
    assert cache2.add_queries([("proto", "artist")], X[[7]]) == 0
    assert 7 in cache2.candidates(np.ones(30, dtype=bool))


def test_bad_arguments():
    index = NeighbourIndex(DIM)
    with pytest.raises(ValueError):
        index.add(np.arange(3), np.zeros((2, DIM), np.float32))
    with pytest.raises(ValueError):
        index.add(np.arange(2), np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(ValueError):
        SealsCandidates(index, k=0)
    rows, sims = index.neighbours(np.zeros((2, DIM), np.float32), k=5)  # empty index
    assert rows.shape == (2, 0) and sims.shape == (2, 0)


def test_save_and_load(tmp_path):
    rng = np.random.default_rng(8)
    X = unit(rng, 500)
    index = built(X)
    path = str(tmp_path / "hnsw.bin")
    index.save(path)
    again = NeighbourIndex.load(path, DIM)
    assert len(again) == 500
    again.add(np.arange(500, 600), unit(rng, 100))
    rows, _ = again.neighbours(X[[42]], k=1)
    assert rows[0, 0] == 42 and len(again) == 600


def test_the_working_set_appends_only_rows_not_held_and_converts_them():
    X = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float16)
    ids = [f"t{i}" for i in range(50)]
    ws = WorkingSet(X, ids, capacity=2)
    assert ws.extend(np.array([7, 3, 3, 9])) == 3
    assert ws.rows.tolist() == [3, 7, 9] and ws.ids == ["t3", "t7", "t9"]
    assert ws.extend(np.array([9, 1, 40, 3])) == 2  # 9 and 3 are held
    assert ws.rows.tolist() == [3, 7, 9, 1, 40]  # appended, the others in place
    assert ws.X.dtype == np.float32 and ws.X.flags.c_contiguous
    np.testing.assert_array_equal(ws.X, X[ws.rows].astype(np.float32))
    assert ws.position[40] == 4 and ws.position[0] == -1
