"""A compact (float16) pool against float32: memory, the cost of scoring every row, agreement.

From `model.prioritiser.LARGE_POOL` tasks the worker keeps its pool as float16 (`Pool(...,
compact=True)`) and multiplies it in float32 chunks (`model.rankers.project`). This measures,
on random unit rows of the default width (384 embedding + 384 lexical columns), what that
saves and costs for one full pass of five class rankers, with float32 as the baseline in the
same run, and how many of each class's top 100 rows stay in its top 100. Last, the peak
memory of assembling the rows from the embedding and the lexical columns after a refit
(`with_lexical` into float16, against the float32 rows converted afterwards).

    python3 benchmarks/compact_pool.py [--n 1000000] [--dim 768] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.features import with_lexical  # noqa: E402
from model.prioritiser import Pool  # noqa: E402
from model.rankers import project  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    if args.n < 100 or args.dim < 1 or args.reps < 1:
        p.error("--n must be >= 100, --dim and --reps >= 1")
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    X = np.empty((args.n, args.dim), np.float32)
    for s in range(0, args.n, 100_000):  # in blocks: no float64 copy of the whole pool
        block = rng.standard_normal((min(100_000, args.n - s), args.dim), dtype=np.float32)
        X[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    compact = Pool(list(range(args.n)), X, compact=True).X
    W = rng.standard_normal((args.dim, args.classes)).astype(np.float32)
    b = rng.standard_normal(args.classes).astype(np.float32)
    t16, t32 = [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        S16 = project(compact, W, b)
        t16.append(time.perf_counter() - t)
        t = time.perf_counter()
        S32 = project(X, W, b)
        t32.append(time.perf_counter() - t)
    m16, m32 = statistics.median(t16), statistics.median(t32)
    top = [
        len(set(np.argsort(-S16[:, j])[:100]) & set(np.argsort(-S32[:, j])[:100]))
        for j in range(args.classes)
    ]
    print(f"pool {args.n:,} x {args.dim}, {args.classes} classes, 1 thread, {args.reps} reps")
    gib = compact.nbytes / 2**30, X.nbytes / 2**30
    print(f"  vectors: float16 {gib[0]:.2f} GiB, float32 {gib[1]:.2f} GiB")
    print(
        f"  score every row: float16 in chunks p50 {m16 * 1e3:,.0f} ms, float32 p50 "
        f"{m32 * 1e3:,.0f} ms ({m16 / m32:.1f}x)"
    )
    print(
        f"  largest score difference {np.abs(S16 - S32).max():.1e}; "
        f"top-100 rows shared per class: {top}"
    )
    del compact, S16, S32
    half = args.dim // 2  # the embedding and the lexical columns, as numpy allocates them
    E, L = np.ascontiguousarray(X[:, :half]), np.ascontiguousarray(X[:, half:])
    del X
    peaks = []
    for assemble in (
        lambda: Pool(list(range(args.n)), with_lexical(E, L), compact=True),  # float32 first
        lambda: Pool(list(range(args.n)), with_lexical(E, L, np.float16), compact=True),
    ):
        tracemalloc.start()
        pool = assemble()
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**30)
        tracemalloc.stop()
        del pool
    print(
        f"  assembling the rows after a lexical refit, peak beyond the inputs: float32 then "
        f"float16 {peaks[0]:.2f} GiB, float16 in chunks {peaks[1]:.2f} GiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
