"""One ranker per target class over a pool of vectors, and the queue they agree on.

The same object runs in the simulation and in the service: `fit` on the pool and the
label state, then `queue(n)` for the next tasks to label and `predict` for any vectors.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.labels import LabelState
from model.rankers import CosineRanker, LinearRanker, fit_class_ranker
from model.strategies import ClassContext, combine, get_strategy


@dataclass
class RankerConfig:
    f_a: float = 100.0  # pseudo-negatives per (|Lp| + 0.1 |Ln|), as in the paper
    strategy: str = "positive"
    C: float = 10.0
    bottom_fraction: float = 0.5
    random_state: int = 0

    def __post_init__(self) -> None:
        get_strategy(self.strategy)
        if self.f_a < 0:
            raise ValueError(f"f_a must be >= 0, got {self.f_a}")
        if not 0 < self.bottom_fraction <= 1:
            raise ValueError(f"bottom_fraction must be in (0, 1], got {self.bottom_fraction}")


def prototype_text(target: str, description: str | None = None) -> str:
    """`EducationalInstitution` -> `educational institution`, plus the manager's description."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-]+", " ", target).strip().lower()
    return f"{words}: {description}" if description else words


@dataclass
class Pool:
    """Vectors of every task, with the task ids in row order."""

    ids: list[Hashable]
    X: np.ndarray
    row: dict[Hashable, int] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.X):
            raise ValueError(f"{len(self.ids)} ids for {len(self.X)} vectors")
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.row = {t: i for i, t in enumerate(self.ids)}
        if len(self.row) != len(self.ids):
            raise ValueError("task ids in a pool must be unique")

    def rows(self, tasks: Sequence[Hashable] | set) -> np.ndarray:
        return np.array(sorted(self.row[t] for t in tasks if t in self.row), dtype=np.int64)


class Prioritiser:
    def __init__(
        self,
        targets: list[str],
        config: RankerConfig | None = None,
        prototypes: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.targets = list(targets)
        self.config = config or RankerConfig()
        self.prototypes = prototypes or {}
        self.rng = np.random.default_rng(self.config.random_state)
        self.rankers_: dict[str, CosineRanker | LinearRanker] = {}
        self.scores_: np.ndarray | None = None  # (n, k) scores of the pool
        self.ids_: list[Hashable] | None = None  # the pool those scores belong to

    def fit(self, pool: Pool, state: LabelState) -> Prioritiser:
        """Refit every class on the current labels and rescore the pool."""
        labelled = np.zeros(len(pool.ids), dtype=bool)
        labelled[pool.rows(state.labels)] = True
        self.unlabelled_ = np.flatnonzero(~labelled)
        same_pool = self.scores_ is not None and self.ids_ == pool.ids
        self.contexts_: list[ClassContext] = []
        for j, target in enumerate(self.targets):
            pos, neg = pool.rows(state.positives(target)), pool.rows(state.negatives(target))
            previous = self.scores_[:, j] if same_pool else None
            ranker, pseudo = fit_class_ranker(
                pool.X, pos, neg, self.unlabelled_, previous, self.prototypes.get(target),
                previous=self.rankers_.get(target), f_a=self.config.f_a, C=self.config.C,
                bottom_fraction=self.config.bottom_fraction, rng=self.rng,
            )  # fmt: skip
            self.rankers_[target] = ranker
            state.set_pseudo_negatives(target, [pool.ids[i] for i in pseudo.tolist()])
            self.contexts_.append(ClassContext(len(pos), len(neg), ranker.stage == "linear"))
        self.scores_ = self.score(pool.X)
        self.ids_ = list(pool.ids)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """(n, k) per-class scores; one matrix product for all classes."""
        W = np.stack([self.rankers_[t].weights[0] for t in self.targets], axis=1)
        b = np.array([self.rankers_[t].weights[1] for t in self.targets], dtype=np.float32)
        return X @ W + b

    def queue(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The `n` unlabelled rows most wanted next, in order, with their best per-class rank."""
        if self.scores_ is None:
            raise RuntimeError("call fit() before queue()")
        cand = self.unlabelled_
        keys = [
            get_strategy(self.config.strategy)(self.scores_[cand, j], ctx)
            for j, ctx in enumerate(self.contexts_)
        ]
        order, ranks = combine(keys, n)
        return cand[order], ranks

    def predict(self, X: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Best target per row and its probability-like score, on one scale for every stage.

        A linear class's margin goes through a sigmoid, a cosine class's similarity is mapped
        from [-1, 1] to [0, 1], so classes at different stages can be compared.
        """
        s = self.score(X)
        linear = np.array([self.rankers_[t].stage == "linear" for t in self.targets])
        prob = np.where(linear, 1.0 / (1.0 + np.exp(-s)), (s + 1) / 2)
        best = prob.argmax(axis=1)
        return [self.targets[i] for i in best], prob[np.arange(len(prob)), best]
