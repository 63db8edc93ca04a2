"""SEALS candidate pools (Coleman et al. 2020): select among the neighbours of the labels.

On a huge pool, scoring every unlabelled item for every selection costs O(n d). SEALS
restricts the candidates of a selection to the unlabelled k nearest neighbours of the
labelled items, found with an approximate nearest-neighbour (ANN) index. The candidate
set grows by at most k rows per new label, so a selection costs O(|L| k d), whatever n.

Two pieces:

- `NeighbourIndex`: an HNSW graph (hnswlib, cosine) over the pool's vectors, keyed by pool
  row. Rows are added incrementally as
  tasks are imported; the index grows its capacity by doubling.
- `SealsCandidates`: the per-label cache. Each labelled row is queried once, when it is
  first seen; its k neighbours join the candidate union. Nothing is re-queried for later
  labels, so a new label costs one ANN query. The union only grows: a row stays a
  candidate once it was a neighbour of some labelled row (deleting a label does not shrink
  it; `reset()` does). Rows added to the index after a labelled row was queried are merged
  into that row's neighbour list exactly (brute force over the new rows only, see
  `added`), so incremental imports are not missed.

`PoolIndex` keeps a pool's index with its task ids (and on disk); `WorkingSet` the rows a
SEALS step ranks, between steps; `SealsView`, what the prioritiser ranks instead of the pool.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np

from model.prioritiser import Pool

# Measured with benchmarks/seals_1m.py (1M synthetic clustered 384-d unit vectors, 2 cores
# shared with other jobs, load 4-8): M=16, ef_construction=64 builds 1M rows in 5-8 min
# (2.1-3.3k rows/s on 2 threads), index 1.75 GiB; kNN@100 recall vs exact 0.77-0.84 at
# ef=128, 0.88 at 256, 0.89-0.92 at 512 (1.0-1.2 ms a query), 0.92 at 1024 (0.99 on 100k).
# One query per label, so the higher ef costs ~1 ms a selection.
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 64
DEFAULT_EF = 512  # raised to k when k is larger: hnswlib needs ef >= k


class NeighbourIndex:
    """An incremental ANN index over pool rows (hnswlib HNSW, cosine).

    `add(rows, X)` inserts the vectors `X` (n, dim) under the integer pool rows `rows`;
    `neighbours(X_query, k)` returns the (q, k) rows of the k most similar indexed items
    (and their cosine similarities). hnswlib keeps its own float32 copy of every vector
    (4 * dim bytes per row, normalised) plus the graph (about 2 * M * 4 bytes per row at
    level 0). It is not safe against a concurrent query while adding: one thread (the
    job's) uses an index at a time.
    """

    def __init__(
        self,
        dim: int,
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef: int = DEFAULT_EF,
        capacity: int = 1024,
        num_threads: int = 1,
        random_state: int = 0,
    ) -> None:
        self.dim, self.M = int(dim), int(M)
        self.ef_construction, self.ef = int(ef_construction), int(ef)
        self.num_threads = int(num_threads)
        self._index = hnswlib.Index(space="cosine", dim=self.dim)
        self._index.init_index(
            max_elements=max(int(capacity), 1),
            M=self.M,
            ef_construction=self.ef_construction,
            random_seed=random_state,
        )
        self._index.set_ef(self.ef)

    def __len__(self) -> int:
        return self._index.get_current_count()

    @property
    def capacity(self) -> int:
        return self._index.get_max_elements()

    def add(self, rows: np.ndarray, X: np.ndarray, chunk: int = 65536) -> None:
        """Insert (or replace) the vectors of pool `rows`; grows the capacity as needed.

        `X` may be float16 (a compact pool): it is converted to float32 chunk by chunk.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) != len(X):
            raise ValueError(f"{len(rows)} rows for {len(X)} vectors")
        if len(rows) == 0:
            return
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dim {self.dim}, got shape {X.shape}")
        if rows.min() < 0:
            raise ValueError("rows must be non-negative")
        need = len(self) + len(rows)
        if need > self.capacity:
            self._index.resize_index(max(need, 2 * self.capacity))
        for s in range(0, len(rows), chunk):
            block = np.ascontiguousarray(X[s : s + chunk], dtype=np.float32)
            self._index.add_items(block, rows[s : s + chunk], num_threads=self.num_threads)

    def neighbours(self, X_query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities), both (q, k'), k' = min(k, len(self)), best first."""
        X_query = np.ascontiguousarray(np.atleast_2d(X_query), dtype=np.float32)
        k = min(int(k), len(self))
        if k <= 0 or len(X_query) == 0:
            return np.empty((len(X_query), 0), np.int64), np.empty((len(X_query), 0), np.float32)
        self._index.set_ef(max(self.ef, k))
        labels, dist = self._index.knn_query(X_query, k=k, num_threads=self.num_threads)
        return labels.astype(np.int64), (1.0 - dist).astype(np.float32)

    def save(self, path: str) -> None:
        self._index.save_index(path)

    @classmethod
    def load(cls, path: str, dim: int, **kwargs) -> NeighbourIndex:
        """An index saved with `save`; capacity grows again on the next `add`."""
        self = cls(dim, capacity=1, **kwargs)
        self._index = hnswlib.Index(space="cosine", dim=dim)
        self._index.load_index(path)
        self._index.set_ef(self.ef)
        self.M = self._index.M
        self.ef_construction = self._index.ef_construction
        return self


class SealsCandidates:
    """The SEALS candidate union, cached per query key (a labelled pool row).

    `update(X, labelled_rows)` queries the index only for labelled rows never seen before
    (one ANN query per new label) and adds their neighbours to the union;
    `candidates(unlabelled_mask)` returns the union's unlabelled rows. Keys may also be any
    hashable with an explicit vector (`add_queries`), e.g. a class prototype to start from
    before any label exists.
    """

    def __init__(self, index: NeighbourIndex, k: int = 100) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.index, self.k = index, int(k)
        self.reset()

    def reset(self) -> None:
        self._keys: list[Hashable] = []
        self._pos: dict[Hashable, int] = {}
        self._vec = np.empty((0, self.index.dim), np.float32)  # query vectors, by position
        self._nbr = np.empty((0, self.k), np.int64)  # their k neighbours (-1 = none yet)
        self._sim = np.empty((0, self.k), np.float32)
        self._member = np.zeros(0, dtype=bool)  # row -> in the union
        self._union: list[np.ndarray] = []  # rows in order of joining (unique)
        self._union_arr = np.empty(0, np.int64)
        self.queries = 0  # ANN queries made so far (one per key)

    def __len__(self) -> int:
        return len(self.union())

    def __contains__(self, key: Hashable) -> bool:
        return key in self._pos

    def _join(self, rows: np.ndarray) -> None:
        rows = rows[rows >= 0]
        if len(rows) == 0:
            return
        top = int(rows.max()) + 1
        if top > len(self._member):
            grown = np.zeros(max(top, 2 * len(self._member)), dtype=bool)
            grown[: len(self._member)] = self._member
            self._member = grown
        rows = np.unique(rows)
        new = rows[~self._member[rows]]
        if len(new):
            self._member[new] = True
            self._union.append(new)

    def add_queries(self, keys: list[Hashable], vectors: np.ndarray) -> int:
        """Query the neighbours of the keys not cached yet; returns how many were new."""
        fresh = [i for i, key in enumerate(keys) if key not in self._pos]
        # a key repeated within one call is queried once
        seen: dict[Hashable, int] = {}
        for i in fresh:
            seen.setdefault(keys[i], i)
        fresh = list(seen.values())
        if not fresh:
            return 0
        V = self._as_indexed(np.atleast_2d(vectors)[fresh])
        nbr, sim = self.index.neighbours(V, self.k)
        if nbr.shape[1] < self.k:  # fewer indexed items than k
            pad = self.k - nbr.shape[1]
            nbr = np.pad(nbr, ((0, 0), (0, pad)), constant_values=-1)
            sim = np.pad(sim, ((0, 0), (0, pad)), constant_values=-np.inf)
        for i in fresh:
            self._pos[keys[i]] = len(self._keys)
            self._keys.append(keys[i])
        self._vec = np.concatenate([self._vec, V])
        self._nbr = np.concatenate([self._nbr, nbr])
        self._sim = np.concatenate([self._sim, sim])
        self._join(nbr.ravel())
        self.queries += len(fresh)
        return len(fresh)

    def _as_indexed(self, V: np.ndarray) -> np.ndarray:
        """float32 and unit length, as the index holds them, so that the brute-force
        similarities of `added` are on the index's scale."""
        V = np.ascontiguousarray(V, dtype=np.float32)
        norms = np.linalg.norm(V, axis=1, keepdims=True)
        return np.divide(V, norms, out=np.zeros_like(V), where=norms > 0)

    def update(self, X: np.ndarray, labelled_rows: np.ndarray) -> int:
        """Cache the neighbours of labelled rows not seen before (one query each)."""
        labelled_rows = np.asarray(labelled_rows, dtype=np.int64).ravel()
        new = [int(r) for r in labelled_rows if int(r) not in self._pos]
        if not new:
            return 0
        return self.add_queries(new, X[np.array(new, dtype=np.int64)])

    def added(self, rows: np.ndarray, X_rows: np.ndarray, chunk: int = 8192) -> None:
        """Merge rows just added to the index into every cached neighbour list, exactly.

        Call after `index.add(rows, X_rows)`: each cached key's k-list becomes the top k of
        (its list plus the new rows), by brute force over the new rows only (cost
        |keys| * |rows| * dim). Rows that enter a list join the union.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(self._keys) == 0 or len(rows) == 0:
            return
        for s in range(0, len(rows), chunk):
            r = rows[s : s + chunk]
            S = self._vec @ self._as_indexed(X_rows[s : s + chunk]).T
            # a row re-added under the same id must not appear twice in a list
            dup = np.isin(self._nbr, r)
            sim_old = np.where(dup, -np.inf, self._sim)
            all_nbr = np.concatenate([self._nbr, np.broadcast_to(r, S.shape)], axis=1)
            all_sim = np.concatenate([sim_old, S], axis=1)
            k = self.k
            top = np.argpartition(-all_sim, k - 1, axis=1)[:, :k]
            sim = np.take_along_axis(all_sim, top, axis=1)
            order = np.argsort(-sim, axis=1)
            top = np.take_along_axis(top, order, axis=1)
            self._nbr = np.take_along_axis(all_nbr, top, axis=1)
            self._sim = np.take_along_axis(all_sim, top, axis=1)
            self._nbr[~np.isfinite(self._sim)] = -1
            self._join(self._nbr[np.isin(self._nbr, r)])

    def neighbours_of(self, key: Hashable) -> np.ndarray:
        """The cached neighbour rows of one key, best first."""
        nbr = self._nbr[self._pos[key]]
        return nbr[nbr >= 0]

    def union(self) -> np.ndarray:
        """Every row that ever was a cached neighbour (labelled or not), in joining order."""
        if self._union:
            self._union_arr = np.concatenate([self._union_arr, *self._union])
            self._union = []
        return self._union_arr

    def candidates(self, unlabelled_mask: np.ndarray) -> np.ndarray:
        """The union's rows that are unlabelled now, sorted."""
        u = self.union()
        u = u[u < len(unlabelled_mask)]
        return np.sort(u[unlabelled_mask[u]])


@dataclass
class PoolIndex:
    """A pool's neighbour index over its leading `dim` columns, with the task ids it holds
    in pool-row order (the index is keyed by pool row).

    The leading columns are the embedding. The lexical columns after them (model.features)
    are refitted as the pool grows and the embedding never is, so an index over the
    embedding outlives a refit; `save` and `load` let it outlive a worker restart too
    (building one costs minutes at a million rows). The index compares by cosine: the
    embedding part of a pool row is scaled by the lexical setting (`with_lexical`).
    """

    index: NeighbourIndex
    ids: list[Hashable]
    saved_size: int = 0  # rows the copy on disk holds
    probe: tuple[np.ndarray, np.ndarray] | None = None  # (rows, their vectors) at build

    @classmethod
    def build(cls, ids: Sequence[Hashable], X: np.ndarray, dim: int) -> PoolIndex:
        index = NeighbourIndex(dim, capacity=len(ids))
        index.add(np.arange(len(ids)), X[:, :dim])
        rows = np.unique(np.linspace(0, len(ids) - 1, min(64, len(ids))).astype(np.int64))
        return cls(index, list(ids), probe=(rows, X[rows, :dim].copy()))

    def indexed(self, X: np.ndarray) -> bool:
        """Whether `X`'s rows are the vectors this index was built on, judged by a sample of
        rows: refitted columns change every row, appended rows none of the old ones. An
        index loaded from disk keeps no sample and passes."""
        if self.probe is None or len(self.probe[0]) == 0:
            return True
        rows, vectors = self.probe
        return len(X) > rows[-1] and np.array_equal(X[rows, : self.dim], vectors)

    @property
    def dim(self) -> int:
        return self.index.dim

    def extends(self, ids: Sequence[Hashable]) -> bool:
        """Whether `ids` is this index's pool with tasks appended (else: rebuild)."""
        n = len(self.ids)
        return len(ids) >= n and list(ids[:n]) == self.ids

    def grow(self, ids: Sequence[Hashable], X: np.ndarray) -> None:
        """Index the rows of `ids` beyond those held (`extends(ids)` must hold)."""
        if len(ids) > len(self.ids):
            self.index.add(np.arange(len(self.ids), len(ids)), X[len(self.ids) :, : self.dim])
            self.ids = list(ids)

    @classmethod
    def follow(
        cls, index: PoolIndex | None, ids: Sequence[Hashable], X: np.ndarray, dim: int
    ) -> PoolIndex:
        """`index` grown by the tasks appended to its pool since, or a new index when the pool
        is not its pool plus appended tasks (tasks deleted, another width, no index yet)."""
        if index is not None and index.dim == dim and index.extends(ids):
            index.grow(ids, X)
            return index
        return cls.build(ids, X, dim)

    def save(self, path: Path) -> None:
        """Write `path`.hnsw and `path`.rows.npz; each replaces its old copy atomically, and
        `load` refuses a pair whose sizes disagree (a crash between the two writes)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        graph, rows = f"{path}.hnsw", f"{path}.rows.npz"
        self.index.save(f"{graph}.tmp")
        os.replace(f"{graph}.tmp", graph)
        with open(f"{rows}.tmp", "wb") as f:  # hnswlib's file does not record the dim
            np.savez(f, ids=np.asarray(self.ids), dim=self.dim)
        os.replace(f"{rows}.tmp", rows)
        self.saved_size = len(self.ids)

    @classmethod
    def load(cls, path: Path, dim: int) -> PoolIndex | None:
        """The index saved at `path`, or None when there is none that fits `dim`."""
        graph, rows = Path(f"{path}.hnsw"), Path(f"{path}.rows.npz")
        if not (graph.exists() and rows.exists()):
            return None
        try:
            with np.load(rows) as saved:
                ids, saved_dim = saved["ids"].tolist(), int(saved["dim"])
            if saved_dim != dim:
                return None
            index = NeighbourIndex.load(str(graph), dim)
        except (OSError, RuntimeError, ValueError, KeyError):
            return None
        if len(index) != len(ids):
            return None
        return cls(index, ids, saved_size=len(ids))


class WorkingSet:
    """The pool rows a SEALS step ranks, in the order they joined, with their float32
    vectors kept between steps.

    A step adds the rows that joined since the last one (a label's new neighbours) and
    copies only those, instead of gathering the whole working set (tens of thousands of
    rows) again; rows never leave, so earlier rows keep their positions and the
    prioritiser reuses their scores. A compact pool's float16 rows are converted as they
    join. The copies belong to the pool's vectors `source`: new vectors for the same tasks
    (refitted lexical columns) need a new working set.
    """

    def __init__(self, source: np.ndarray, ids: Sequence[Hashable], capacity: int = 4096) -> None:
        self.source, self.pool_ids = source, ids
        self.position = np.full(len(source), -1, dtype=np.int64)  # pool row -> position
        self._rows = np.empty(max(1, capacity), dtype=np.int64)
        self._X = np.empty((max(1, capacity), source.shape[1]), dtype=np.float32)
        self.ids: list[Hashable] = []
        self.size = 0

    @property
    def rows(self) -> np.ndarray:
        return self._rows[: self.size]

    @property
    def X(self) -> np.ndarray:
        return self._X[: self.size]  # C-contiguous: a Pool over it copies nothing

    def extend(self, rows: np.ndarray) -> int:
        """Append the pool `rows` not held yet, in row order; returns how many joined."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        new = rows[self.position[rows] < 0]
        end = self.size + len(new)
        if end > len(self._rows):
            grown = max(end, 2 * len(self._rows))
            self._rows = np.resize(self._rows, grown)
            X_grown = np.empty((grown, self._X.shape[1]), dtype=np.float32)
            X_grown[: self.size] = self._X[: self.size]
            self._X = X_grown
        self._rows[self.size : end] = new
        self._X[self.size : end] = self.source[new]
        self.position[new] = np.arange(self.size, end)
        self.ids.extend(self.pool_ids[i] for i in new.tolist())
        self.size = end
        return len(new)


class SealsView:
    """SEALS as a view over the pool, wrapping the ranking as small-text's subsampling
    strategies wrap a base strategy: `restrict` gives the rows to rank (the labelled, the
    SEALS candidates and a fixed uniform sample, the pseudo-negatives' source), `rows` maps
    them back. Its state follows the pool's imports; a new index starts it afresh."""

    def __init__(self, k: int, sample: int | None = None) -> None:
        self.k, self.sample_wanted = k, sample
        self.candidates: SealsCandidates | None = None
        self.own_index: PoolIndex | None = None  # without a caller's index: one over every column
        self.sample = np.empty(0, np.int64)
        self.working: WorkingSet | None = None
        self.size = 0  # pool rows the neighbour lists know of

    def sample_size(self, n: int) -> int:
        """A tenth of the pool, at least 2,000 and at most 20,000 rows (or as asked)."""
        wanted = self.sample_wanted
        return min(n, wanted if wanted is not None else min(20_000, max(2_000, n // 10)))

    @property
    def rows(self) -> np.ndarray:
        """The pool row of each row of the last `restrict`'s pool."""
        assert self.working is not None, "restrict() first"
        return self.working.rows

    def restrict(
        self,
        pool: Pool,
        labelled: np.ndarray,
        queries: dict[str, np.ndarray],
        index: PoolIndex | None,
        rng: np.random.Generator,
    ) -> Pool:
        """The pool to rank this step: the working set grown by the rows that joined it, in
        float32 even from a compact pool (rows are converted once, as they join).
        `queries` (the class prototypes) find candidates before any label does."""
        n = len(pool.ids)
        if index is None:
            own = self.own_index
            if own is not None and not own.indexed(pool.X):
                own = None  # the same tasks with new vectors (refitted columns): a new graph
            index = self.own_index = PoolIndex.follow(own, pool.ids, pool.X, pool.X.shape[1])
        elif len(index.ids) != n:
            raise ValueError(f"the neighbour index holds {len(index.ids)} rows, the pool {n}")
        X = pool.X[:, : index.dim]  # a view: the columns the index was built on
        if self.candidates is None or self.candidates.index is not index.index:
            self.candidates = SealsCandidates(index.index, self.k)  # a new index: a new cache
            self.sample = rng.choice(n, self.sample_size(n), replace=False)
            self.working = None  # rows of another pool, or of a sample drawn no more
        elif self.size < n:  # tasks were imported: merge them into the cached lists
            new = np.arange(self.size, n)
            self.candidates.added(new, X[new])
            # and draw the sample again: it stands for the pool, imports included
            self.sample = rng.choice(n, self.sample_size(n), replace=False)
            self.working = None
        self.size = n
        self.candidates.update(X, labelled)
        if queries:
            P = np.stack([v[: index.dim] for v in queries.values()])
            self.candidates.add_queries(list(queries), P)
        unlabelled = np.ones(n, dtype=bool)
        unlabelled[labelled] = False
        cand = self.candidates.candidates(unlabelled)
        if self.working is None or self.working.source is not pool.X:
            self.working = WorkingSet(pool.X, pool.ids)
        self.working.extend(np.unique(np.concatenate([labelled, cand, self.sample])))
        return Pool(self.working.ids, self.working.X)
