"""Per-class rankers: cosine to a prototype, then a class-weighted linear model.

The stages follow Mullapudi et al. 2021 (Algorithm 1): with no positive yet, a prototype
from the class name; with positives but no negatives, the centroid of the positives;
otherwise logistic regression on positives, negatives and pseudo-negatives sampled from
the bottom of the current ranking. Every ranker answers `score(X)`: higher means more
likely positive, and 0 is the decision boundary of the linear stage.
"""

from __future__ import annotations

import numpy as np
from sklearn import config_context
from sklearn.linear_model import LogisticRegression
from threadpoolctl import ThreadpoolController

_BLAS = ThreadpoolController()  # built once: each `limit()` on it costs microseconds


def project(X: np.ndarray, W: np.ndarray, b=0.0, chunk: int = 2048) -> np.ndarray:
    """`X @ W + b` in float32. A compact (float16) pool is converted chunk by chunk, so a
    product over a million rows never holds a float32 copy of them all. Chunks that fit in
    the CPU's cache convert faster than large ones (benchmarks/compact_pool.py)."""
    W, b = np.asarray(W, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if X.dtype == np.float32:
        return X @ W + b
    out = np.empty((len(X), *W.shape[1:]), dtype=np.float32)
    for s in range(0, len(X), chunk):
        out[s : s + chunk] = X[s : s + chunk].astype(np.float32) @ W + b
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError("cannot rank by a zero vector")
    return (v / norm).astype(np.float32)


class CosineRanker:
    """Cosine similarity to one direction: a class prototype, or the centroid of positives."""

    stage = "cosine"

    def __init__(self, direction: np.ndarray | None = None) -> None:
        self.direction = direction

    def fit(self, X_pos: np.ndarray) -> CosineRanker:
        if len(X_pos) == 0:
            raise ValueError("the centroid needs at least one positive")
        self.direction_ = _unit(np.asarray(X_pos, dtype=np.float32).mean(axis=0))
        return self

    @classmethod
    def from_prototype(cls, prototype: np.ndarray) -> CosineRanker:
        ranker = cls(prototype)
        ranker.direction_ = _unit(np.asarray(prototype, dtype=np.float32))
        return ranker

    @property
    def weights(self) -> tuple[np.ndarray, float]:
        return self.direction_, 0.0

    def score(self, X: np.ndarray) -> np.ndarray:
        return project(X, self.direction_)


class LinearRanker:
    """Logistic regression with inverse-frequency class weights, scored by its margin."""

    stage = "linear"

    def __init__(self, C: float, class_weight: str | None = "balanced", max_iter: int = 200):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> LinearRanker:
        """Refits start from the previous solution: one new label barely moves it."""
        y = np.asarray(y)
        if len(np.unique(y)) != 2:
            raise ValueError("the linear ranker needs both positives and negatives")
        if self.class_weight == "balanced":
            sample_weight = balanced_sample_weight(y, sample_weight)
        elif self.class_weight is not None:
            raise ValueError(f"class_weight must be 'balanced' or None, not {self.class_weight!r}")
        if getattr(self, "model_", None) is None:
            self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter, warm_start=True)
        # This fit runs after every label. Its rows are pool vectors (normalised embeddings
        # and TF-IDF, finite by construction), so sklearn's checks (~10% of it) are skipped.
        # One BLAS thread: numpy and scipy each bring an OpenBLAS, and on small products a
        # second thread in each makes their idle workers spin against each other (a step at
        # 100k took 1.9x as long: README, "Retrain and rescore at 100k").
        with (
            _BLAS.limit(limits=1),
            config_context(assume_finite=True, skip_parameter_validation=True),
        ):
            self.model_.fit(X, y, sample_weight=sample_weight)
        self.coef_ = self.model_.coef_[0].astype(np.float32)
        self.intercept_ = float(self.model_.intercept_[0])
        return self

    @property
    def weights(self) -> tuple[np.ndarray, float]:
        return self.coef_, self.intercept_

    def score(self, X: np.ndarray) -> np.ndarray:
        return project(X, self.coef_, self.intercept_)


def balanced_sample_weight(y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
    """Sample weights times sklearn's `class_weight="balanced"` (each class counted by its
    weights), in float32 as the fit computes them: the same model, without the label
    encoding the fit would run for them at every refit."""
    w = np.ones(len(y), np.float32) if sample_weight is None else sample_weight
    w = np.asarray(w, dtype=np.float32)
    classes, y_ind = np.unique(y, return_inverse=True)
    counts = np.bincount(y_ind, weights=w)
    return w * (counts.sum() / (len(classes) * counts))[y_ind].astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, clipped so that a large margin cannot overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def class_probabilities(scores: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """(n, k) scores of k classes on one [0, 1] scale, so classes at different stages compare:
    a linear class's margin through a sigmoid, a cosine class's similarity from [-1, 1]."""
    return np.where(np.asarray(linear, dtype=bool), sigmoid(scores), (scores + 1) / 2)


def n_pseudo_negatives(n_pos: int, n_neg: int, f_a: float) -> int:
    """The paper's budget of pseudo-negatives: f_a * (|Lp| + 0.1 |Ln|)."""
    return int(round(f_a * (n_pos + 0.1 * n_neg)))


def sample_pseudo_negatives(
    scores: np.ndarray,
    unlabelled: np.ndarray,
    n: int,
    rng: np.random.Generator,
    bottom_fraction: float,
    keep_top: int,
) -> np.ndarray:
    """Draw `n` rows uniformly from the lowest-scored `bottom_fraction` of the unlabelled,
    never from their `keep_top` highest-scored (on a small pool, a share is too few rows)."""
    if n <= 0 or len(unlabelled) == 0:
        return np.empty(0, dtype=np.int64)
    n_bottom = min(int(len(unlabelled) * bottom_fraction), len(unlabelled) - keep_top)
    n_bottom = max(1, n_bottom)
    bottom = unlabelled[np.argpartition(scores[unlabelled], n_bottom - 1)[:n_bottom]]
    return rng.choice(bottom, size=min(n, n_bottom), replace=False)


def fit_class_ranker(
    X: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    unlabelled: np.ndarray,
    current_scores: np.ndarray | None,
    prototype: np.ndarray | None,
    *,
    previous: CosineRanker | LinearRanker | None = None,
    f_a: float,
    C: float,
    bottom_fraction: float,
    keep_top: int,
    human_weight: float,
    rng: np.random.Generator,
) -> tuple[CosineRanker | LinearRanker, np.ndarray]:
    """Fit the stage that the labels allow; return the ranker and the pseudo-negatives used.

    `current_scores` is the ranking the pseudo-negatives are drawn from (the class's previous
    scores); without it, the centroid of the positives ranks the pool for that purpose.
    A `previous` linear ranker is refitted in place (warm start). The parameters have no
    defaults here: `model.prioritiser.RankerConfig` holds them.
    """
    none = np.empty(0, dtype=np.int64)
    if len(pos) == 0:
        if prototype is None:
            raise ValueError("a class with no positives needs a prototype (its name embedded)")
        return CosineRanker.from_prototype(prototype), none
    centroid = CosineRanker().fit(X[pos])
    if len(neg) == 0:
        return centroid, none
    if current_scores is None:
        current_scores = centroid.score(X)
    n_pseudo = n_pseudo_negatives(len(pos), len(neg), f_a)
    pseudo = sample_pseudo_negatives(
        current_scores, unlabelled, n_pseudo, rng, bottom_fraction, keep_top
    )
    rows = np.concatenate([pos, neg, pseudo])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg) + len(pseudo))])
    # A human label is worth `human_weight` pseudo-negatives: the few hard negatives a person
    # labelled near the boundary must not drown among thousands of easy machine ones.
    w = np.concatenate([np.full(len(pos) + len(neg), human_weight), np.ones(len(pseudo))])
    linear = previous if isinstance(previous, LinearRanker) and previous.C == C else LinearRanker(C)
    return linear.fit(X[rows], y, sample_weight=w), pseudo
