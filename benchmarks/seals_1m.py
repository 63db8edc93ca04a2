"""SEALS on a large synthetic pool: index build cost, ANN recall, time per selection.

Synthetic pool: `--n` clustered 384-d unit vectors (1,000 clusters, each a centre plus a
random 16-d subspace plus a little isotropic noise, cosine to its centre ~0.7; a few rare
clusters hold 0.05% of the pool each). The pool is stored as float16 (2 bytes a value);
every computation converts float32 chunks.

Simulated selections: a linear scorer (a random unit `w`), 25 random labelled rows at the
start, one more labelled row per selection (the pick). Per selection we time
  SEALS:      candidate update (one ANN query for the new label) + scoring the candidates
              + the top pick;
  full scan:  scoring every unlabelled row + the top pick,
in the same run, on the same labelled state. And what a worker restart costs: loading the
saved index against building it again; and the LOF exploration prior scored for the first
working set only (as the worker does) against scoring every row.

    python benchmarks/seals_1m.py              # 1,000,000 rows
    python benchmarks/seals_1m.py --quick      # 100,000 rows
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _limit_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def make_pool(n: int, dim: int, n_clusters: int, rare: int, rare_share: float, seed: int):
    """(X float16 (n, dim), cluster of each row)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    p = np.full(n_clusters, (1 - rare * rare_share) / (n_clusters - rare))
    p[:rare] = rare_share
    cluster = rng.choice(n_clusters, size=n, p=p / p.sum())
    X = np.empty((n, dim), dtype=np.float16)
    sub, iso = 0.012, 0.01  # subspace and isotropic noise scales
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(n_clusters + 1))
    for c in range(n_clusters):
        rows = order[bounds[c] : bounds[c + 1]]
        if len(rows) == 0:
            continue
        B = rng.standard_normal((dim, 16)).astype(np.float32) * sub
        z = rng.standard_normal((len(rows), 16)).astype(np.float32)
        V = centres[c] + z @ B.T + rng.standard_normal((len(rows), dim)).astype(np.float32) * iso
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        X[rows] = V
    return X, cluster


def exact_knn(X, Q, k: int, chunk: int = 65536):
    """Brute-force top-k rows by inner product (Q float32, X float16 in chunks)."""
    import numpy as np

    best_s = np.full((len(Q), 0), -np.inf, dtype=np.float32)
    best_r = np.empty((len(Q), 0), dtype=np.int64)
    for s in range(0, len(X), chunk):
        S = Q @ X[s : s + chunk].astype(np.float32).T
        rows = np.broadcast_to(np.arange(s, s + S.shape[1]), S.shape)
        all_s = np.concatenate([best_s, S], axis=1)
        all_r = np.concatenate([best_r, rows], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_r = np.take_along_axis(all_r, top, axis=1)
    return best_r


def restart(index, X, build_seconds: float) -> None:
    """What a restarted worker pays: loading the saved index (model.seals.PoolIndex, as the
    worker saves it) against building it again."""
    import numpy as np

    from model.seals import PoolIndex

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool"
        t = time.perf_counter()
        PoolIndex(index, list(range(len(X)))).save(path)
        save = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        t = time.perf_counter()
        loaded = PoolIndex.load(path, X.shape[1])
        load = time.perf_counter() - t
        Q = X[:20].astype(np.float32)
        same = np.array_equal(index.neighbours(Q, 10)[0], loaded.index.neighbours(Q, 10)[0])
    print(
        f"restart: save {save:.2f} s ({size:,.0f} MiB on disk), load {load:.2f} s "
        f"against a build of {build_seconds:.0f} s ({build_seconds / load:.0f}x); "
        f"same neighbours after loading: {same}"
    )


def rarity_prior(X, working, full: bool) -> None:
    """The LOF exploration prior of a class with no positive: a step reads it for its
    working set only (model.screening.PoolRarity), against scoring every row."""
    import numpy as np

    from model.screening import OutlierScreen, PoolRarity

    t = time.perf_counter()
    rarity = PoolRarity(OutlierScreen("lof"), X, lambda rows: rows.astype(np.float32))
    fit = time.perf_counter() - t
    t = time.perf_counter()
    rarity[working]
    read = time.perf_counter() - t
    line = f"LOF prior: fit {fit:.1f} s, then the {len(working):,} working-set rows {read:.1f} s"
    if full:
        t = time.perf_counter()
        rest = np.setdiff1d(np.arange(len(X)), working)
        for s in range(0, len(rest), 65536):
            rarity[rest[s : s + 65536]]
        everything = read + time.perf_counter() - t
        line += f"; every row {everything:.1f} s ({everything / read:.0f}x the working set)"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="pool size")
    ap.add_argument("--quick", action="store_true", help="100,000 rows")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100, help="SEALS neighbours per labelled row")
    ap.add_argument("--M", type=int, default=None, help="HNSW M (default: model.seals)")
    ap.add_argument("--ef-construction", type=int, default=None)
    ap.add_argument("--ef", type=int, default=None, help="HNSW query ef (>= k is enforced)")
    ap.add_argument("--selections", type=int, default=200)
    ap.add_argument("--start-labelled", type=int, default=25)
    ap.add_argument("--recall-queries", type=int, default=100)
    ap.add_argument(
        "--ef-sweep", default="64,128,256,512", help="query ef values whose recall is reported"
    )
    ap.add_argument("--build-threads", type=int, default=2, help="hnswlib threads for the build")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS/OpenMP threads")
    ap.add_argument("--batch", type=int, default=100_000, help="rows per incremental add")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-full-rarity", action="store_true", help="skip scoring every row's LOF rarity"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 100_000
    if args.n < 1000:
        print("error: --n must be >= 1000", file=sys.stderr)
        return 2
    _limit_threads(args.blas_threads)

    import numpy as np

    from model import seals
    from model.rankers import project  # X (float16) @ w in float32 chunks, as the service does

    M = args.M or seals.DEFAULT_M
    efc = args.ef_construction or seals.DEFAULT_EF_CONSTRUCTION
    ef = args.ef or seals.DEFAULT_EF
    print(f"load before: {_uptime()}")
    print(
        f"pool n={args.n:,} dim={args.dim} clusters={args.clusters} k={args.k} "
        f"M={M} ef_construction={efc} ef={max(ef, args.k)} "
        f"build_threads={args.build_threads} blas_threads={args.blas_threads}"
    )
    t = time.perf_counter()
    X, cluster = make_pool(args.n, args.dim, args.clusters, 5, 0.0005, args.seed)
    print(
        f"data: {time.perf_counter() - t:.1f} s; pool vectors float16 {X.nbytes / 2**20:,.0f} MiB "
        f"(float32 would be {X.nbytes * 2 / 2**20:,.0f} MiB); peak RSS {_rss_mb():,.0f} MiB"
    )

    # capacity reserved for the known pool size; `add` still grows it (doubling) past that
    index = seals.NeighbourIndex(
        args.dim, M=M, ef_construction=efc, ef=ef, num_threads=args.build_threads, capacity=args.n
    )
    rss0 = _rss_mb()
    t = time.perf_counter()
    for s in range(0, args.n, args.batch):  # incremental, as imports arrive
        e = min(s + args.batch, args.n)
        index.add(np.arange(s, e), X[s:e])
        print(f"  indexed {e:,} rows, {time.perf_counter() - t:.0f} s", flush=True)
    build = time.perf_counter() - t
    index.num_threads = 1  # selections are served single-threaded
    print(
        f"build: {build:.1f} s ({args.n / build:,.0f} rows/s), capacity {index.capacity:,}; "
        f"peak RSS {_rss_mb():,.0f} MiB (+{_rss_mb() - rss0:,.0f} MiB over the data)"
    )

    restart(index, X, build)

    rng = np.random.default_rng(args.seed + 1)
    q = rng.choice(args.n, size=min(args.recall_queries, args.n), replace=False)
    Q = X[q].astype(np.float32)
    exact = exact_knn(X, Q, args.k)
    for e in sorted({int(v) for v in args.ef_sweep.split(",") if v} | {max(ef, args.k)}):
        index.ef = e
        t = time.perf_counter()
        ann, _ = index.neighbours(Q, args.k)
        ann_ms = (time.perf_counter() - t) * 1e3 / len(q)
        recall = np.mean(
            [len(np.intersect1d(a, b)) / args.k for a, b in zip(ann, exact, strict=True)]
        )
        used = " (used below)" if e == max(ef, args.k) else ""
        print(
            f"ANN recall@{args.k} vs exact, ef={max(e, args.k)}: {recall:.4f} "
            f"({ann_ms:.2f} ms per query){used}"
        )
    index.ef = ef

    w = rng.standard_normal(args.dim).astype(np.float32)
    w /= np.linalg.norm(w)
    unlabelled = np.ones(args.n, dtype=bool)
    labelled = list(rng.choice(args.n, size=args.start_labelled, replace=False))
    unlabelled[labelled] = False
    cache = seals.SealsCandidates(index, args.k)
    t = time.perf_counter()
    cache.update(X, np.array(labelled))
    print(
        f"first update ({args.start_labelled} labelled): {(time.perf_counter() - t) * 1e3:.1f} ms"
    )
    sample = rng.choice(args.n, size=min(args.n, 20_000), replace=False)  # as the service's
    working = np.unique(np.r_[labelled, cache.candidates(unlabelled), sample])
    rarity_prior(X, working, full=not args.no_full_rarity)

    t_seals, t_full, n_cand, rank_of_pick = [], [], [], []
    for _ in range(args.selections):
        t = time.perf_counter()
        cache.update(X, np.array(labelled))
        cand = cache.candidates(unlabelled)
        s = X[cand].astype(np.float32) @ w
        pick = int(cand[np.argmax(s)])
        t_seals.append(time.perf_counter() - t)

        t = time.perf_counter()
        full = project(X, w)
        full[~unlabelled] = -np.inf
        best = int(np.argmax(full))
        t_full.append(time.perf_counter() - t)
        rank_of_pick.append(int((full > full[pick]).sum()))
        n_cand.append(len(cand))
        del best

        labelled.append(pick)
        unlabelled[pick] = False

    def pct(a):
        return np.percentile(np.array(a) * 1e3, [50, 90])

    (s50, s90), (f50, f90) = pct(t_seals), pct(t_full)
    print(f"selections: {args.selections} (labelled {args.start_labelled} -> {len(labelled)})")
    print(f"  SEALS     p50 {s50:7.2f} ms  p90 {s90:7.2f} ms  (update + score candidates + pick)")
    print(f"  full scan p50 {f50:7.2f} ms  p90 {f90:7.2f} ms  (score all unlabelled + pick)")
    print(
        f"  candidates per selection: first {n_cand[0]:,}, last {n_cand[-1]:,}; "
        f"ANN queries {cache.queries}"
    )
    print(
        f"  rank of the SEALS pick in the full scan's order: median "
        f"{int(np.median(rank_of_pick)):,}, p90 {int(np.percentile(rank_of_pick, 90)):,}"
    )
    print(f"peak RSS {_rss_mb():,.0f} MiB; pool vectors {X.nbytes / 2**20:,.0f} MiB (float16)")
    print(f"load after: {_uptime()}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    sys.exit(main())
