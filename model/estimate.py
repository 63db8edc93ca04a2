"""How many rare items a class has in the pool, how many are left, and when to stop.

The loop labels what the ranker asks for, so the labels are no random sample: the share of
positives among them says nothing about the rest of the pool. What holds instead is that
each label was *chosen by its score*: whether a task was asked for depended only on the
scores at the time, not on its true class. So the hit rate of the picks, as a function of
the score they had when asked (a Platt calibration, `model.class_choice.platt_fit`), is an
unbiased fit of P(positive | score) wherever picks were made: the selection correction.
The count left is the sum of that calibration over the unlabelled tasks' current scores.

That sum rests on one assumption, which every number below inherits: **the calibration's
logistic form holds across the whole ranking**, including its tail, where the ranker never
asks. An *audit sample* (a small share of the picks drawn at random, `draw_audit`) does two
things. Its labels join the calibration (they too were drawn by score alone), so the tail
is fitted rather than extrapolated. And its importance-weighted residuals in the tail
(`audit_correction`, the difference estimator of survey sampling) count the positives the
calibration misses there whatever its form: a hit where the curve promised none raises
the estimate and its upper end. Without an audit sample the stopping rule stays off.
Two further approximations: the scores of different retrains are on one scale (each
retrain warm-starts the last; the logit of a task moves little), and positives among the
unlabelled are independent Bernoulli draws given their calibrated probabilities.

The interval adds three uncertainties: the calibration's (its Laplace posterior, drawn
from), the audit correction's (its standard error; only evidence of more positives is
used, never of fewer) and the count's given the probabilities (Poisson). The stopping
rule reads its upper end. What no small audit can do is see a group of positives the
ranker scores lowest of all: 20 audit labels rarely land on 1% of the tail. The rule's
95% is conditional on the calibration, and the audit only tests it: `stop` is a strong
hint, not a guarantee.

The guarantee is `verified`: a test of "recall < target" on the audit's *uniform* draws
alone (model.recall_test), which assumes nothing of the ranker. Its price is the point of
`random_labels_to_verify`: with a class of 40 items, recall 0.95 allows 2 misses, and
ruling out 3 hidden among N tasks takes about 0.7 N random labels. For rare classes a
valid guarantee costs a large share of the pool; the calibrated hint is what is
affordable, and the count says what the rest costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.class_choice import platt_fit
from model.rankers import sigmoid
from model.recall_test import sample_test

LEVEL = 0.90  # the two-sided interval; its upper end is the one-sided 95% bound
TARGET_RECALL = 0.95
MIN_AUDIT = 10  # audit labels before the stopping rule may fire
TAIL = 0.05  # calibrated probability below which the audit sample checks the calibration
UNIFORM_SHARE = 0.5  # of the audit proposal: the defensive share that reaches the whole tail


@dataclass(frozen=True)
class Pick:
    """One labelled task of the history, for one class, in the order labelled.

    `score`: the class's score (logit) for the task at the retrain before it was labelled;
    None for a task labelled without being asked for (a seed, an imported label).
    `audit`: drawn by `draw_audit`, not asked for by the ranker, with `q` its probability
    of being drawn then; `uniform`: drawn by the mixture's uniform half (what `draw_audit`
    returned), from `population` unlabelled tasks of a pool of `pool`."""

    positive: bool
    score: float | None = None
    audit: bool = False
    q: float | None = None
    uniform: bool = False
    population: int | None = None
    pool: int | None = None


@dataclass(frozen=True)
class Estimate:
    """One class after a retrain. Counts are of the whole pool (labelled or not).

    found: positives labelled. total: the estimated positives in the pool (found + the
    estimate left), with [low, high] its 90% interval. recall: found / total; recall_low:
    found / high, the recall reached with 95% confidence. labels_to_next_find: expected
    labels, taken down this class's ranking, until the next positive (None when the pool
    probably holds none; the ranker's recent hit rate is what the calibration fits at the
    head of the ranking). stop: recall_low >=
    the target recall, with an audit sample behind it: the calibrated rule, a strong hint.
    verified: recall >= the target with 95% confidence from the audit's uniform draws
    alone (`sample_test`), the guarantee. random_labels_to_verify: uniform audit labels
    more, none of them a find, that would verify it (0 once verified; None with nothing
    found). reason: the basis of the numbers, or why they are None."""

    found: int
    total: float | None
    low: float | None
    high: float | None
    recall: float | None
    recall_low: float | None
    labels_to_next_find: float | None
    stop: bool
    reason: str
    verified: bool = False
    random_labels_to_verify: int | None = None


def unknown(found: int, reason: str, verify: tuple[bool, int | None] = (False, None)) -> Estimate:
    return Estimate(found, None, None, None, None, None, None, False, reason, *verify)


def estimate(
    history: Sequence[Pick],
    unlabelled_scores: np.ndarray,
    *,
    target_recall: float = TARGET_RECALL,
    level: float = LEVEL,
    min_audit: int = MIN_AUDIT,
    draws: int = 400,
    seed: int = 0,
) -> Estimate:
    """The estimate for one class from its label history and the current ranker's scores of
    the unlabelled tasks (the pool's size is their count plus the history's).

    Rests on the module's assumptions: picks chosen by score alone, a logistic calibration
    over the whole ranking, one score scale across retrains."""
    if not 0 < level < 1 or not 0 < target_recall <= 1:
        raise ValueError(f"level and target_recall must be in (0, 1), got {level}, {target_recall}")
    s = np.asarray(unlabelled_scores, dtype=np.float64).ravel()
    found = sum(p.positive for p in history)
    if not history and len(s) == 0:
        return unknown(0, "the pool is empty")
    if not np.all(np.isfinite(s)):
        raise ValueError("unlabelled scores must be finite")
    verify = sample_test(history, len(s), target_recall) if found else (False, None)
    if len(s) == 0:  # every task labelled: the count is exact
        exact = float(found)
        recall = 1.0 if found else None
        return Estimate(
            found,
            exact,
            exact,
            exact,
            recall,
            recall,
            None,
            found > 0,
            "every task is labelled: the count is exact",
            *verify,
        )
    if found == 0:
        return unknown(0, "no positive labelled yet: nothing shows how the scores map to hits")
    if all(p.positive for p in history):
        return unknown(
            found, "no negative labelled yet (one class only?): nothing to calibrate", verify
        )
    asked = [p for p in history if p.score is not None]
    x = np.array([p.score for p in asked], dtype=np.float64)
    y = np.array([p.positive for p in asked], dtype=np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        return unknown(
            found,
            "the ranker's picks are all hits or all misses so far: their hit "
            "rate by score cannot be fitted yet",
            verify,
        )
    theta, cov = platt_fit([(x, y)], offset_sd=10.0, slope_sd=10.0)
    levels, weights = _binned(s)
    rng = np.random.default_rng(seed)
    thetas = rng.multivariate_normal(theta, cov, size=draws, method="cholesky")
    means = sigmoid(thetas[:, :1] * levels + thetas[:, 1:]) @ weights  # expected left, per draw
    shift, sd = audit_correction(history, theta)
    missed = np.maximum(0.0, shift + sd * rng.standard_normal(draws))  # evidence against, only
    left = rng.poisson(means + missed)
    lo, hi = np.quantile(left, [(1 - level) / 2, (1 + level) / 2])
    prob = sigmoid(theta[0] * levels + theta[1])  # in ranking order
    total = found + float(prob @ weights) + max(0.0, shift)
    low, high = found + float(lo), found + float(hi)
    n_audit = sum(p.audit for p in history)
    recall_low = found / high
    stop = recall_low >= target_recall and n_audit >= min_audit
    if n_audit >= min_audit:
        reason = f"calibrated on {len(asked)} picks, {n_audit} of them audit picks"
    else:
        reason = (
            f"calibrated on {len(asked)} picks; {n_audit} audit picks (of {min_audit} "
            "needed to stop): the ranking's tail is extrapolated"
        )
    wait = expected_wait(prob, weights)
    return Estimate(found, total, low, high, found / total, recall_low, wait, stop, reason, *verify)


def audit_correction(
    history: Sequence[Pick], theta: np.ndarray, tail: float = TAIL
) -> tuple[float, float]:
    """(mean, standard error) of the audit sample's importance-weighted residuals in the
    ranking's tail, (hit - calibrated probability) / q where that probability is below
    `tail`: an unbiased estimate of the positives the calibration misses there, whatever its
    form (the difference estimator of survey sampling). The head, where the ranker's own
    picks fit the calibration, is left to it: residuals there only add noise. A hit deep in
    the tail, where the curve promised none, weighs 1/q and widens the interval at once.
    (0, 0) with fewer than two audit picks.

    Assumes the tasks labelled since an audit draw carry no residual of their own (they are
    the ranking's head)."""
    audits = [p for p in history if p.audit and p.q is not None and p.score is not None]
    if len(audits) < 2:
        return 0.0, 0.0
    q = np.array([p.q for p in audits])
    hit = np.array([p.positive for p in audits], dtype=np.float64)
    fitted = sigmoid(theta[0] * np.array([p.score for p in audits]) + theta[1])
    r = np.where(fitted < tail, (hit - fitted) / q, 0.0)
    return float(r.mean()), float(r.std(ddof=1) / np.sqrt(len(r)))


def expected_wait(p: np.ndarray, counts: np.ndarray | None = None) -> float | None:
    """Expected labels down a ranking with hit probabilities `p` (in ranking order; with
    `counts`, `counts[i]` tasks at `p[i]`) until the first hit, counting the whole list when
    none comes; None when a hit is unlikely (below one in two) anywhere in it."""
    counts = np.ones(len(p)) if counts is None else counts
    none_after = np.exp(np.cumsum(counts * np.log1p(-np.minimum(p, 1 - 1e-12))))
    if none_after[-1] > 0.5:
        return None
    none_before = np.concatenate([[1.0], none_after[:-1]])
    # within a level of c tasks at p, the survivals are none_before * (1-p)^k, k = 0..c-1
    q = 1 - p
    within = np.where(p > 0, (1 - q**counts) / np.maximum(p, 1e-300), counts)
    return float((none_before * within).sum())


def _binned(s: np.ndarray, exact: int = 200, bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(scores, counts), highest first: the `exact` highest scores one by one, the rest in
    `bins` equal-width bins of score at their mean, so that a draw of the calibration costs
    O(exact + bins), not O(pool), and nothing needs the whole pool sorted (a partition and
    a histogram: a few ms at 100k tasks, where a sort costs 12). Narrow bins of score keep
    the logistic nearly linear across each."""
    if len(s) <= exact + bins:
        return np.sort(s)[::-1], np.ones(len(s))
    split = np.argpartition(s, len(s) - exact)
    top, rest = np.sort(s[split[len(s) - exact :]])[::-1], s[split[: len(s) - exact]]
    lo, width = rest.min(), max(float(np.ptp(rest)), 1e-12) / bins
    which = np.minimum(((rest - lo) / width).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, weights=rest, minlength=bins)
    full = counts > 0
    means, counts = (sums[full] / counts[full])[::-1], counts[full][::-1]
    return np.concatenate([top, means]), np.concatenate([np.ones(exact), counts])


def audit_probabilities(p: np.ndarray, uniform_share: float = UNIFORM_SHARE) -> np.ndarray:
    """The audit's draw probability of each unlabelled task: a defensive mixture of the
    ranker's probability (most audit labels land where positives may be) and uniform (every
    task, the tail included, can be drawn: no score is ever unchecked)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(p) == 0:
        raise ValueError("no unlabelled task to audit")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probabilities must be finite and >= 0")
    if not 0 < uniform_share <= 1:
        raise ValueError(f"uniform_share must be in (0, 1], got {uniform_share}")
    total = p.sum()
    ranked = p / total if total > 0 else np.full(len(p), 1 / len(p))
    return (1 - uniform_share) * ranked + uniform_share / len(p)


@dataclass(frozen=True)
class AuditDraw:
    """index: position of the audit task in the probabilities drawn from; q: its draw
    probability under the mixture; uniform: drawn by the mixture's uniform half (what
    the sample test counts)."""

    index: int
    q: float
    uniform: bool


def draw_audit(
    p: np.ndarray, rng: np.random.Generator, uniform_share: float = UNIFORM_SHARE
) -> AuditDraw:
    """One draw of the mixture `audit_probabilities`, by its halves: a coin picks the
    uniform half with probability `uniform_share`, so that half's draws are a uniform
    sample of the unlabelled tasks, whatever the ranker thinks."""
    q = audit_probabilities(p, uniform_share)
    uniform = bool(rng.random() < uniform_share)
    if uniform:
        i = int(rng.integers(len(q)))
    else:
        ranked = (q - uniform_share / len(q)) / (1 - uniform_share)
        i = int(rng.choice(len(q), p=ranked / ranked.sum()))
    return AuditDraw(i, float(q[i]), uniform)
