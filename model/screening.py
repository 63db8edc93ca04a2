"""Screening incoming data: how unusual is each task, before and after labels exist.

Before any label exists, an outlier model over the embeddings gives each task a *rarity*
in [0, 1]: the share of a reference set (the rows the model was fitted on) that is more
typical than the task. 0.95 means "more unusual than 95% of the reference"; the scale is
the same for every method (Isolation Forest, Local Outlier Factor, a small autoencoder's
reconstruction error), because each method's raw score is turned into this percentile.

Once a ranker is trained, its per-class probabilities say more: a task is likely rare when
any target class's probability exceeds 0.5 (`flag_by_probability`).

Both summaries have the same shape, `{"n", "likely_rare", "likely_common"}`, so the
backend can log and export either one per import.

Fitting uses at most `max_fit_rows` rows (a seeded subsample), so fitting cost does not
grow with the pool; scoring is linear in the rows scored.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from model.data import DataError

METHODS = ("iforest", "lof", "autoencoder")
# benchmarks/screening_prior.py: flagging at 0.9 catches 60-65% of the rare items of a
# dbpedia14 pool with the autoencoder, 40-51% with LOF, 24-27% with Isolation Forest
DEFAULT_METHOD = "autoencoder"
# ...and as an exploration prior, the prototype blended with LOF rarity at weight 0.05 beats
# the prototype alone (per-target recall@50 0.57 vs 0.44 at prevalence 0.005)
DEFAULT_PRIOR_METHOD = "lof"
DEFAULT_PRIOR_WEIGHT = 0.05
DEFAULT_THRESHOLD = 0.9  # flag the tasks more unusual than 90% of the reference
DEFAULT_PROBABILITY_THRESHOLD = 0.5


def _check_matrix(X: np.ndarray, what: str = "vectors") -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"{what} must be a 2-d array (rows x dimensions), got shape {X.shape}")
    if len(X) == 0:
        raise DataError(f"empty pool: no {what} to screen")
    if not np.isfinite(X).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return X


def check_method(method: str) -> str:
    if method not in METHODS:
        raise DataError(f"unknown screening method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of each value among `values`, in [0, 1] (ties share a rank)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    ref = np.sort(values)
    return _ecdf(ref, values)


def _ecdf(sorted_ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Share of `sorted_ref` below x, counting ties as half: 0 = below all, 1 = above all."""
    left = np.searchsorted(sorted_ref, x, side="left")
    right = np.searchsorted(sorted_ref, x, side="right")
    return (left + right) / (2.0 * len(sorted_ref))


class OutlierScreen:
    """An unsupervised rarity score over embeddings, scikit-learn style.

    >>> screen = OutlierScreen("iforest", random_state=0).fit(X_pool)
    >>> rarity = screen.score(X_new)          # (n,) in [0, 1], higher = more unusual
    >>> rarity_pool = screen.fit_score(X_pool)  # fit and score the same rows

    method: "iforest" (sklearn IsolationForest), "lof" (LocalOutlierFactor, novelty=True)
        or "autoencoder" (an MLPRegressor trained to reconstruct its input; the squared
        reconstruction error is the raw score).
    max_fit_rows: fit on a seeded subsample of at most this many rows.
    The raw score of each method (higher = more unusual) becomes a rarity by its
    percentile among the raw scores of the fitted rows (for LOF, their training LOF,
    computed without counting a row as its own neighbour).
    """

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        random_state: int = 0,
        max_fit_rows: int = 10_000,
        n_estimators: int = 200,
        n_neighbors: int = 20,
        hidden: int = 32,
        max_iter: int = 30,
    ) -> None:
        self.method = method
        self.random_state = random_state
        self.max_fit_rows = max_fit_rows
        self.n_estimators = n_estimators
        self.n_neighbors = n_neighbors
        self.hidden = hidden
        self.max_iter = max_iter

    def fit(self, X: np.ndarray) -> OutlierScreen:
        check_method(self.method)
        X = _check_matrix(X)
        if len(X) < 2:
            raise DataError(f"screening needs at least 2 rows to fit, got {len(X)}")
        rng = np.random.default_rng(self.random_state)
        rows = self.fit_sample(len(X), rng)  # the autoencoder's halves draw on after it
        Xf = X[rows]
        if self.method == "iforest":
            from sklearn.ensemble import IsolationForest

            self.model_ = IsolationForest(
                n_estimators=self.n_estimators, random_state=self.random_state
            ).fit(Xf)
            fit_raw = -self.model_.score_samples(Xf)
            reference = fit_raw
        elif self.method == "lof":
            from sklearn.neighbors import LocalOutlierFactor

            k = max(1, min(self.n_neighbors, len(Xf) - 1))
            self.model_ = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(Xf)
            fit_raw = -self.model_.negative_outlier_factor_
            reference = fit_raw
        else:
            # Two autoencoders, each fitted on one half: every fitted row is scored by the
            # model that never saw it, and new rows by the first model, whose reference is
            # its error on the second half. A model's own training rows would look too typical.
            half = rng.permutation(len(Xf))
            a, b = half[: (len(Xf) + 1) // 2], half[(len(Xf) + 1) // 2 :]
            self.model_ = self._autoencoder(Xf[a])
            fit_raw = np.empty(len(Xf), dtype=np.float64)
            fit_raw[b] = self._raw(Xf[b])
            fit_raw[a] = self._raw(Xf[a], self._autoencoder(Xf[b]))
            reference = fit_raw[b]
        self.fit_rows_ = rows
        self.fit_raw_ = np.asarray(fit_raw, dtype=np.float64)
        self.reference_ = np.sort(np.asarray(reference, dtype=np.float64))
        self.n_features_in_ = X.shape[1]
        return self

    def fit_sample(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """The rows of an n-row matrix that `fit` fits on: all, or a seeded subsample of
        `max_fit_rows`. A caller may gather just these from a large pool and fit on them."""
        if n <= self.max_fit_rows:
            return np.arange(n)
        rng = rng or np.random.default_rng(self.random_state)
        return np.sort(rng.choice(n, self.max_fit_rows, replace=False))

    def _autoencoder(self, X: np.ndarray):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        model = MLPRegressor(
            hidden_layer_sizes=(self.hidden,),
            max_iter=self.max_iter,
            batch_size=min(256, len(X)),
            random_state=self.random_state,
        )
        # small matrix products: one BLAS thread is ~10x faster than two on a busy machine
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(X, X)

    def _raw(self, X: np.ndarray, model=None) -> np.ndarray:
        """The method's own outlier score, higher = more unusual (not comparable across methods)."""
        model = model if model is not None else self.model_
        if self.method == "autoencoder":
            with threadpool_limits(1):
                return np.mean((model.predict(X) - X) ** 2, axis=1, dtype=np.float64)
        return -np.asarray(model.score_samples(X), dtype=np.float64)

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted(X)
        return self._raw(_check_matrix(X))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Rarity in [0, 1] of each row: its percentile among the fitted rows' raw scores."""
        return _ecdf(self.reference_, self.raw_score(X))

    def fit_score(self, X: np.ndarray) -> np.ndarray:
        """Fit on X (subsampled) and return the rarity of every row of X.

        The rows the model was fitted on get their training score (for LOF, a row is not
        its own neighbour), so fitted and unfitted rows are on the same footing.
        """
        self.fit(X)
        raw = np.empty(len(X), dtype=np.float64)
        rest = np.ones(len(X), dtype=bool)
        rest[self.fit_rows_] = False
        raw[self.fit_rows_] = self.fit_raw_
        if rest.any():
            raw[rest] = self._raw(np.asarray(X, dtype=np.float32)[rest])
        return _ecdf(self.reference_, raw)

    def _check_fitted(self, X: np.ndarray) -> None:
        if not hasattr(self, "reference_"):
            raise RuntimeError("call fit() before score()")
        X = np.asarray(X)
        if X.ndim == 2 and X.shape[1] != self.n_features_in_:
            raise DataError(
                f"vectors have {X.shape[1]} dimensions; the screen was fitted on "
                f"{self.n_features_in_}"
            )


class PoolRarity:
    """`OutlierScreen.fit_score` of a pool, each row scored the first time it is read.

    A large pool's step reads the rarity of its SEALS working set only (`rarity[rows]`),
    while scoring every row costs minutes at a million (LOF: a neighbour search per row).
    The fit draws the rows `OutlierScreen.fit` would, so every value equals `fit_score`'s.
    `prepare` maps stored rows to the screen's space (the embedding out of lexical rows)
    and is applied to the rows read only: no copy of the whole pool.
    """

    def __init__(self, screen: OutlierScreen, X: np.ndarray, prepare=None) -> None:
        self.screen, self.X = screen, X
        self.prepare = prepare or (lambda rows: rows)
        fit_rows = screen.fit_sample(len(X))
        screen.fit(self.prepare(X[fit_rows]))
        self.fit_rows = fit_rows  # pool rows; the screen's own `fit_rows_` index this array
        self.values = np.full(len(X), np.nan)
        self.values[fit_rows] = _ecdf(screen.reference_, screen.fit_raw_)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.arange(len(self.values))[rows]  # an index array, a mask or a slice
        missing = np.unique(rows[np.isnan(self.values[rows])])
        if len(missing):
            self.values[missing] = self.screen.score(self.prepare(self.X[missing]))
        return self.values[rows]


def summarise(rarity: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, int]:
    """Counts of likely rare / likely common tasks by an outlier rarity.

    A task is likely rare when its rarity is above `threshold`, i.e. it is more unusual
    than that share of the reference data: 0.9 flags, on the fitted pool itself, about
    its 10% most unusual tasks; on a later import, the share flagged shows how much of it
    is more unusual than the pool the screen was fitted on.
    """
    flagged = flag_by_rarity(rarity, threshold)
    return _counts(flagged)


def flag_by_rarity(rarity: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    if not 0 <= threshold <= 1:
        raise DataError(f"threshold must be in [0, 1], got {threshold}")
    return np.asarray(rarity, dtype=np.float64) > threshold


def flag_by_probability(
    proba: np.ndarray,
    threshold: float = DEFAULT_PROBABILITY_THRESHOLD,
    columns: np.ndarray | None = None,
) -> np.ndarray:
    """Likely rare by a trained ranker: any target class's probability above `threshold`.

    `proba` is (n, k): one column per rare target class, each in [0, 1]. `columns`, a
    boolean mask of length k, keeps only the classes whose probability means something:
    pass the classes whose ranker is linear (a sigmoid of a margin). A cosine-stage score
    mapped to [0, 1] as (cos + 1) / 2 is above 0.5 for almost every text (99.7% of
    dbpedia14 against the class-name prototypes), so it must not count.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:
        proba = proba[:, None]
    if proba.ndim != 2:
        raise DataError(f"probabilities must be an (n, k) array, got shape {proba.shape}")
    if columns is not None:
        columns = np.asarray(columns, dtype=bool)
        if columns.shape != (proba.shape[1],):
            raise DataError(f"column mask of shape {columns.shape} for {proba.shape[1]} columns")
        proba = np.where(columns, proba, -np.inf)
    if proba.shape[1] == 0:
        return np.zeros(len(proba), dtype=bool)
    return proba.max(axis=1) > threshold


def summarise_probabilities(
    proba: np.ndarray,
    threshold: float = DEFAULT_PROBABILITY_THRESHOLD,
    targets: list[str] | None = None,
    columns: np.ndarray | None = None,
) -> dict:
    """`summarise` for a trained ranker: {"n", "likely_rare", "likely_common"} by max
    probability > `threshold` over the `columns` that count (see `flag_by_probability`);
    with `targets`, also "by_target": {target: count}, where each flagged task counts for
    its most probable counted target."""
    flagged = flag_by_probability(proba, threshold, columns)
    out: dict = _counts(flagged)
    if targets is not None:
        proba = np.asarray(proba, dtype=np.float64).reshape(len(flagged), -1)
        if proba.shape[1] != len(targets):
            raise DataError(f"{proba.shape[1]} probability columns for {len(targets)} targets")
        if columns is not None:
            proba = np.where(np.asarray(columns, dtype=bool), proba, -np.inf)
        best = proba.argmax(axis=1) if proba.shape[1] else np.zeros(0, dtype=int)
        out["by_target"] = {t: int(np.sum(flagged & (best == j))) for j, t in enumerate(targets)}
    return out


def _counts(flagged: np.ndarray) -> dict[str, int]:
    n, rare = int(len(flagged)), int(np.sum(flagged))
    return {"n": n, "likely_rare": rare, "likely_common": n - rare}


def blend_prior(
    prototype_scores: np.ndarray, rarity: np.ndarray, weight: float = DEFAULT_PRIOR_WEIGHT
) -> np.ndarray:
    """An exploration prior for a target with no positives: rank-average of its prototype
    (cosine) scores and the outlier rarity; `weight` is the rarity's share (0 = prototype
    only, 1 = rarity only). Returns a score in [0, 1], higher = ask sooner."""
    if not 0 <= weight <= 1:
        raise DataError(f"rarity weight must be in [0, 1], got {weight}")
    p = percentile_rank(np.asarray(prototype_scores, dtype=np.float64))
    return (1 - weight) * p + weight * np.asarray(rarity, dtype=np.float64)


def screen(
    X: np.ndarray,
    method: str = DEFAULT_METHOD,
    threshold: float = DEFAULT_THRESHOLD,
    random_state: int = 0,
    **kwargs,
) -> tuple[np.ndarray, dict[str, int], OutlierScreen]:
    """Fit a screen on X and score X: (rarity, summary, fitted screen)."""
    flag_by_rarity(np.zeros(0), threshold)  # validate before the costly part
    model = OutlierScreen(check_method(method), random_state=random_state, **kwargs)
    rarity = model.fit_score(X)
    return rarity, summarise(rarity, threshold), model


# ---------------------------------------------------------------- the offline command


@dataclass
class ScreenReport:
    """What `rarelabel screen` computed: one rarity per row, and the counts."""

    ids: list[str]
    rarity: np.ndarray
    flagged: np.ndarray
    summary: dict[str, int]
    method: str
    threshold: float
    labels: list[str] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def small_labels(self) -> set[str]:
        """Labels whose count is at most half the median label count (the "rare" ones)."""
        if not self.labels:
            return set()
        counts = Counter(self.labels)
        half_median = 0.5 * float(np.median(list(counts.values())))
        return {lab for lab, c in counts.items() if c <= half_median}

    def per_label(self) -> list[tuple[str, int, float, float]]:
        """(label, n, mean rarity, share flagged), most unusual label first."""
        if not self.labels:
            return []
        labels = np.array(self.labels)
        rows = []
        for lab in sorted(set(self.labels)):
            m = labels == lab
            rows.append(
                (lab, int(m.sum()), float(self.rarity[m].mean()), float(self.flagged[m].mean()))
            )
        return sorted(rows, key=lambda r: (-r[2], r[0]))


def screen_csv(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str | None = None,
    method: str = DEFAULT_METHOD,
    threshold: float = DEFAULT_THRESHOLD,
    random_state: int = 0,
    embedder=None,
    progress: bool = True,
) -> ScreenReport:
    """The `rarelabel screen` command minus printing: read, embed, fit, score, count."""
    from model.data import read_csv
    from model.embedding import Embedder, SQLiteCache, default_cache_path

    check_method(method)
    flag_by_rarity(np.zeros(0), threshold)
    data = read_csv(path, text_column, label_column)
    embedder = embedder or Embedder(cache=SQLiteCache(default_cache_path()))
    t0 = time.perf_counter()
    X = embedder.encode(data.texts, progress=progress)
    t1 = time.perf_counter()
    rarity, summary, _ = screen(X, method, threshold, random_state)
    t2 = time.perf_counter()
    return ScreenReport(
        ids=list(data.ids),
        rarity=rarity,
        flagged=flag_by_rarity(rarity, threshold),
        summary=summary,
        method=method,
        threshold=threshold,
        labels=list(data.labels) if label_column else None,
        seconds={"embed": t1 - t0, "fit_score": t2 - t1},
    )
