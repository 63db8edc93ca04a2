"""Retrain + rescore of a 100k-item pool: the cost of one label in the service (issue 2).

Synthetic clustered unit vectors (14 classes, 5 of them targets), 768-d by default: the
default features (384 embedding + 384 lexical columns); `--dim 384` for the embedding
alone. 300 human labels; each repetition adds one label, refits every class and ranks the
queue (fit + queue(100)), as the worker does after an annotation. In the same run:

- the default (every row ranked at each step, as below 200,000 tasks), on 1 BLAS thread
  (the other core left to the web server and Label Studio) and on 2 (the worker sets no
  limit, so this is how it runs when nothing else is busy);
- that refit from a cold start (the baseline: a fresh Prioritiser each time, no
  warm-started logistic regressions), on 1 thread;
- SEALS (`seals_above=0`, as from 200,000 tasks: a working set of the labelled items'
  neighbours and a tenth of the pool, kept between steps), handed a neighbour index over
  the first 384 columns as the worker does (built when tasks are imported; timed apart),
  on 1 thread;
- both views of the view choice (model.view_choice: the default and the embedding's
  columns alone, their queues interleaved), warm, on 1 thread;
- after the warm 1-thread refit, the per-class estimates the worker computes next
  (backend.estimates over model/estimate.py: calibration, 400 draws, the interval), on the
  fit's own pool scores, with every label in the history as a pick of one class.

    python3 benchmarks/retrain_100k.py [--n 100000] [--reps 15] [--dim 768]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.estimates import class_estimates  # noqa: E402
from model.labels import LabelState  # noqa: E402
from model.prioritiser import Pool, Prioritiser, RankerConfig  # noqa: E402
from model.seals import PoolIndex  # noqa: E402
from model.view_choice import ViewChoice  # noqa: E402


def make_pool(n: int, d: int = 384, k: int = 14, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    labels = rng.integers(0, k, n)
    X = centres[labels] + rng.normal(scale=1.5, size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), labels, rng


def time_estimates(prio: Prioritiser, pool: Pool, state: LabelState, targets: list[str]) -> float:
    """Seconds for the worker's estimates after a fit; each label a pick of one class, at
    the score it has now (the worker keeps the score it had when asked)."""
    scores = prio.raw_scores_
    asked = {
        t: (targets[t % len(targets)], float(scores[t, t % len(targets)])) for t in state.labels
    }
    t0 = time.perf_counter()
    class_estimates(targets, pool, dict(state.labels), asked, scores)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--labels", type=int, default=300)
    p.add_argument("--dim", type=int, default=768, help="feature width (default: 384 + 384)")
    args = p.parse_args()
    X, labels, rng = make_pool(args.n, args.dim)
    targets = [f"c{i}" for i in range(5)]
    pool = Pool(list(range(args.n)), X)
    state = LabelState(targets)
    for r in rng.choice(args.n, args.labels, replace=False):
        state.set_label(int(r), f"c{labels[r]}")
    t = time.perf_counter()
    index = PoolIndex.build(pool.ids, X, min(384, args.dim))  # the worker's, at import
    build = time.perf_counter() - t
    choice = RankerConfig(view_choice=True)
    runs = {  # name: (prioritiser, or None for a fresh one each time; BLAS threads)
        "warm, 1 thread": (Prioritiser(targets, RankerConfig()), 1),
        "warm, 2 threads": (Prioritiser(targets, RankerConfig()), 2),
        "cold (baseline)": (None, 1),
        "SEALS, warm": (Prioritiser(targets, RankerConfig(seals_above=0)), 1),
        # issue 16: both views fitted and their queues interleaved (model.view_choice)
        "view choice, warm": (ViewChoice(targets, choice, None, min(384, args.dim)), 1),
    }
    timings: dict[str, list[float]] = {name: [] for name in [*runs, "estimates"]}
    for prio, _ in runs.values():  # the first fit is cold for all
        if prio is not None:
            prio.fit(pool, state, index=index).queue(100)
    for _ in range(args.reps):
        unlabelled = [i for i in rng.integers(0, args.n, 10) if int(i) not in state.labels]
        state.set_label(int(unlabelled[0]), f"c{labels[unlabelled[0]]}")
        for name, (prio, threads) in runs.items():
            prio = prio or Prioritiser(targets, RankerConfig())
            with threadpool_limits(threads):
                t = time.perf_counter()
                prio.fit(pool, state, index=index).queue(100)
                timings[name].append(time.perf_counter() - t)
            if name == "warm, 1 thread":
                with threadpool_limits(1):
                    timings["estimates"].append(time_estimates(prio, pool, state, targets))
    seals = runs["SEALS, warm"][0]
    n_pseudo = sum(len(v) for v in seals.pseudo_negatives_.values())
    print(
        f"pool {args.n} x {args.dim}, 5 target classes, {len(state.labels)} labels, "
        f"{n_pseudo} pseudo-negatives in all; {args.reps} repetitions"
    )
    medians = {name: statistics.median(ts) for name, ts in timings.items()}
    for name, ts in timings.items():
        ms = sorted(1000 * t for t in ts)
        ratio = medians["cold (baseline)"] / medians[name]
        print(
            f"  {name:<20} p50 {statistics.median(ms):7.1f} ms   max {ms[-1]:7.1f} ms"
            + (
                f"   {ratio:4.1f}x faster than the baseline (medians, same run)"
                if name != "estimates"
                else "   after the warm 1-thread fit"
            )
        )
    both = [a + b for a, b in zip(timings["warm, 1 thread"], timings["estimates"], strict=True)]
    print(f"  {'fit + estimates':<20} p50 {1000 * statistics.median(both):7.1f} ms (1 thread)")
    working = len(seals.view_)
    print(
        f"  SEALS's working set at the end: {working} rows; its index over 384 columns "
        f"(built once, at import): {build:.1f} s"
    )


if __name__ == "__main__":
    main()
