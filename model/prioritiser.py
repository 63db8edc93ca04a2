"""One ranker per target class over a pool of vectors, and the queue they agree on.

The same object runs in the simulation and in the service: `fit` on the pool and the
label state, then `queue(n)` for the next tasks to label and `predict` for any vectors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np

from model.class_choice import calibrated_choice
from model.features import pad_prototypes
from model.labels import LabelState
from model.rankers import (
    CosineRanker,
    LinearRanker,
    class_probabilities,
    fit_class_ranker,
    project,
)
from model.strategies import STRATEGIES, UNCERTAINTY, ClassContext, combine

if TYPE_CHECKING:  # for the hints only: hnswlib is imported where a pool needs SEALS
    from model.screening import PoolRarity
    from model.seals import PoolIndex, SealsView

CLASS_CHOICES = ("calibrated", "probability")
# From this many tasks a pool is "large": its vectors are stored as float16 (`Pool.compact`)
# and each step ranks a SEALS working set instead of every row.
LARGE_POOL = 200_000


@dataclass
class RankerConfig:
    """The ranker's parameters, with their defaults (the service's settings table,
    `backend/settings.py`, reads these) and their validation."""

    f_a: float = 100.0  # pseudo-negatives per (|Lp| + 0.1 |Ln|), as in the paper
    strategy: str = "positive"
    uncertainty: str = "margin"  # the adaptive strategy's second phase
    density_beta: float = 1.0
    C: float = 10.0
    # Pseudo-negatives come from the lowest-ranked 99% (the paper: 50%), never from the top
    # 300 rows. The top holds a rare class's positives; below it, the wide band brings the
    # common classes that border the class into the sample (benchmark rows bottom80,
    # bottom95).
    bottom_fraction: float = 0.99
    keep_top: int = 300  # on a small pool the top 1% is too few rows
    human_weight: float = 2.0  # weight of a human label relative to a pseudo-negative
    # Which class asks first (model.class_choice): "calibrated" (its first choice's logit
    # through a per-class Platt offset, drawn from its posterior) or "probability" (its
    # first choice's probability as the ranker gives it).
    class_choice: str = "calibrated"
    precision_window: int = 40  # recent picks per class that calibrate its offset
    offset_prior_sd: float = 1.5  # prior sd of the Platt offsets
    # SEALS (Coleman et al. 2020) on large pools: each step ranks a working set, the
    # unlabelled k nearest neighbours of labelled items (and of the class prototypes), found
    # with an HNSW index, and a uniform sample of the pool. Not on smaller pools: with the
    # worker's index (over the embedding) it finds fewer rare items by label 300 (README).
    seals_k: int = 100
    seals_above: int | None = LARGE_POOL  # pool size from which SEALS is used; 0 = always
    # the sample: a tenth of the pool, at least 2,000 and at most 20,000 rows; or this many
    seals_sample: int | None = None
    # A class with no positive yet ranks by its prototype blended with the pool's outlier
    # rarity (benchmarks/screening_prior.py: +30% recall at zero labels with LOF at 0.05).
    outlier_prior: float = 0.05
    # Columns of pool-fitted word statistics beside the embedding (model.features); read by
    # whoever builds the pool's vectors. 0 = the embedding alone.
    lexical_dims: int = 384
    # The paper's slow step (model.feature_update): every this many labels, features learnt
    # from the labels, ranked on beside the frozen ones. 0 = off. In simulation only so far.
    feature_update_every: int = 0
    # Rank on two views, with and without the lexical columns, and let the labels choose
    # between them (model.view_choice). Off: the lexical columns always (if any).
    view_choice: bool = False
    # Weight of a k-nearest-neighbour posterior over the human labels (model.knn) mixed with
    # each linear class's probability in the ranking; 0 = the linear ranker alone.
    knn_blend: float = 0.0
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; choose from {sorted(STRATEGIES)}"
            )
        if self.uncertainty not in UNCERTAINTY:
            raise ValueError(
                f"unknown uncertainty {self.uncertainty!r}; choose from {sorted(UNCERTAINTY)}"
            )
        if self.class_choice not in CLASS_CHOICES:
            raise ValueError(
                f"unknown class_choice {self.class_choice!r}; choose from {list(CLASS_CHOICES)}"
            )
        for name in ("f_a", "C", "outlier_prior"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.f_a < 0:
            raise ValueError(f"f_a must be >= 0, got {self.f_a}")
        if self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if not 0 <= self.outlier_prior <= 1:
            raise ValueError(f"outlier_prior must be in [0, 1], got {self.outlier_prior}")
        if not 0 <= self.knn_blend < 1:
            raise ValueError(f"knn_blend must be in [0, 1), got {self.knn_blend}")
        if self.feature_update_every < 0:
            raise ValueError(f"feature_update_every must be >= 0, got {self.feature_update_every}")
        if self.view_choice and self.feature_update_every:
            raise ValueError("view_choice and feature_update_every cannot be combined")
        if not 0 <= self.lexical_dims <= 4096:
            raise ValueError(f"lexical_dims must be in [0, 4096], got {self.lexical_dims}")
        if self.seals_above is not None and self.seals_above < 0:
            raise ValueError(f"seals_above must be >= 0 or 'off', got {self.seals_above}")
        if not 0 < self.bottom_fraction <= 1:
            raise ValueError(f"bottom_fraction must be in (0, 1], got {self.bottom_fraction}")

    def needs_index(self, n: int) -> bool:
        """Whether a pool of `n` rows is ranked through a SEALS working set, and so needs a
        neighbour index."""
        return self.seals_above is not None and n >= self.seals_above


def prototype_text(target: str, description: str | None = None) -> str:
    """`EducationalInstitution` -> `educational institution`, plus the manager's description."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-]+", " ", target).strip().lower()
    return f"{words}: {description}" if description else words


def embed_prototypes(
    embedder,
    targets: list[str],
    descriptions: dict[str, str] | None = None,
    lexical_dims: int = 0,
) -> dict[str, np.ndarray]:
    """Each target's zero-shot prototype: its name (and description) embedded.

    With lexical columns in the pool (model.features) the prototype's are zero: a class
    name is too short for word statistics, so it ranks by the embedding alone."""
    descriptions = descriptions or {}
    vecs = embedder.encode([prototype_text(t, descriptions.get(t)) for t in targets])
    return pad_prototypes(dict(zip(targets, vecs, strict=True)), lexical_dims)


@dataclass
class Pool:
    """Vectors of every task, with the task ids in row order.

    `compact` stores them as float16: half the memory (1M rows × 768 columns in 1.4 GiB
    instead of 2.9), at a precision far finer than the rankers need. Every product with
    the whole pool then runs in float32 chunks (`model.rankers.project`)."""

    ids: list[Hashable]
    X: np.ndarray
    compact: bool = False
    row: dict[Hashable, int] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.X):
            raise ValueError(f"{len(self.ids)} ids for {len(self.X)} vectors")
        dtype = np.float16 if self.compact else np.float32
        self.X = np.ascontiguousarray(self.X, dtype=dtype)
        self.row = {t: i for i, t in enumerate(self.ids)}
        if len(self.row) != len(self.ids):
            raise ValueError("task ids in a pool must be unique")

    def rows(self, tasks: Sequence[Hashable] | set) -> np.ndarray:
        return np.array(sorted(self.row[t] for t in tasks if t in self.row), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Queue:
    """The rows most wanted next, best first. Each comes with the class that asks for it and
    that class's logit for it: recorded with the label (`LabelState.record_query`), they
    are the evidence that calibrates the class's next choice (model.class_choice)."""

    rows: np.ndarray  # pool rows
    ranks: np.ndarray  # each row's rank within the class that asks for it
    targets: tuple[str, ...]  # that class
    logits: np.ndarray  # that class's logit for the row

    def __len__(self) -> int:
        return len(self.rows)


class Prioritiser:
    def __init__(
        self,
        targets: list[str],
        config: RankerConfig | None = None,
        prototypes: dict[str, np.ndarray] | None = None,
        columns: int | None = None,
    ) -> None:
        self.targets = list(targets)
        self.config = config or RankerConfig()
        self.prototypes = prototypes or {}
        # The leading pool columns its rankers see (None: all): a view of the pool, such as
        # the embedding without its lexical columns (model.view_choice), with no copy of it.
        self.columns = columns
        self.rng = np.random.default_rng(self.config.random_state)
        self.rankers_: dict[str, CosineRanker | LinearRanker] = {}
        self.scores_: np.ndarray | None = None  # (n, k) scores of the pool
        self.raw_scores_: np.ndarray | None = None  # the same before any outlier prior
        self.ids_: list[Hashable] | None = None  # the pool those scores belong to
        self.seals_: SealsView | None = None  # on a large pool: what each step ranks
        self.view_: np.ndarray | None = None  # the pool rows the last fit ranked (SEALS)
        self.pseudo_negatives_: dict[str, set[Hashable]] = {}  # drawn by the last fit

    def fit(
        self,
        pool: Pool,
        state: LabelState,
        rarity: np.ndarray | PoolRarity | None = None,
        index: PoolIndex | None = None,
    ) -> Prioritiser:
        """Refit every class on the current labels and rescore the pool; `state` is read,
        never written (the pseudo-negatives drawn are `pseudo_negatives_`).

        On a pool of `seals_above` rows or more, the same work runs on a SEALS view of the
        pool instead (`model.seals.SealsView`), so a step never touches all rows.
        `index` is the pool's neighbour index, kept by the caller (the worker keeps one over
        the embedding and saves it); without one, the view indexes the pool itself.
        `rarity` (one outlier score per pool row, model.screening; a `PoolRarity` scores
        the rows read only) is the exploration prior of classes with no positive yet.
        """
        self.view_ = None
        if not self.config.needs_index(len(pool.ids)):
            return self._fit(pool, state, None if rarity is None else rarity[:])
        if self.seals_ is None:
            from model.seals import SealsView

            self.seals_ = SealsView(self.config.seals_k, self.config.seals_sample)
        queries = {t: self.prototypes[t] for t in self.targets if t in self.prototypes}
        view = self.seals_.restrict(pool, pool.rows(state.labels), queries, index, self.rng)
        self.view_ = self.seals_.rows
        return self._fit(view, state, None if rarity is None else rarity[self.view_])

    def _fit(self, pool: Pool, state: LabelState, rarity: np.ndarray | None) -> Prioritiser:
        labelled = np.zeros(len(pool.ids), dtype=bool)
        self.labelled_ = pool.rows(state.labels)
        labelled[self.labelled_] = True
        self.X_ = X = self._seen(pool.X)
        self.unlabelled_ = np.flatnonzero(~labelled)
        before = self._previous_scores(pool)
        cfg = self.config
        self.contexts_: list[ClassContext] = []
        for j, target in enumerate(self.targets):
            pos, neg = pool.rows(state.positives(target)), pool.rows(state.negatives(target))
            prototype = self.prototypes.get(target)
            ranker, pseudo = fit_class_ranker(
                X,
                pos,
                neg,
                self.unlabelled_,
                None if before is None else before[:, j],
                None if prototype is None else self._seen(prototype),
                previous=self.rankers_.get(target),
                f_a=cfg.f_a,
                C=cfg.C,
                bottom_fraction=cfg.bottom_fraction,
                keep_top=cfg.keep_top,
                human_weight=cfg.human_weight,
                rng=self.rng,
            )
            self.rankers_[target] = ranker
            self.pseudo_negatives_[target] = {pool.ids[i] for i in pseudo.tolist()}
            self.contexts_.append(
                ClassContext(len(pos), len(neg), ranker.stage == "linear", self.config.uncertainty)
            )
        self.scores_ = self.raw_scores_ = self.score(pool.X)
        unseen = [j for j, ctx in enumerate(self.contexts_) if ctx.n_positives == 0]
        if rarity is not None and self.config.outlier_prior > 0 and unseen:
            from model.screening import blend_prior

            self.scores_ = self.raw_scores_.copy()
            for j in unseen:  # still ranked by its prototype: cosine-like scale
                blend = blend_prior(self.scores_[:, j], rarity, self.config.outlier_prior)
                self.scores_[:, j] = 2 * blend - 1
        linear = [j for j, ctx in enumerate(self.contexts_) if ctx.linear]
        if self.config.knn_blend > 0 and linear:
            self._blend_neighbours(X, pool, state, linear)
        self.ids_ = list(pool.ids)
        if self.config.class_choice == "calibrated":  # the evidence the class choice reads
            self.asks_ = [state.recent_asks(t, self.config.precision_window) for t in self.targets]
        return self

    def _blend_neighbours(self, X: np.ndarray, pool: Pool, state: LabelState, linear) -> None:
        """Each linear class's ranking mixed with its kNN posterior (model.knn); the raw
        scores, which the pseudo-negatives and estimates read, stay the linear model's."""
        from model.knn import K, blend, knn_posterior, nearest_labelled

        neighbours, similarity = nearest_labelled(X, self.labelled_, K)
        if self.scores_ is self.raw_scores_:
            self.scores_ = self.raw_scores_.copy()
        for j in linear:
            positive = np.zeros(len(pool.ids), dtype=bool)
            positive[pool.rows(state.positives(self.targets[j]))] = True
            posterior = knn_posterior(neighbours, similarity, positive)
            self.scores_[:, j] = blend(self.scores_[:, j], posterior, self.config.knn_blend)

    def forget_solutions(self) -> Prioritiser:
        """The pool's columns changed (a feature update): the next fit starts each class
        afresh, since a warm start needs the old columns. The last ranking stays, and the
        next pseudo-negatives are drawn from it."""
        self.rankers_ = {}
        return self

    def _previous_scores(self, pool: Pool) -> np.ndarray | None:
        """The last fit's scores (before any prior) of `pool`'s rows, which the
        pseudo-negatives are drawn from: when `pool` is the last fit's with rows appended
        (a SEALS working set grows so, a pool by imports), the appended rows scored by the
        last fit's rankers. None for another pool: the positives' centroid ranks it."""
        old = self.ids_
        if self.raw_scores_ is None or old is None or len(pool.ids) < len(old):
            return None
        if len(pool.ids) == len(old):
            return self.raw_scores_ if pool.ids == old else None
        if pool.ids[: len(old)] != old:
            return None
        return np.vstack([self.raw_scores_, self.score(pool.X[len(old) :])])

    def score(self, X: np.ndarray) -> np.ndarray:
        """(n, k) per-class scores; one matrix product for all classes."""
        W = np.stack([self.rankers_[t].weights[0] for t in self.targets], axis=1)
        return project(self._seen(X), W, [self.rankers_[t].weights[1] for t in self.targets])

    def _seen(self, X: np.ndarray) -> np.ndarray:
        """The columns of `X` (rows or one vector) the rankers see: a view, not a copy."""
        return X if self.columns is None else X[..., : self.columns]

    def queue(self, n: int) -> Queue:
        """The `n` unlabelled rows most wanted next."""
        if self.scores_ is None:
            raise RuntimeError("call fit() before queue()")
        cand = self.unlabelled_
        P = self.probabilities(self.scores_[cand])
        logits = np.log(np.clip(P, 1e-9, 1)) - np.log(np.clip(1 - P, 1e-9, 1))
        strategy = STRATEGIES[self.config.strategy]
        contexts = self.contexts_
        if "information_density" in (self.config.strategy, self.config.uncertainty):
            density = self.density(cand)
            contexts = [
                replace(c, density=density, beta=self.config.density_beta) for c in contexts
            ]
        keys = [strategy(logits[:, j], ctx) for j, ctx in enumerate(contexts)]
        self._choose_class(keys, logits)
        k = len(self.targets)
        best = reduce(np.maximum, P.T)  # P.max(axis=1), 10x faster across so few columns
        order, ranks, classes = combine(
            keys, n + k, tiebreak=-best, class_order=-self.class_precision_
        )
        heads = np.flatnonzero((ranks == 0) & (classes == self.head_class_))
        if len(heads):  # the drawn class's first choice goes first
            first = heads[0]
            keep = np.r_[first, np.delete(np.arange(len(order)), first)]
            order, ranks, classes = order[keep], ranks[keep], classes[keep]
        order, ranks, classes = order[:n], ranks[:n], classes[:n]
        rows = cand[order]
        q = Queue(
            rows if self.view_ is None else self.view_[rows],
            ranks,
            tuple(self.targets[c] for c in classes),
            logits[order, classes],
        )
        return q

    def _choose_class(self, keys: list[np.ndarray], logits: np.ndarray) -> None:
        """`head_class_`, whose first choice goes first, and `class_precision_`, which orders
        the classes in the rest of the queue (see model.class_choice)."""
        if self.config.class_choice == "calibrated" and len(logits):
            heads = logits[[int(np.argmin(k)) for k in keys], np.arange(len(keys))]
            self.class_precision_, self.head_class_ = calibrated_choice(
                heads, self.asks_, self.config.offset_prior_sd, self.rng
            )
        else:  # the most probable head first (combine's tiebreak)
            self.class_precision_, self.head_class_ = np.zeros(len(keys)), None

    def density(self, rows: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Mean cosine similarity of each row to the rows given, in O(n·d), not O(n²).

        For unit vectors, mean_j cos(x, x_j) = x · mean_j x_j; computed in float32 chunks.
        """
        centre = self.X_[rows].mean(axis=0, dtype=np.float32)
        out = np.empty(len(rows), dtype=np.float32)
        for s in range(0, len(rows), chunk):
            out[s : s + chunk] = project(self.X_[rows[s : s + chunk]], centre)
        return out

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """`score`'s (n, classes) scores on the one probability-like scale of `predict`."""
        return class_probabilities(
            scores, [self.rankers_[t].stage == "linear" for t in self.targets]
        )

    def predict(self, X: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Best target per row and its probability-like score, on one scale for every stage.

        A linear class's margin goes through a sigmoid, a cosine class's similarity is mapped
        from [-1, 1] to [0, 1], so classes at different stages can be compared.
        """
        prob = self.probabilities(self.score(X))
        best = prob.argmax(axis=1)
        return [self.targets[i] for i in best], prob[np.arange(len(prob)), best]
