"""Query strategies: which unlabelled items a class wants labelled next.

Every strategy answers the same call, `strategy(scores, ctx) -> keys`, where `scores` are
the class ranker's scores of the candidates and lower keys are wanted sooner. The
combination across classes (`combine`) gives one queue: a task's priority is its best
rank in any class's order, so the next task is the single one some class wants most.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.rankers import sigmoid


@dataclass(frozen=True)
class ClassContext:
    n_positives: int
    n_negatives: int
    linear: bool  # whether 0 is a meaningful decision boundary for the scores
    uncertainty: str = "margin"  # what `adaptive` asks for once |Lp| >= |Ln|
    density: np.ndarray | None = None  # mean cosine of each candidate to the pool
    beta: float = 1.0  # weight of the density in information density


Strategy = Callable[[np.ndarray, ClassContext], np.ndarray]


def most_likely_positive(scores: np.ndarray, ctx: ClassContext) -> np.ndarray:
    return -scores


def margin(scores: np.ndarray, ctx: ClassContext) -> np.ndarray:
    """Closest to the boundary; a cosine ranker has none, so it asks for likely positives."""
    if not ctx.linear:
        return most_likely_positive(scores, ctx)
    return np.abs(scores)


def information_density(scores: np.ndarray, ctx: ClassContext) -> np.ndarray:
    """Entropy × density^beta (Settles & Craven 2008): uncertain items from dense regions
    first, so the margin phase does not spend labels on outliers. (Entropy alone orders the
    candidates of one binary class exactly as the margin does: both are monotone in |score|.)"""
    if not ctx.linear:
        return most_likely_positive(scores, ctx)
    if ctx.density is None:
        raise ValueError("information density needs the candidates' density")
    p = sigmoid(scores)
    entropy = -(p * np.log(p + 1e-12) + (1 - p) * np.log(1 - p + 1e-12))
    return -entropy * np.clip(ctx.density, 1e-6, None) ** ctx.beta


def adaptive(scores: np.ndarray, ctx: ClassContext) -> np.ndarray:
    """The paper's rule: likely positives while |Lp| < |Ln|, then the uncertainty measure."""
    if ctx.n_positives < ctx.n_negatives:
        return most_likely_positive(scores, ctx)
    return UNCERTAINTY[ctx.uncertainty](scores, ctx)


UNCERTAINTY: dict[str, Strategy] = {
    "margin": margin,
    "information_density": information_density,
}
STRATEGIES: dict[str, Strategy] = {
    "adaptive": adaptive,
    "positive": most_likely_positive,
    **UNCERTAINTY,
}


def combine(
    keys: list[np.ndarray],
    n: int,
    tiebreak: np.ndarray | None = None,
    class_order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top `n` candidates by their best per-class rank: (positions, best ranks, their class).

    Candidates of equal best rank (each class's first, each class's second, ...) are ordered
    by `class_order[class]` (lower first), then by `tiebreak`, then by position. Only each
    class's own top `n` can reach the combined top `n`: O(k·m) for k classes, m candidates.
    """
    m = len(keys[0]) if keys else 0
    n = min(n, m)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    best_rank = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    best_class = np.zeros(m, dtype=np.int64)
    for c, k in enumerate(keys):
        # everything up to the n-th smallest key, ties included, in position order
        cut = k[np.argpartition(k, n - 1)[n - 1]] if n < m else np.inf
        top = np.flatnonzero(k <= cut)
        top = top[np.argsort(k[top], kind="stable")][:n]
        better = np.arange(len(top)) < best_rank[top]
        best_rank[top[better]] = np.flatnonzero(better)
        best_class[top[better]] = c
    pool = np.flatnonzero(best_rank < n)
    secondary = tiebreak[pool] if tiebreak is not None else np.zeros(len(pool))
    by_class = class_order[best_class[pool]] if class_order is not None else np.zeros(len(pool))
    order = pool[np.lexsort((secondary, by_class, best_rank[pool]))][:n]
    return order, best_rank[order], best_class[order]
