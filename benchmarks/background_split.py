"""Issue 16, part 4: the paper's background splitting, in the linear stage itself.

The default fits one logistic regression per rare class: its positives against every
negative, human and pseudo, as one class. But the negatives are many classes (a company's
are vehicles, schools, villages, ...), and one hyperplane must cut the class from all of
them at once. Background splitting (Mullapudi et al. 2021, section 3.3) gives each part of
the background its own class: here a softmax over the rare class and the pool's k-means
clusters, every negative labelled with its cluster. The class is then told apart from each
cluster by its own hyperplane, and it scores by its log-odds against all of them:

    s(x) = z_t(x) - log sum_k exp(z_k(x))      (0 where P(class) = 1/2, as the binary margin)

So the region a class ranks first is an intersection of half-spaces, not one half-space.
It costs a multinomial fit over 33 classes after every label instead of a binary one.

Benchmark-only: the service's rankers are linear, stored as one weight vector per class
(`model.stored`), and this one is not. `split_linear_stage()` swaps it into the loop for a
run, which is how `benchmarks/heldout.py --variants bg_split` measures it against the
default on the same pools; docs/heldout.md has the figures.

    python benchmarks/background_split.py --reps 5    # one refit's cost, beside the default's
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import prioritiser, rankers, simulate  # noqa: E402
from model.feature_update import background_classes  # noqa: E402

CLUSTERS = 32  # background classes per pool: the feature update's, fixed before any run


class SplitRanker:
    """Softmax regression over the rare class (the last class) and the background clusters."""

    stage = "linear"

    def __init__(self, C: float, max_iter: int = 200) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(
        self, X: np.ndarray, y: np.ndarray, background: np.ndarray, sample_weight: np.ndarray
    ) -> SplitRanker:
        """`y`: 1 for a positive, 0 for a negative; `background`: each row's cluster, which
        a negative is labelled with. A refit with the same classes starts from the last
        solution, as the linear ranker's does."""
        y = np.asarray(y)
        if len(np.unique(y)) != 2:
            raise ValueError("the split ranker needs both positives and negatives")
        target = int(background.max()) + 1
        classes = np.where(y == 1, target, background)
        weight = rankers.balanced_sample_weight(y, sample_weight)  # positives vs the rest
        present = np.unique(classes)
        model = getattr(self, "model_", None)
        if model is None or not np.array_equal(model.classes_, present):
            model = LogisticRegression(C=self.C, max_iter=self.max_iter, warm_start=True)
        with threadpool_limits(1):
            model.fit(X, classes, sample_weight=weight)
        self.model_ = model
        self.coef_ = model.coef_.astype(np.float32)  # (classes, d), the rare class last
        self.intercept_ = model.intercept_.astype(np.float32)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        Z = rankers.project(X, self.coef_.T, self.intercept_)
        rest = Z[:, :-1]
        top = rest.max(axis=1)
        return Z[:, -1] - (top + np.log(np.exp(rest - top[:, None]).sum(axis=1)))


def fit_split_ranker(
    X, pos, neg, unlabelled, current_scores, prototype, *, previous, rng, background, **config
):
    """`model.rankers.fit_class_ranker` with its linear stage split over the background:
    the same stages, the same pseudo-negatives drawn from the same generator."""
    warm = previous.linear_ if isinstance(previous, SplitRanker) else previous
    ranker, pseudo = rankers.fit_class_ranker(
        X, pos, neg, unlabelled, current_scores, prototype, previous=warm, rng=rng, **config
    )
    if ranker.stage != "linear":
        return ranker, pseudo
    rows = np.concatenate([pos, neg, pseudo])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg) + len(pseudo))])
    human = np.full(len(pos) + len(neg), config["human_weight"])
    w = np.concatenate([human, np.ones(len(pseudo))])
    split = previous if isinstance(previous, SplitRanker) else SplitRanker(config["C"])
    split.fit(X[rows], y, background(X)[rows], w)
    split.linear_ = ranker  # the binary fit it drew its pseudo-negatives beside, kept warm
    return split, pseudo


class SplitPrioritiser(prioritiser.Prioritiser):
    """Scores class by class: a split ranker has no single weight vector to stack."""

    def score(self, X: np.ndarray) -> np.ndarray:
        X = self._seen(X)
        return np.column_stack([self.rankers_[t].score(X) for t in self.targets])


@contextmanager
def split_linear_stage(clusters: int = CLUSTERS, random_state: int = 0) -> Iterator[None]:
    """Within it, `model.simulate.run`'s loop fits split rankers; each pool's clusters are
    computed once (k-means of its rows, `model.feature_update.background_classes`)."""
    cache: dict[tuple, np.ndarray] = {}

    def background(X: np.ndarray) -> np.ndarray:
        key = (X.__array_interface__["data"][0], X.shape)
        if key not in cache:
            cache.clear()
            cache[key] = background_classes(X, clusters, random_state)
        return cache[key]

    def fit(*args, **kwargs):
        return fit_split_ranker(*args, background=background, **kwargs)

    with (
        mock.patch.object(prioritiser, "fit_class_ranker", fit),
        mock.patch.object(simulate, "Prioritiser", SplitPrioritiser),
    ):
        yield


def time_refits(n: int, d: int, labels: int, reps: int) -> None:
    """One refit after a new label, each ranker warm, on a synthetic pool of `n` unit rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    background = background_classes(X, CLUSTERS)
    pos, neg = np.arange(labels // 5), np.arange(labels // 5, labels)
    pseudo = rng.choice(np.arange(labels, n), 100 * (len(pos) + len(neg) // 10), replace=False)
    rows = np.concatenate([pos, neg, pseudo])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg) + len(pseudo))]
    w = np.r_[np.full(labels, 2.0), np.ones(len(pseudo))]
    linear, split = rankers.LinearRanker(10.0), SplitRanker(10.0)
    times: dict[str, list[float]] = {"linear": [], "split": []}
    for r in range(reps + 1):
        y[labels // 5 + r] = 1 - y[labels // 5 + r]  # one label changes, as after a step
        fits = {
            "linear": lambda: linear.fit(X[rows], y, sample_weight=w),
            "split": lambda: split.fit(X[rows], y, background[rows], w),
        }
        for name, fit in fits.items():
            t0 = time.perf_counter()
            fit()
            if r:  # the first fit is cold
                times[name].append(time.perf_counter() - t0)
    lin, spl = np.median(times["linear"]), np.median(times["split"])
    print(
        f"{n} rows x {d}, {labels} labels, {len(pseudo)} pseudo-negatives: warm refit p50 "
        f"linear {lin * 1e3:.0f} ms, split {spl * 1e3:.0f} ms ({spl / lin:.1f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error("--reps must be >= 1")
    for labels in (50, 300):
        time_refits(35_000, 768, labels, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
