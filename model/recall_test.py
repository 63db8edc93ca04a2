"""A recall that is verified, not estimated: a test on uniform random labels alone.

The calibrated estimate (model.estimate) rests on the ranker's scores; this rests on nothing
but the uniform draws of the audit sample. It tests H0 "recall < target" and may reject it
at any label, as often as a manager looks, at 5% error: an *e-process* (Ramdas et al. 2023,
by Ville's inequality). Callaghan & Müller-Hansen's (2020) hypergeometric test, read after
every draw instead, verified a recall short of 0.95 in 6% of simulated second phases on
dbpedia14 (docs/benchmarks.md).

Let M be the positives unlabelled just before the first uniform draw. Before draw t there
are N_t unlabelled tasks and M - f_t positives among them, where f_t counts the positives
labelled since (by anyone: the ranker's finds are known). So a uniform draw hits with
p_t = (M - f_t) / N_t, whatever the ranker did between draws. Against an alternative with
c positives left (hit rate c / N_t), the likelihood ratio of the draws is a martingale
under M, and so is a mixture over c: it ever reaches 1/alpha with chance at most alpha.
H0 holds for every M of at least the positives found since plus the misses recall < target
needs; the test rejects when the mixture is >= 1/alpha under each such M.

Its price: with no hits it needs about N (1 - (alpha/2)^(1/k)) draws to rule out k hidden
positives among N, e.g. 0.7 N for a class of 40 items (recall 0.95 allows 2 misses, so 3
must be ruled out). For a rare class a guarantee costs a large share of the pool;
`sample_test` says how much, beforehand. A draw covers the pool it was drawn from, not
tasks imported (or deleted) after it: a change of the pool restarts the sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln, logsumexp

ALPHA = 0.05
ALTERNATIVES = np.array([0.0, 1.0, 2.0, 4.0, 8.0])  # positives left, under the alternatives
LOG_WEIGHTS = np.log([0.5, 0.125, 0.125, 0.125, 0.125])  # c = 0: fastest when nothing is hit
GRID = 64  # values of M tried one by one above the least H0 allows (the minimum is near it)


def missing_allowed(found, target_recall: float):
    """The most positives still unlabelled with recall >= target: floor(found (1-T) / T)."""
    return np.floor(np.asarray(found) * (1 - target_recall) / target_recall + 1e-9)


def log_evidence(
    hit: np.ndarray, found_before: np.ndarray, unlabelled: np.ndarray, M: np.ndarray
) -> np.ndarray:
    """(alternatives, draws, len(M)): each alternative's log likelihood ratio after each
    uniform draw, under each M. `hit[t]`: the draw found a positive; `found_before[t]`:
    positives labelled since the first draw, before this one (f_t); `unlabelled[t]`: the
    tasks it was drawn from (N_t). +inf once M is impossible (more positives than tasks,
    or a hit with none left): the data rule it out."""
    hit = np.asarray(hit, dtype=bool)[:, None]
    n_t = np.asarray(unlabelled, dtype=np.float64)[:, None]
    p = (np.asarray(M, dtype=np.float64)[None, :] - np.asarray(found_before)[:, None]) / n_t
    ruled_out = (p > 1) | (p < 0) | (hit & (p <= 0)) | (~hit & (p >= 1))
    impossible = np.maximum.accumulate(ruled_out, axis=0)
    p = np.clip(p, 1e-300, 1 - 1e-12)
    out = []
    with np.errstate(divide="ignore"):
        for c in ALTERNATIVES:
            q = np.minimum(c / n_t, 1 - 1e-12)
            step = np.where(hit, np.log(q) - np.log(p), np.log1p(-q) - np.log1p(-p))
            out.append(np.where(impossible, np.inf, np.cumsum(step, axis=0)))
    return np.stack(out)


def mixture(per_alternative: np.ndarray) -> np.ndarray:
    """The e-value's log: the alternatives' likelihood ratios, weighted (axis 0)."""
    w = LOG_WEIGHTS.reshape((-1,) + (1,) * (per_alternative.ndim - 1))
    return logsumexp(per_alternative + w, axis=0)


def hypotheses(least: float, most: float, upto: float | None = None) -> np.ndarray:
    """The values of M to test from `least` on: each up to `upto` (default `least`) and
    GRID more, then a geometric tail to `most` (far above, misses rule M out long before)."""
    top = max(least, upto if upto is not None else least) + GRID
    near = np.arange(least, top)
    tail = top + np.geomspace(1, max(most - top, 2), 16).round()
    return np.unique(np.concatenate([near, tail]))


def sample_test(
    history: Sequence, unlabelled: int, target_recall: float, alpha: float = ALPHA
) -> tuple[bool, int]:
    """(verified, uniform labels more to verify) for one class. `history`: its labelled
    tasks in the order labelled, as model.estimate.Pick (`positive`; a uniform audit draw
    has `uniform` and `population`, the unlabelled tasks it was drawn from); `unlabelled`:
    tasks unlabelled now. The labels more are uniform draws, all misses, with nothing else
    labelled meanwhile."""
    found = sum(p.positive for p in history)
    first = _sample_start(history, unlabelled + len(history))
    since = list(history[first:])
    f_now = sum(p.positive for p in since)
    M = hypotheses(f_now + missing_allowed(found, target_recall) + 1, unlabelled + f_now)
    per_c = np.zeros((len(ALTERNATIVES), len(M)))
    draws = [i for i, p in enumerate(since) if _usable(p)]
    if draws:
        f = np.cumsum([0] + [p.positive for p in since])
        per_c = log_evidence(
            np.array([since[i].positive for i in draws]),
            f[draws],
            np.array([since[i].population for i in draws]),
            M,
        )[:, -1]
    threshold = np.log(1 / alpha)
    N, R = float(unlabelled), M - f_now  # under M, R positives among the N unlabelled now

    def verified_after(m: int) -> bool:
        """Each alternative's factor for m more misses, prod_i (N - c - i) / (N - R - i)."""
        c = ALTERNATIVES[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            num = np.where(c + m <= N, gammaln(N - c + 1) - gammaln(N - c - m + 1), -np.inf)
            den = np.where(R + m <= N, gammaln(N - R + 1) - gammaln(N - R - m + 1), 0.0)
            ruled_out = np.isposinf(per_c[0]) | (R + m > N)  # by the draws, or by m misses
            logE = np.where(ruled_out, np.inf, mixture(np.where(ruled_out, 0, per_c) + num - den))
        return bool(logE.min() >= threshold)

    if verified_after(0):
        return True, 0
    lo, hi = 0, int(N)  # after every task, each M is ruled out or H0 is false
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if verified_after(mid) else (mid, hi)
    return False, hi


def _usable(p) -> bool:
    return bool(p.uniform and p.population and p.pool)


def _sample_start(history: Sequence, pool_now: int) -> int:
    """Where the sample begins: the first uniform draw made in the pool as it is now. A draw
    made before tasks were imported or deleted saw another pool, so the sample restarts
    after the last draw whose pool differs."""
    start = len(history)
    for i in range(len(history) - 1, -1, -1):
        p = history[i]
        if _usable(p):
            if p.pool != pool_now:
                break
            start = i
    return start


def second_phase(
    positive_left: np.ndarray,
    found: int,
    rng: np.random.Generator,
    target_recall: float,
    alpha: float = ALPHA,
) -> tuple[int, float]:
    """Callaghan & Müller-Hansen's second phase, simulated: the ranked labelling stops and
    uniform draws without replacement from the unlabelled tasks (`positive_left`: which are
    positive) go on until the test, read after every draw, verifies the target.
    (draws, true recall then)."""
    order = np.asarray(positive_left, dtype=bool)[rng.permutation(len(positive_left))]
    n = len(order)
    truth = found + int(order.sum())
    if n == 0:  # nothing left unlabelled: the count is exact
        return 0, 1.0
    hits = np.cumsum(order)
    before = np.concatenate([[0], hits[:-1]])
    least = hits + missing_allowed(found + hits, target_recall) + 1  # after each draw
    M = hypotheses(float(least.min()), float(least.max()) + n, float(least.max()))
    logE = mixture(log_evidence(order, before, n - np.arange(n), M))
    allowed = M[None, :] >= least[:, None]  # the M that H0 allows after each draw
    verified = np.where(allowed, logE, np.inf).min(axis=1) >= np.log(1 / alpha)
    first = int(np.argmax(verified)) if verified.any() else n - 1
    return first + 1, (found + int(hits[first])) / truth
