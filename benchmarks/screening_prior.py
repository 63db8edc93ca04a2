"""Does an outlier prior find rare classes faster than random at zero labels? (issue 4, item 1)

On dbpedia14, five rare targets at prevalence 0.005 and 0.002 (`model.data.build_pool`),
several random states. With no label at all, the pool is ranked by

    random        a seeded permutation
    iforest       Isolation Forest rarity (model.screening.OutlierScreen)
    lof           Local Outlier Factor rarity
    autoencoder   reconstruction-error rarity of a small MLP autoencoder
    prototype     zero-shot: cosine to the embedded class name, max over the targets
    proto+X       rank-average of the prototype score and X's rarity (weight 0.5; also 0.2)

and the first 50 / 100 items are checked: recall = rare found / min(k, rare in the pool),
where "rare" is any of the five targets (one ranking for all). AUC is the score's ROC AUC
for rare vs common (0.5 = no better than random). The per-target columns rank the pool
once per target (its own prototype, blended with the same rarity) and count only that
target's items, then average over the targets: the way a per-class exploration prior works.

    python3 benchmarks/screening_prior.py                 # 2 prevalences x 3 seeds (~2 min)
    python3 benchmarks/screening_prior.py --seeds 5 --weights 0.1,0.05,0.02

It also reports, per outlier method, what the screen's count means on these pools: the
share of rare items among the tasks flagged at rarity > 0.9, and the share of the rare
items that get flagged.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data_dir import DBPEDIA14  # noqa: E402
from benchmarks.harness import DBPEDIA_TARGETS as TARGETS  # noqa: E402
from benchmarks.harness import embed, write_json  # noqa: E402
from model.data import build_pool, read_csv  # noqa: E402
from model.prioritiser import embed_prototypes  # noqa: E402
from model.screening import OutlierScreen, blend_prior  # noqa: E402

DATA = DBPEDIA14  # $RARELABEL_DATA_DIR/dbpedia14/dbpedia14.csv.gz
PREVALENCES = (0.005, 0.002)
KS = (50, 100)
OUTLIERS = ("iforest", "lof", "autoencoder")
METRICS = ("R@50", "R@100", "AUC", "tR@50", "tR@100")
BLEND_WEIGHTS = (0.5, 0.1, 0.05)
FLAG_THRESHOLD = 0.9


def recall_at(order: np.ndarray, is_rare: np.ndarray, k: int) -> float:
    positives = int(is_rare.sum())
    return float(is_rare[order[:k]].sum()) / min(k, positives)


def one_pool(
    X, labels, protos, prevalence, seed, data, weights=BLEND_WEIGHTS
) -> tuple[dict, dict, int, int]:
    """Every ranking on one pool -> ({method: {metric: value}}, seconds, pool size, rare).

    "R@k" ranks once for all targets and counts any rare item; "tR@k" ranks for each target
    by its own prototype (blended with the rarity) and counts that target's items only,
    averaged over the targets: how a per-class exploration prior would be used.
    """
    rows = build_pool(data, TARGETS, prevalence, np.random.default_rng(seed))
    Xp, lab = X[rows], labels[rows]
    is_rare = np.isin(lab, TARGETS)
    rarity: dict[str, np.ndarray] = {"random": np.random.default_rng(seed + 1000).random(len(rows))}
    seconds: dict[str, float] = {}
    flags: dict[str, dict[str, float]] = {}
    for m in OUTLIERS:
        t0 = time.perf_counter()
        rarity[m] = OutlierScreen(m, random_state=seed).fit_score(Xp)
        seconds[m] = time.perf_counter() - t0
        flagged = rarity[m] > FLAG_THRESHOLD
        flags[m] = {
            "rare_share": float(is_rare[flagged].mean()),
            "recall": float(flagged[is_rare].mean()),
        }
    cos = Xp @ np.stack([protos[t] for t in TARGETS], axis=1)  # (n, targets)
    # name -> (score for "any rare", [score for target j])
    rankings: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    for m, r in rarity.items():
        rankings[m] = (r, [r] * len(TARGETS))
    rankings["prototype"] = (cos.max(axis=1), [cos[:, j] for j in range(len(TARGETS))])
    for m in OUTLIERS:
        for w in weights:
            rankings[f"proto+{m} w={w}"] = (
                blend_prior(cos.max(axis=1), rarity[m], w),
                [blend_prior(cos[:, j], rarity[m], w) for j in range(len(TARGETS))],
            )
    result = {}
    for name, (s_any, s_per) in rankings.items():
        order = np.argsort(-s_any, kind="stable")
        res = {f"R@{k}": recall_at(order, is_rare, k) for k in KS}
        res["AUC"] = float(roc_auc_score(is_rare, s_any))
        for k in KS:
            res[f"tR@{k}"] = statistics.mean(
                recall_at(np.argsort(-s, kind="stable"), lab == t, k)
                for t, s in zip(TARGETS, s_per, strict=True)
            )
        result[name] = res
    for m, f in flags.items():
        result[m].update({f"flag_{k}": v for k, v in f.items()})
    return result, seconds, len(rows), int(is_rare.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (machine is shared)")
    ap.add_argument(
        "--weights",
        default=",".join(map(str, BLEND_WEIGHTS)),
        help="rarity weights of the blended rows, comma-separated",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "screening_prior.json")
    args = ap.parse_args()
    weights = tuple(float(w) for w in args.weights.split(","))

    t0 = time.perf_counter()
    data = read_csv(args.data, "text", "label")
    embedder, X = embed(data.texts)
    protos = embed_prototypes(embedder, TARGETS)
    labels = np.array(data.labels)
    print(f"{args.data.name}: {len(data)} rows embedded in {time.perf_counter() - t0:.1f} s")

    report: dict = {"targets": TARGETS, "seeds": args.seeds, "prevalence": {}}
    with threadpool_limits(args.threads):
        for prev in PREVALENCES:
            runs, times = [], []
            for seed in range(args.seeds):
                res, secs, n, pos = one_pool(X, labels, protos, prev, seed, data, weights)
                runs.append(res)
                times.append(secs)
            methods = list(runs[0])
            rows = {}
            for m in methods:
                rows[m] = {}
                for metric in METRICS:
                    vals = [r[m][metric] for r in runs]
                    rows[m][metric] = {"mean": statistics.mean(vals), "min": min(vals)}
            fit_s = {m: statistics.mean(t[m] for t in times) for m in OUTLIERS}
            for m in OUTLIERS:
                for key in ("flag_rare_share", "flag_recall"):
                    rows[m][key] = {"mean": statistics.mean(r[m][key] for r in runs)}
            report["prevalence"][str(prev)] = {
                "pool": n,
                "positives": pos,
                "methods": rows,
                "fit_score_seconds": fit_s,
                "runs": runs,
            }
            print_table(prev, n, pos, args.seeds, rows, fit_s)
    write_json(args.out, report, indent=1)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s in all)")


def print_table(prev, n, pos, seeds, rows, fit_s) -> None:
    expected = {k: k * pos / n / min(k, pos) for k in KS}
    print(
        f"\nprevalence {prev}: pool {n}, {pos} rare items ({pos / n:.1%}, {pos // len(TARGETS)} "
        f"per target); {seeds} random states; random's expected recall "
        + ", ".join(f"@{k} {v:.3f}" for k, v in expected.items())
    )
    print(f"{'':<26}{'--- any rare target, one ranking ---':>40}   {'--- per target ---':>26}")
    head = f"{'ranking at zero labels':<26}"
    head += "".join(f"{'R@' + str(k) + ' mean':>11}{'min':>6}" for k in KS) + f"{'AUC':>6}   "
    head += "".join(f"{'R@' + str(k) + ' mean':>11}{'min':>6}" for k in KS)
    print(head)
    for m, r in rows.items():
        line = f"{m:<26}"
        for k in KS:
            line += f"{r[f'R@{k}']['mean']:>11.3f}{r[f'R@{k}']['min']:>6.3f}"
        line += f"{r['AUC']['mean']:>6.3f}   "
        for k in KS:
            line += f"{r[f'tR@{k}']['mean']:>11.3f}{r[f'tR@{k}']['min']:>6.3f}"
        print(line)
    print(
        f"flagged at rarity > {FLAG_THRESHOLD} (the screen's count): "
        + "; ".join(
            f"{m} rare share {rows[m]['flag_rare_share']['mean']:.3f}, "
            f"catches {rows[m]['flag_recall']['mean']:.0%} of the rare"
            for m in OUTLIERS
        )
    )
    print(
        "fit+score seconds per pool (1 thread): "
        + ", ".join(f"{m} {s:.1f}" for m, s in fit_s.items())
    )


if __name__ == "__main__":
    main()
