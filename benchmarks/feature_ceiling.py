"""How well can a linear model on each feature set find the rare items, given many labels?

A ceiling for the loop, not a run of it: per target, logistic regression trained on the
whole held-out part of dbpedia14 (7,469 labels, about 530 positives per class), then the
pool (prevalence 0.005, as in simulate_dbpedia.py) ranked by it. Prints precision among the
top 50 and top 94 (the pool's positives besides the seeds) per target, and the best recall
at 300 labels that these five fixed rankings allow when the labels are shared out between
the classes with hindsight.

    python3 benchmarks/feature_ceiling.py            # 3 random states, ~2 min
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data_dir import DBPEDIA14  # noqa: E402
from benchmarks.harness import DBPEDIA_TARGETS as TARGETS  # noqa: E402
from benchmarks.harness import load, pool_for  # noqa: E402
from model.features import LexicalFeatures, with_lexical  # noqa: E402


def best_found(hits: list[np.ndarray], budget: int) -> int:
    """Most positives k fixed rankings yield in `budget` labels, shared out with hindsight."""
    best = np.zeros(budget + 1)
    for h in hits:
        gain = np.concatenate([[0], np.cumsum(h[:budget])])
        new = np.zeros(budget + 1)
        for b in range(budget + 1):
            n = np.arange(min(b, len(gain) - 1) + 1)
            new[b] = np.max(best[b - n] + gain[n])
        best = new
    return int(best[budget])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--prevalence", type=float, default=0.005)
    p.add_argument("--dims", type=int, default=384, help="lexical columns (LSA components)")
    p.add_argument("--budget", type=int, default=300)
    args = p.parse_args(argv)
    threadpool_limits(2)
    b = load(DBPEDIA14, args.budget, None)
    texts = b.data.texts
    print(
        f"{'seed':<5}{'features':<10}"
        + "".join(f"{t[:14]:>16}" for t in TARGETS)
        + f"{'recall@' + str(args.budget):>12}"
    )
    print(f"{'':<15}" + "".join(f"{'p@50 / p@94':>16}" for _ in TARGETS))
    for seed in range(args.seeds):
        rows, seeds, _ = pool_for(b, args.prevalence, seed, TARGETS)
        unseeded = np.setdiff1d(np.arange(len(rows)), list(seeds))
        lexical = LexicalFeatures(args.dims, random_state=seed).fit([texts[i] for i in rows])
        L_pool = lexical.transform([texts[i] for i in rows])
        L_test = lexical.transform([texts[i] for i in b.test])
        sets = {
            "minilm": (b.X[b.test], b.X[rows]),
            "lexical": (L_test, L_pool),
            "both": (with_lexical(b.X[b.test], L_test), with_lexical(b.X[rows], L_pool)),
        }
        y_test, y_pool = b.labels[b.test], b.labels[rows][unseeded]
        positives = int(np.isin(y_pool, TARGETS).sum())
        for name, (F_test, F_pool) in sets.items():
            cells, hits = "", []
            for t in TARGETS:
                model = LogisticRegression(C=10, class_weight="balanced", max_iter=1000)
                model.fit(F_test, y_test == t)
                order = np.argsort(-model.decision_function(F_pool[unseeded]))
                hit = (y_pool[order] == t).astype(int)
                hits.append(hit)
                n_t = int((y_pool == t).sum())
                cells += f"{hit[:50].mean():>9.2f} / {hit[:n_t].mean():.2f}"
            found = best_found(hits, args.budget)
            recall = found / min(args.budget, positives)
            print(f"{seed:<5}{name:<10}{cells}{recall:>12.3f}", flush=True)
    print(
        f"p@k: share of target items among the k best-ranked pool items (the {len(TARGETS)} "
        f"targets at prevalence {args.prevalence}; seeds excluded); recall@{args.budget}: "
        "the five rankings' best shared-out yield / min(budget, positives)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
