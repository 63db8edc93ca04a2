"""The peers of the held-out suite (benchmarks/heldout.py): the tools a user would pick
instead, replayed on the suite's own pools and initial positives.

    <peers venv>/bin/python benchmarks/peers.py REQUEST.json RESULT.json [--jobs N]

This file runs inside the peers' own virtual environment (heldout.py creates it and calls
this as a subprocess), so it imports the standard library, numpy and the peers only, never
rarelabel. The request names the set's texts, an .npy of their embeddings, and the pools:
for each, its rows of the set, which of them are the target (relevant), the initial
positives (positions in the pool) and the random state. The result lists, per pool and
peer, the pool positions it asked for after the initial positives, in order; heldout.py
counts the finds, so every method is scored by the same code.

Both peers need a negative before their first model, and both get it the way ASReview's own
simulation does: its first cycle labels the pool top-down (the pool is shuffled, so at
random) until one relevant and one irrelevant record are known. Those labels count against
the budget, like every other label.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path

import numpy as np

PEERS = ("asreview", "small-text")
SMALL_TEXT_STRATEGIES = ("anchoral", "least_confidence")
DEFAULT_SMALL_TEXT = "anchoral"


def versions() -> dict[str, str]:
    return {p: version(p) for p in ("asreview", "small-text", "scikit-learn", "numpy")}


def top_down_start(relevant: np.ndarray, seeds: list[int]) -> list[int]:
    """ASReview's start: pool positions in order, skipping the seeds, up to the first
    irrelevant one (at most a few labels: the pool is shuffled and the target is rare)."""
    taken = set(seeds)
    asked = []
    for pos in range(len(relevant)):
        if pos in taken:
            continue
        asked.append(pos)
        if not relevant[pos]:
            break
    return asked


def asreview_run(texts: list[str], relevant: np.ndarray, seeds: list[int], budget: int,
                 state: int) -> list[int]:  # fmt: skip
    """ASReview LAB's simulation with its default model (ELAS u4: bigram TF-IDF, SVM,
    balanced sampling, max querier, one record per step), as `asreview simulate` builds it:
    a top-down cycle until both classes are known, then the model's cycle."""
    import pandas as pd
    from asreview import ActiveLearningCycle, Simulate
    from asreview.models.models import get_ai_config
    from asreview.models.queriers import TopDown
    from asreview.models.stoppers import IsFittable, NLabeled

    np.random.seed(state)  # the CLI's --seed
    records = pd.DataFrame({"title": [""] * len(texts), "abstract": texts})
    cycles = [
        ActiveLearningCycle(querier=TopDown(), stopper=IsFittable()),
        ActiveLearningCycle.from_meta(get_ai_config()["value"]),
    ]
    stopper = NLabeled(len(seeds) + budget)
    sim = Simulate(records, relevant.astype(int), cycles, stopper=stopper, print_progress=False)
    sim.label(seeds)
    sim.review()
    return [int(r) for r in sim._results["record_id"].tolist()[len(seeds) :]]


def small_text_learner(X: np.ndarray, strategy: str, C: float, state: int):
    """small-text's pool-based learner: scikit-learn's logistic regression (balanced class
    weights) on the suite's embeddings, queried by `strategy`."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from small_text import (
        AnchorSubsampling,
        LeastConfidence,
        PoolBasedActiveLearner,
        SklearnClassifier,
        SklearnDataset,
    )
    from small_text.classifiers.factories import AbstractClassifierFactory

    class EmbeddedClassifier(SklearnClassifier):
        """AnchorAL asks the classifier for its embedding: here the fixed one."""

        def embed(self, data_set, pbar=None):
            return data_set.x

    class Factory(AbstractClassifierFactory):
        def __init__(self, base):
            self.base = base

        def new(self):
            return EmbeddedClassifier(clone(self.base), num_classes=2)

    base = LogisticRegression(C=C, class_weight="balanced", max_iter=1000, random_state=state)
    query = LeastConfidence()  # in two classes: the same order as breaking ties and entropy
    if strategy == "anchoral":
        query = AnchorSubsampling(query)
    dataset = SklearnDataset(X, np.zeros(len(X), dtype=int), target_labels=np.array([0, 1]))
    return PoolBasedActiveLearner(Factory(base), query, dataset)


def small_text_run(X: np.ndarray, relevant: np.ndarray, seeds: list[int], budget: int,
                   state: int, strategy: str, C: float) -> list[int]:  # fmt: skip
    np.random.seed(state)
    asked = top_down_start(relevant, seeds)
    learner = small_text_learner(X, strategy, C, state)
    known = np.array(seeds + asked)
    learner.initialize_data(known, relevant[known].astype(int))
    while len(asked) < budget:
        q = learner.query(num_samples=1)
        learner.update(relevant[q].astype(int))
        asked.extend(int(i) for i in q)
    return asked[:budget]


def one_run(task: tuple[dict, str, dict]) -> dict:
    """One (pool, peer): the positions asked for, or the error that stopped it."""
    pool, peer, ctx = task
    rows = np.array(pool["rows"])
    relevant = np.array(pool["relevant"], dtype=bool)
    seeds = [int(s) for s in pool["seeds"]]
    t0 = time.perf_counter()
    out = {"key": pool["key"], "peer": peer, "asked": None, "error": None}
    try:
        if peer == "asreview":
            texts = [ctx["texts"][i] for i in rows]
            out["asked"] = asreview_run(texts, relevant, seeds, ctx["budget"], pool["state"])
        else:
            X = np.load(ctx["embeddings"], mmap_mode="r")[rows]
            out["asked"] = small_text_run(
                np.ascontiguousarray(X, dtype=np.float64), relevant, seeds, ctx["budget"],
                pool["state"], ctx["small_text_strategy"], ctx["C"],
            )  # fmt: skip
    except Exception as e:  # reported as the reason the peer is absent, never hidden
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc(limit=6)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


CTX: dict = {}  # the request, read once per process


def _init(request_path: str) -> None:
    CTX.update(json.loads(Path(request_path).read_text()))


def _run_in_worker(task: tuple[dict, str]) -> dict:
    return one_run((*task, CTX))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("request")
    p.add_argument("result")
    p.add_argument("--jobs", type=int, default=1)
    args = p.parse_args(argv)
    _init(args.request)
    tasks = [(pool, peer) for pool in CTX["pools"] for peer in CTX["peers"]]
    runs = []
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(args.request,)) as ex:
        for r in ex.map(_run_in_worker, tasks):
            runs.append(r)
            status = r["error"] or f"{len(r['asked'])} labels"
            print(f"  {r['peer']} {r['key']}: {status} in {r['seconds']:.0f} s", flush=True)
    result = {"versions": versions(), "small_text_strategy": CTX["small_text_strategy"]}
    Path(args.result).write_text(json.dumps({**result, "runs": runs}))


if __name__ == "__main__":
    main()
