"""What a long-lived worker keeps per project between jobs: one object, rebuilt from the store.

A `ProjectState` belongs to one fingerprint: the project's settings and label config, and
the count of removals from its pool. When any of them changes the whole state is dropped
and built again, so no part of it can go stale alone. Tasks appended to the pool (an
import) grow it instead: the new rows are featurised and indexed, the rest kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.embedder import embedder
from backend.settings import ProjectConfig
from backend.store import Store
from model.embedding import cache_dir
from model.features import LexicalFeatures, embedding_part, with_lexical
from model.labels import LabelState
from model.prioritiser import LARGE_POOL, Pool, Prioritiser, RankerConfig, embed_prototypes
from model.screening import OutlierScreen, PoolRarity
from model.seals import PoolIndex
from model.view_choice import ViewChoice

log = logging.getLogger("rarelabel.worker")
LEXICAL_REFIT_GROWTH = 1.25  # refit the pool's word statistics when it has grown by a quarter
INDEX_SAVE_GROWTH = 1.05  # save a pool's neighbour index again when it holds 5% more rows


def index_path(project: int) -> Path:
    """Where the worker saves the project's neighbour index (`.hnsw` and `.rows.npz`)."""
    return cache_dir() / "indexes" / f"project-{project}"


@dataclass
class ProjectState:
    cfg: ProjectConfig
    fingerprint: str
    pool: Pool = field(default_factory=lambda: Pool([], np.zeros((0, 1), np.float32)))
    pool_version: tuple[int, int] = (-1, -1)
    lexical: LexicalFeatures | None = None
    lexical_fitted_at: int = 0  # pool size at the last refit
    prioritiser: Prioritiser | None = None  # on the current feature columns
    views: ViewChoice | None = None  # with view_choice: both views, the first `prioritiser`
    rarity: PoolRarity | None = None  # outlier score per pool row
    screen: OutlierScreen | None = None  # the import screen, fitted on a pool sample
    index: PoolIndex | None = None  # SEALS neighbour index over the embedding columns

    @property
    def lexical_columns(self) -> int:
        return self.lexical.dims if self.lexical is not None else 0

    def refresh(self, store: Store) -> Pool:
        """The project's pool as the store holds it now (only appended rows are new work)."""
        version = store.pool_version(self.cfg.project_id)
        if version == self.pool_version:
            return self.pool
        vecs = store.vectors(self.cfg.project_id)
        ids = sorted(vecs)
        if not ids:
            self.pool, self.pool_version = Pool([], np.zeros((0, 1), np.float32)), version
            return self.pool
        X = np.stack([vecs[t] for t in ids])
        compact = len(ids) >= LARGE_POOL
        if self.cfg.ranker.lexical_dims > 0:
            X = self._with_lexical_columns(store, ids, X, compact)
        self.pool, self.pool_version = Pool(ids, X, compact=compact), version
        self.rarity = self.screen = None  # per pool row
        return self.pool

    def _with_lexical_columns(
        self, store: Store, ids: list[int], X: np.ndarray, compact: bool
    ) -> np.ndarray:
        """The pool's rows with their lexical columns: a refit (first time, or the pool grew
        by a quarter) featurises every text; otherwise only the new tasks' texts are read and
        transformed, and the other rows come from the pool in memory (in float16 for a
        `compact` pool: no float32 copy of all its rows)."""
        project, old = self.cfg.project_id, self.pool
        refit = (
            self.lexical is None
            or len(old.ids) == 0
            or len(ids) >= LEXICAL_REFIT_GROWTH * self.lexical_fitted_at
        )
        is_new = np.ones(len(ids), bool) if refit else np.array([t not in old.row for t in ids])
        fresh = [t for t, new in zip(ids, is_new, strict=True) if new]
        texts = store.texts(project, fresh)  # one read: a refit fits on and featurises the same
        docs = [texts.get(t, "") for t in fresh]
        if refit:
            t0 = time.perf_counter()
            self.lexical = LexicalFeatures(self.cfg.ranker.lexical_dims)
            L = self.lexical.fit_transform(docs)
            self.lexical_fitted_at = len(ids)
            self.prioritiser = None  # new feature columns: rankers start afresh
            log.info(
                "project %s: lexical features fitted on %d texts in %.1fs",
                project,
                len(ids),
                time.perf_counter() - t0,
            )
        else:
            L = self.lexical.transform(docs)
        store.set_lexical(project, dict(zip(fresh, L, strict=True)), replace=refit)
        dtype = np.float16 if compact else np.float32
        if refit:
            return with_lexical(X, L, dtype)
        out = np.empty((len(ids), X.shape[1] + self.lexical.dims), dtype=dtype)
        out[is_new] = with_lexical(X[is_new], L)
        out[~is_new] = old.X[[old.row[t] for t, new in zip(ids, is_new, strict=True) if not new]]
        return out

    def features(self, store: Store, tasks: list[int], E: np.ndarray) -> np.ndarray:
        """Vectors of these tasks in the rankers' space (embedding + the pool's lexical
        columns), for tasks outside the pool as well (an import being screened)."""
        if self.lexical is None:
            return E
        texts = store.texts(self.cfg.project_id, tasks)
        return with_lexical(E, self.lexical.transform([texts.get(t, "") for t in tasks]))

    def semantic(self, X: np.ndarray) -> np.ndarray:
        """The embedding columns of pool rows (what outlier models compare)."""
        return embedding_part(X, self.lexical_columns)

    def prioritiser_for(self) -> Prioritiser:
        if self.prioritiser is None:
            self.prioritiser = Prioritiser(self.cfg.targets, self.cfg.ranker, self._prototypes())
        return self.prioritiser

    def views_for(self) -> ViewChoice | None:
        """Both views' prioritisers (model.view_choice) when the project chooses between
        them; None when it ranks on one (view_choice off, or no lexical columns)."""
        cfg = self.cfg
        if not cfg.ranker.view_choice or self.lexical_columns == 0:
            return None
        if self.views is None or self.views.views[0] is not self.prioritiser:
            embedding = self.pool.X.shape[1] - self.lexical_columns
            self.views = ViewChoice(cfg.targets, cfg.ranker, self._prototypes(), embedding)
            self.prioritiser = self.views.views[0]
        return self.views

    def _prototypes(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        return embed_prototypes(embedder(), cfg.targets, cfg.descriptions, self.lexical_columns)

    def rarity_for(self, labels: LabelState) -> PoolRarity | None:
        """LOF rarity of the pool's rows, fitted once per pool and only while some target has
        no positive (the only time the prior is used). Each row is scored when a step first
        reads it: a step reads its SEALS working set, not every row of a large pool."""
        if self.cfg.ranker.outlier_prior <= 0 or all(labels.positives(t) for t in self.cfg.targets):
            return None
        if self.rarity is None:
            self.rarity = PoolRarity(OutlierScreen("lof"), self.pool.X, self.semantic)
        return self.rarity

    def index_for(self, config: RankerConfig) -> PoolIndex | None:
        """The pool's SEALS neighbour index, over the embedding columns (model.seals), when
        the configuration ranks through one.

        Grown by each job's imported tasks, and saved to disk (again at every 5% of growth),
        so a restarted worker loads it and indexes only the tasks imported since, instead of
        building it again (minutes at a million rows)."""
        pool, project = self.pool, self.cfg.project_id
        if not config.needs_index(len(pool.ids)):
            return None
        dim, path = pool.X.shape[1] - self.lexical_columns, index_path(project)
        kept = self.index
        if kept is None:
            kept = PoolIndex.load(path, dim)
            if kept is not None:
                log.info(
                    "project %s: loaded the neighbour index of %d tasks", project, len(kept.ids)
                )
        t0 = time.perf_counter()
        index = PoolIndex.follow(kept, pool.ids, pool.X, dim)
        if index is not kept:
            log.info(
                "project %s: built the neighbour index of %d tasks in %.1fs",
                project,
                len(pool.ids),
                time.perf_counter() - t0,
            )
        if len(index.ids) >= INDEX_SAVE_GROWTH * index.saved_size:
            index.save(path)
        self.index = index
        return index


_states: dict[int, ProjectState] = {}


def project_state(store: Store, cfg: ProjectConfig) -> ProjectState:
    """The warm state for these settings and this pool; a new one when either changed."""
    removals = store.pool_version(cfg.project_id)[1]
    fingerprint = f"{cfg.fingerprint()}:{removals}"
    state = _states.get(cfg.project_id)
    if state is None or state.fingerprint != fingerprint:
        state = _states[cfg.project_id] = ProjectState(cfg, fingerprint)
    state.cfg = cfg
    return state


def drop_states() -> None:
    """Forget every warm state (a worker restart, as tests see it)."""
    _states.clear()
