"""Benchmark of the rare-category loop on dbpedia14 (issue 2, "Targets").

Five rare targets at prevalence 0.005 and 0.002, several random states, one label at a
time; recall at 50/100/300 labels against the baselines, held-out F1 of the final
classifiers, and the cost per label. Every variant of the loop is one line in VARIANTS.

    python3 benchmarks/simulate_dbpedia.py                  # full benchmark (~30 min)
    python3 benchmarks/simulate_dbpedia.py --quick          # smoke check
    python3 benchmarks/simulate_dbpedia.py --variants tropel,default --seeds 5 --jobs 2
    python3 benchmarks/simulate_dbpedia.py --protocol single --variants tropel,paper,default

The rows are split once (fixed seed, stratified by label) into a pool-source part (80%)
and a held-out test part (20%). For each (prevalence, random state) a pool is built from
the pool-source part with `model.data.build_pool`; the F1 is measured on a test set built
the same way from the test part (same prevalence), and on the test part as it is (the
natural distribution, about 7% per class).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_dir import DBPEDIA14  # noqa: E402
from benchmarks.harness import DBPEDIA_TARGETS as TARGETS  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    INITIAL,
    SPLIT_SEED,
    TEST_FRACTION,
    Bench,
    fmt,
    load,
    pool_for,
    sign_test,
    write_json,
)
from model.features import pad_prototypes, pool_features, with_lexical  # noqa: E402
from model.prioritiser import RankerConfig  # noqa: E402
from model.simulate import f1_per_target, recall_at, run  # noqa: E402

DATA = DBPEDIA14  # $RARELABEL_DATA_DIR/dbpedia14/dbpedia14.csv.gz
PREVALENCES = (0.005, 0.002)
CHECKPOINTS = (50, 100, 300)

# name -> (simulate.run method, RankerConfig keyword arguments). A new variant is one line.
# The ladder from the paper's loop to the default adds one ingredient per row. Rows that
# measured no gain left with their knobs (the Beta bandit, the neighbour correction, mixup,
# entropy, SEALS's and the centroid's pseudo-negatives): docs/benchmarks.md, "Removed".
_PAPER = {
    "strategy": "adaptive",
    "human_weight": 1.0,
    "class_choice": "probability",
    "lexical_dims": 0,
    "bottom_fraction": 0.5,
}
_SEALS = {"seals_above": 0}  # on the benchmark's ~20k-row pools too (default: from 200k)
VARIANTS: dict[str, tuple[str, dict]] = {
    "random": ("random", {}),
    "tropel": ("tropel", {"lexical_dims": 0}),  # as published: fixed (embedding) features
    "tropel_lex": ("tropel", {}),  # tropel on the default's features: what the loop adds
    "paper": ("system", _PAPER),  # adaptive query, pseudo-negatives, f_a = 100
    "+positive": ("system", {**_PAPER, "strategy": "positive"}),  # most-likely-positive query
    "+hweight": ("system", {**_PAPER, "strategy": "positive", "human_weight": 5.0}),
    # + the pool's words (LSA), the calibrated class choice, the bottom 99%, human weight 2
    "default": ("system", {}),
    "no_lexical": ("system", {"lexical_dims": 0}),  # the default on the embedding alone
    "probability": ("system", {"class_choice": "probability"}),  # class by raw probability
    "hweight5": ("system", {"human_weight": 5.0}),
    "bottom95": ("system", {"bottom_fraction": 0.95}),
    "lexical128": ("system", {"lexical_dims": 128}),
    "no_pseudo": ("system", {"f_a": 0}),  # the default without pseudo-negatives
    "bottom80": ("system", {"bottom_fraction": 0.8}),  # pseudo-negatives from the bottom 80%
    "fa10": ("system", {"f_a": 10}),  # fewer pseudo-negatives than the paper's f_a = 100
    "fa30": ("system", {"f_a": 30}),
    # the paper's feature update: a network on the frozen features, background splitting
    "feature_update": ("system", {"feature_update_every": 50}),
    # issue 16, part 3: the default on two views, with and without the lexical columns,
    # interleaved, the labels choosing between them (model.view_choice)
    "views": ("system", {"view_choice": True}),
    # issue 16, part 4: a kNN posterior over the human labels mixed into the ranking
    "knn": ("system", {"knn_blend": 0.3}),
    "margin": ("system", {"strategy": "margin"}),  # the default with margin queries
    # issue 4: the margin phase's uncertainty measures, SEALS candidate pools
    "ad_margin": ("system", {"strategy": "adaptive"}),
    "ad_density": ("system", {"strategy": "adaptive", "uncertainty": "information_density"}),
    # SEALS although the pool is small: each step ranks the labelled rows, their 100
    # nearest neighbours by the embedding (as the worker indexes a pool) and a sample of a
    # tenth of the pool (2,000 rows), not every row
    "seals": ("system", _SEALS),
    # ... with neighbours by every column (embedding and lexical), not the embedding alone
    "seals_all": ("system", _SEALS),
}
# these index every column; the others the embedding, as the worker does
INDEX_EVERY_COLUMN = {"seals_all"}


# ---------------------------------------------------------------- data, shared by workers

BENCH: Bench | None = None  # built once in the parent (benchmarks.harness.load)


# ---------------------------------------------------------------- one run


@dataclass(frozen=True)
class Job:
    prevalence: float
    seed: int
    variant: str
    target: str | None = None  # protocol "single": this target alone; None: all five at once


def run_job(job: Job) -> dict:
    b = BENCH
    assert b is not None
    method, kwargs = VARIANTS[job.variant]
    targets = [job.target] if job.target else b.targets
    rows, seeds, test_rows = pool_for(b, job.prevalence, job.seed, targets)
    labels = b.labels[rows]
    positives = int(np.isin(labels, targets).sum()) - len(seeds)
    config = RankerConfig(random_state=job.seed, **kwargs)
    dims = config.lexical_dims
    with threadpool_limits(1):
        X, lexical = pool_features(b.X[rows], [b.data.texts[i] for i in rows], dims, job.seed)
        protos = pad_prototypes(b.prototypes, dims)
        columns = None if job.variant in INDEX_EVERY_COLUMN else b.X.shape[1]
        res = run(
            X, labels, targets, seeds, b.budget, method, config, protos, index_columns=columns
        )
    # The label state keeps insertion order: the seeds first, then the rows asked for.
    asked = [int(r) for r in list(res.state.labels)[len(seeds) :]] if res.state else []
    ks = [k for k in CHECKPOINTS if k <= b.budget]
    per_target = {t: [int(np.sum(labels[asked[:k]] == t)) for k in ks] for t in targets}
    out = {
        "prevalence": job.prevalence,
        "seed": job.seed,
        "target": job.target,
        "variant": job.variant,
        "positives": positives,
        "pool_size": len(rows),
        "pool_per_target": {t: int(np.sum(labels == t)) for t in targets},
        "found": res.found,
        "found_per_target_at": per_target,
        "ms_per_label": 1000 * res.seconds_per_label,
        "f1_same_prevalence": None,
        "f1_natural": None,
        "test_size_same_prevalence": len(test_rows),
        "test_size_natural": len(b.test),
    }

    def features(test: np.ndarray) -> np.ndarray:
        if lexical is None:
            return b.X[test]
        return with_lexical(b.X[test], lexical.transform([b.data.texts[i] for i in test]))

    if res.prioritiser is not None:
        with threadpool_limits(1):
            same = f1_per_target(res.prioritiser, features(test_rows), b.labels[test_rows])
            natural = f1_per_target(res.prioritiser, features(b.test), b.labels[b.test])
        out["f1_same_prevalence"] = same
        out["f1_natural"] = natural
    return out


def _init_worker() -> None:
    threadpool_limits(1)


# ---------------------------------------------------------------- summary


def mean_f1(d: dict[str, float] | None) -> float | None:
    return None if d is None else float(np.mean(list(d.values())))


def summarise(results: list[dict], variants: list[str], budget: int) -> dict:
    """Per variant: mean curve, recall at the checkpoints (mean, min over seeds), F1, time."""
    ks = [k for k in CHECKPOINTS if k <= budget]
    out = {}
    for v in variants:
        rs = sorted(
            (r for r in results if r["variant"] == v), key=lambda r: (r["seed"], r["target"] or "")
        )
        if not rs:
            continue
        length = min(len(r["found"]) for r in rs)
        curves = np.array([r["found"][:length] for r in rs], dtype=float)
        recalls = {k: [recall_at(r["found"], r["positives"], k) for r in rs] for k in ks}
        f1s = [mean_f1(r["f1_same_prevalence"]) for r in rs]
        f1n = [mean_f1(r["f1_natural"]) for r in rs]
        out[v] = {
            "seeds": [r["seed"] for r in rs],
            "mean_found": curves.mean(axis=0).round(3).tolist(),
            "recall": {
                k: {
                    "mean": None if None in rec else float(np.mean(rec)),
                    "min": None if None in rec else float(np.min(rec)),
                    "per_seed": rec,
                }
                for k, rec in recalls.items()
            },
            "f1_same_prevalence": None if None in f1s else float(np.mean(f1s)),
            "f1_natural": None if None in f1n else float(np.mean(f1n)),
            "f1_same_prevalence_per_target": _mean_per_target(rs, "f1_same_prevalence"),
            "f1_natural_per_target": _mean_per_target(rs, "f1_natural"),
            "found_per_target_at": {
                t: dict(
                    zip(ks, np.mean([r["found_per_target_at"][t] for r in rs_t], 0), strict=True)
                )
                for t in TARGETS
                if (rs_t := [r for r in rs if t in r["found_per_target_at"]])
            },
            "ms_per_label_median": float(statistics.median(r["ms_per_label"] for r in rs)),
        }
    if "tropel" in out:
        base = out["tropel"]["mean_found"]
        for s in out.values():
            s["above_tropel"] = {
                k: bool(k <= len(s["mean_found"]) and s["mean_found"][k - 1] > base[k - 1])
                for k in ks
                if k <= len(base)
            }
    return out


def _mean_per_target(rs: list[dict], key: str) -> dict[str, float] | None:
    if any(r[key] is None for r in rs):
        return None
    return {t: float(np.mean([r[key][t] for r in rs if t in r[key]])) for t in TARGETS}


def format_table(
    prevalence: float, summary: dict, results: list[dict], budget: int, protocol: str
) -> str:
    ks = [k for k in CHECKPOINTS if k <= budget]
    runs = [r for r in results if r["prevalence"] == prevalence]
    pos = sorted({(r["seed"], r["positives"], r["pool_size"]) for r in runs})
    tests = sorted({(r["seed"], r["test_size_same_prevalence"]) for r in runs})
    lines = [
        f"== protocol {protocol}: "
        + (
            "the five targets in one run"
            if protocol == "joint"
            else "each target in its own run, averaged over targets"
        )
        + f"; prevalence {prevalence} per target, budget {budget}, "
        f"{INITIAL} initial positives per target, {len({s for s, _, _ in pos})} random state(s) ==",
        "positives per pool (rare items besides the seeds): "
        + ", ".join(f"seed {s}: {p} of {n}" for s, p, n in pos),
        "test sets: same prevalence "
        + ", ".join(f"seed {s}: {n} rows" for s, n in tests)
        + f"; natural {runs[0]['test_size_natural']} rows",
    ]
    head = f"{'variant':<11}" + "".join(f"{'recall@' + str(k):>16}" for k in ks)
    head += f"{'F1 same-prev':>14}{'F1 natural':>12}{'ms/label':>10}  > tropel @" + "/".join(
        str(k) for k in ks
    )
    lines += [head, "-" * len(head)]
    for v, s in summary.items():
        cells = ""
        for k in ks:
            rec = s["recall"][k]
            cells += f"{fmt(rec['mean']) + ' [' + fmt(rec['min']) + ']':>16}"
        above = s.get("above_tropel")
        if v == "tropel":
            mark = "(baseline)"
        elif above is None:
            mark = "-"
        else:
            flags = " ".join("Y" if above[k] else "n" for k in ks if k in above)
            mark = ("yes" if all(above.values()) else "no") + "  " + flags
        lines.append(
            f"{v:<11}{cells}{fmt(s['f1_same_prevalence']):>14}{fmt(s['f1_natural']):>12}"
            f"{s['ms_per_label_median']:>10.1f}  {mark}"
        )
    lines.append(
        "recall@k = found[k-1] / min(k, positives), mean over random states [min]; "
        "F1 = mean over the 5 targets of the final classifiers (score > 0) on the "
        "same-prevalence test set / on the test part as it is; ms/label = median over random "
        "states of the mean time per label (fit + queue); > tropel = mean found curve strictly "
        "above tropel's at each checkpoint."
    )
    return "\n".join(lines)


def format_windows(summary: dict, budget: int, width: int = 50) -> str:
    """Mean new positives per window of labels: where each curve flattens."""
    edges = list(range(0, budget + 1, width))
    head = f"{'new per ' + str(width):<11}" + "".join(
        f"{f'{a + 1}-{b}':>9}" for a, b in zip(edges, edges[1:], strict=False)
    )
    lines = [head]
    for v, s in summary.items():
        f = [0.0] + s["mean_found"]
        cells = "".join(
            f"{f[b] - f[a]:>9.1f}" if b < len(f) else f"{'-':>9}"
            for a, b in zip(edges, edges[1:], strict=False)
        )
        lines.append(f"{v:<11}{cells}")
    return "\n".join(lines)


def format_paired(results: list[dict], variants: list[str], base: str = "default") -> str:
    """Each row against `base` on the same pools: the finds it adds by each checkpoint, summed
    over pools, and on how many pools it finds more / as many / fewer, with the sign test's
    p-value. Rows a find or two apart are told apart by this, not by their means."""
    found = {(r["variant"], r["seed"], r["target"]): r["found"] for r in results}
    keys = sorted({(s, t) for v, s, t in found if v == base})
    if not keys:
        return ""
    ks = [k for k in CHECKPOINTS if k <= len(found[(base, *keys[0])])]
    lines = [
        f"paired with {base} over {len(keys)} pools: finds added, pools more/equal/fewer, "
        "sign-test p"
    ]
    width = max(len(v) for v in variants) + 2
    for v in variants:
        if v == base or not all((v, *key) in found for key in keys):
            continue
        cells = []
        for k in ks:
            d = np.array([found[(v, *key)][k - 1] - found[(base, *key)][k - 1] for key in keys])
            more, fewer = int((d > 0).sum()), int((d < 0).sum())
            p = sign_test(more, fewer)
            cells.append(f"@{k} {d.sum():+d} ({more}/{len(d) - more - fewer}/{fewer}, p {p:.3f})")
        lines.append(f"{v:<{width}}" + "  ".join(cells))
    return "\n".join(lines)


def plot(prevalence: float, summary: dict, positives: float, budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    x = np.arange(1, budget + 1)
    ax.plot(x, np.minimum(x, positives), "k:", label=f"ideal ({positives:g} positives)")
    for v, s in summary.items():
        y = s["mean_found"]
        style = {"tropel": {"ls": "--", "lw": 2.2, "zorder": 3}, "random": {"color": "grey"}}
        ax.plot(np.arange(1, len(y) + 1), y, label=v, **style.get(v, {"lw": 1.3}))
    for k in CHECKPOINTS:
        if k <= budget:
            ax.axvline(k, color="grey", lw=0.5, alpha=0.5)
    ax.set_xlabel("labels spent")
    ax.set_ylabel("rare positives found (mean over random states)")
    ax.set_title(f"dbpedia14, prevalence {prevalence} per target ({path.stem})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--seeds", type=int, default=3, help="random states 0..N-1 (default 3)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="start the random states here (held-out checks)"
    )
    p.add_argument("--prevalences", default=",".join(map(str, PREVALENCES)))
    p.add_argument("--budget", type=int, default=300)
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of: {', '.join(VARIANTS)}",
    )
    p.add_argument("--jobs", type=int, default=1, help="processes for independent runs")
    p.add_argument("--out", type=Path, default=Path("out/bench"))
    p.add_argument("--quick", action="store_true", help="1 seed, prevalence 0.005, budget 100")
    p.add_argument("--limit", type=int, help="use only the first N rows of the file (dev)")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: report the runs of earlier results files together (a later file's "
        "run of the same variant, pool and target replaces an earlier one's)",
    )
    p.add_argument(
        "--protocol",
        choices=("joint", "single"),
        default="joint",
        help="joint: the five targets in one run; single: each target alone, averaged",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.prevalences, args.budget = 1, "0.005", 100
    args.prevalences = [float(x) for x in args.prevalences.split(",") if x.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.seeds < 1 or args.budget < 1 or args.jobs < 1:
        p.error("--seeds, --budget and --jobs must be >= 1")
    return args


def merged(files: list[Path]) -> tuple[list[dict], dict]:
    """The runs of earlier results files, and the last file's header."""
    runs: dict[tuple, dict] = {}
    for f in files:
        try:
            report = json.loads(f.read_text())
            for d in report["prevalences"].values():
                for r in d["runs"]:
                    runs[(r["prevalence"], r["variant"], r["seed"], r["target"])] = r
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"error: {f} is not a results file of this benchmark ({e})") from None
    return list(runs.values()), report


def print_report(results: list[dict], args: argparse.Namespace) -> dict:
    """The tables, per-window gains and paired comparison of each prevalence; plots."""
    out = {}
    for p in args.prevalences:
        res_p = [r for r in results if r["prevalence"] == p]
        summary = summarise(res_p, args.variants, args.budget)
        positives = float(np.mean([r["positives"] for r in res_p]))
        png = args.out / f"curve_{args.protocol}_p{p}.png"
        plot(p, summary, positives, args.budget, png)
        print()
        print(format_table(p, summary, res_p, args.budget, args.protocol))
        print(format_windows(summary, args.budget))
        print(format_paired(res_p, args.variants))
        print(f"plot: {png}")
        out[str(p)] = {
            "positives_mean": positives,
            "summary": summary,
            "runs": sorted(res_p, key=lambda r: (r["variant"], r["seed"])),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    global BENCH
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.merge:
        results, header = merged(args.merge)
        present = {r["variant"] for r in results}
        args.variants = [v for v in (*args.variants, *sorted(present)) if v in present]
        args.variants = list(dict.fromkeys(args.variants))
        args.prevalences = sorted({r["prevalence"] for r in results}, reverse=True)
        args.budget, args.protocol = header["budget"], header["protocol"]
        args.out.mkdir(parents=True, exist_ok=True)
        print_report(results, args)
        return 0
    threadpool_limits(1)
    BENCH = load(args.data, args.budget, args.limit)
    per_run = [None] if args.protocol == "joint" else TARGETS
    jobs = [
        Job(p, s, v, t)
        for p in args.prevalences
        for s in range(args.first_seed, args.first_seed + args.seeds)
        for v in args.variants
        for t in per_run
    ]
    # Slow variants first, so two processes finish together; random is instant.
    jobs.sort(key=lambda j: (j.variant == "random", j.prevalence != max(args.prevalences)))
    results: list[dict] = []
    bar = tqdm(total=len(jobs), desc="runs", unit="run")
    if args.jobs > 1:
        with mp.get_context("fork").Pool(args.jobs, initializer=_init_worker) as workers:
            for r in workers.imap_unordered(run_job, jobs):
                results.append(r)
                bar.update()
    else:
        for job in jobs:
            results.append(run_job(job))
            bar.update()
    bar.close()

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "data": str(args.data),
        "rows": len(BENCH.data),
        "targets": TARGETS,
        "budget": args.budget,
        "initial_positives": INITIAL,
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "split": {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "stratified": True},
        "variants": {
            v: {"method": VARIANTS[v][0], "config": VARIANTS[v][1]} for v in args.variants
        },
        "jobs": args.jobs,
        "protocol": args.protocol,
        "prevalences": {},
    }
    report["prevalences"] = print_report(results, args)
    wall = time.perf_counter() - t_start
    report["wall_seconds"] = round(wall, 1)
    out_json = write_json(args.out / f"results_{args.protocol}.json", report, indent=1)
    print(f"\nwrote {out_json}; wall time {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
