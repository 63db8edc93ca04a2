"""The cost of one feature update (model.feature_update) on this machine, by pool size.

    python benchmarks/feature_update.py                       # 10k, 30k, 100k rows
    python benchmarks/feature_update.py --rows 30000 --reps 5

Per pool size: the pool's background classes (k-means, once per pool: the service would
keep them), the network's fit on 300 labels and their pseudo-negatives, and the transform
of the whole pool, in seconds (median of --reps). The rows are random unit vectors of the
default's width (384 embedding + 384 LSA columns): the cost depends on the shapes, not on
the values. Whether the update pays is the held-out suite's question:
`python benchmarks/heldout.py --variants default,feature_update`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.feature_update import FeatureUpdate, background_classes  # noqa: E402


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", default="10000,30000,100000")
    p.add_argument("--columns", type=int, default=768)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    update = FeatureUpdate()
    print(f"{'rows':>8}{'k-means s':>11}{'fit s':>8}{'transform s':>13}")
    for n in (int(r) for r in args.rows.split(",")):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(n, args.columns)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        # 300 labels, 20 of them positive, and the default's pseudo-negatives for them
        labelled = rng.choice(n, 300, replace=False)
        pseudo = rng.choice(n, min(n - 300, 100 * (20 + 28)), replace=False)
        pos, neg = {"t": labelled[:20]}, {"t": np.union1d(labelled[20:], pseudo)}
        km, fit, tr = [], [], []
        for _ in range(args.reps):
            s, clusters = timed(background_classes, X, update.clusters)
            km.append(s)
            fit.append(timed(update.fit, X, pos, neg, clusters)[0])
            tr.append(timed(update.transform, X)[0])
        print(
            f"{n:>8}{statistics.median(km):>11.2f}{statistics.median(fit):>8.2f}"
            f"{statistics.median(tr):>13.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
