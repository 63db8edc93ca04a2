"""The held-out suite (issue 16): does the default carry to domains it was not tuned on?

    python benchmarks/heldout.py                                  # every set, 3 states, peers
    python benchmarks/heldout.py --sets banking_0.005 --states 1 --no-peers   # smoke check
    python benchmarks/heldout.py --sets dbpedia14_0.005 --variants default,tropel,no_lexical

Each set is one domain at one prevalence; dbpedia14 is the tuning set, every other set is
held out (never tuned on). Per set: five targets fixed below, each in its own pool (the
single-target protocol of benchmarks/simulate_dbpedia.py: the target cut to the
prevalence, every row of the other labels kept), random states 0..N-1, 5 initial
positives, 300 labels. Every method sees the same pools and initial positives: our loop's
variants (benchmarks/simulate_dbpedia.py's VARIANTS; default and tropel unless told) and
the peers a user would pick instead, ASReview LAB and small-text, run by benchmarks/peers.py
in their own virtual environment. recall@k = found / min(k, positives), averaged over the
pools (states x targets); beside it, each method against tropel on the same pools: finds
added, pools where it finds more / as many / fewer, and the two-sided sign test's p.

Writes out/heldout.json (every run's found curve), out/heldout/<set>.png (the mean found
curves) and logs to out/heldout.log. docs/heldout.md has the protocol and the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness  # noqa: E402
from benchmarks.background_split import split_linear_stage  # noqa: E402
from benchmarks.data_dir import data_file  # noqa: E402
from benchmarks.simulate_dbpedia import VARIANTS  # noqa: E402
from model.data import Dataset, build_pool  # noqa: E402
from model.features import pad_prototypes, pool_features  # noqa: E402
from model.prioritiser import RankerConfig, embed_prototypes  # noqa: E402
from model.simulate import CHECKPOINTS, initial_positives, recall_at, run  # noqa: E402

OUT = harness.ROOT / "out"
PEERS = ("asreview", "small-text")
PEER_LABELS = {"asreview": "ASReview LAB (ELAS u4)", "small-text": "small-text"}
# small-text's query strategies here (benchmarks/peers.py); least confidence ranks two
# classes as breaking ties and entropy do
SMALL_TEXT = {"anchoral": "AnchorAL + least confidence", "least_confidence": "least confidence"}
PEER_PINS = ("asreview==3.0.8", "small-text==1.4.1", "hnswlib==0.8.0")  # hnswlib: AnchorAL
# Variants that are not a RankerConfig: the default's loop with a benchmark-only part swapped
# in for the run (a context manager given the pool's random state).
EXPERIMENTS = {"bg_split": split_linear_stage}  # benchmarks/background_split.py


@dataclass(frozen=True)
class Set:
    name: str  # the domain, as the table names it
    path: tuple[str, ...]
    label_column: str
    targets: tuple[str, ...]
    prevalence: float | None  # None: the file's own (skewed) distribution
    single_label: bool = False  # Reuters: only documents with exactly one topic
    tuning: bool = False  # dbpedia14: the set the defaults were tuned on


_BANKING = ("intents", "banking_train.csv.gz")
_CLINC = ("intents", "clinc_train.csv.gz")
_DBPEDIA = ("dbpedia14", "dbpedia14.csv.gz")
# Targets fixed before any run, chosen by the labels' counts only (no label for its meaning
# or for any result):
# - balanced files (BANKING77, CLINC150, 20newsgroups): the labels sorted by (rows, name),
#   the one in the middle of each fifth of that order;
# - skewed files at their natural prevalence (TREC fine labels, Reuters single-topic): the
#   five labels whose row counts are closest to 1% of the file (ties by name);
# - dbpedia14: the development benchmark's five (benchmarks/harness.py).
BANKING_T = ("receiving_money", "verify_source_of_funds", "automatic_top_up", "card_arrival",
             "transfer_fee_charged")  # fmt: skip
CLINC_T = ("cancel", "freeze_account", "next_song", "roll_dice", "uber")
SETS = {
    s.name + ("" if s.prevalence is None else f"_{s.prevalence}"): s
    for s in (
        Set("banking", _BANKING, "label", BANKING_T, 0.005),
        Set("banking", _BANKING, "label", BANKING_T, 0.002),
        Set("clinc", _CLINC, "label", CLINC_T, 0.005),
        Set("clinc", _CLINC, "label", CLINC_T, 0.002),
        Set("trec", ("trec", "train.csv.gz"), "label",
            ("ENTY:event", "NUM:other", "ENTY:sport", "HUM:desc", "LOC:state"), None),
        Set("reuters", ("reuters21578", "modapte_train.csv.gz"), "topics",
            ("gold", "gnp", "cpi", "cocoa", "coffee"), None, single_label=True),
        Set("20newsgroups", ("20newsgroups", "train.csv.gz"), "label",
            ("alt.atheism", "comp.graphics", "sci.electronics", "sci.med",
             "soc.religion.christian"), 0.005),
        Set("dbpedia14", _DBPEDIA, "label", tuple(harness.DBPEDIA_TARGETS), 0.005, tuning=True),
        Set("dbpedia14", _DBPEDIA, "label", tuple(harness.DBPEDIA_TARGETS), 0.002, tuning=True),
    )
}  # fmt: skip


# ---------------------------------------------------------------- the set's data and pools


@dataclass
class Loaded:
    """A set read and embedded once; forked workers inherit it."""

    texts: list[str]
    labels: np.ndarray
    X: np.ndarray  # the embedding of every row (the shared SQLite cache)
    prototypes: dict[str, np.ndarray]


@dataclass(frozen=True)
class PoolSpec:
    key: str  # "<state>/<target>"
    state: int
    target: str
    rows: np.ndarray  # rows of the set, in pool order (shuffled)
    seeds: dict[int, str]  # pool position -> target: the initial positives
    positives: int  # the target's rows in the pool besides the seeds


LOADED: Loaded | None = None


def load(spec: Set) -> Loaded:
    t0 = time.perf_counter()
    data = harness.read_labelled(data_file(*spec.path), spec.label_column, spec.single_label)
    harness.log(f"{spec.name}: {len(data)} rows; embedding (slow the first time, long texts most)")
    embedder, X = harness.embed(data.texts)
    protos = embed_prototypes(embedder, list(spec.targets))
    harness.log(f"{spec.name}: embedded {X.shape} in {time.perf_counter() - t0:.0f} s")
    return Loaded(data.texts, np.array(data.labels), X, protos)


def pools(spec: Set, loaded: Loaded, states: int) -> list[PoolSpec]:
    """One pool per (state, target), as simulate_dbpedia's single-target protocol builds it."""
    data = Dataset(loaded.texts, loaded.labels.tolist(), [str(i) for i in range(len(loaded.texts))])
    out = []
    for state in range(states):
        for t in spec.targets:
            rng = np.random.default_rng(state)
            rows = build_pool(data, [t], spec.prevalence, rng)
            seeds = initial_positives(loaded.labels[rows], [t], harness.INITIAL, rng)
            positives = int(np.sum(loaded.labels[rows] == t)) - harness.INITIAL
            out.append(PoolSpec(f"{state}/{t}", state, t, rows, seeds, positives))
    return out


# ---------------------------------------------------------------- our loop's runs


def run_ours(task: tuple[PoolSpec, str, int]) -> dict:
    """One pool, one variant of our loop (model.simulate.run, as `rarelabel simulate`)."""
    pool, variant, budget = task
    b = LOADED
    assert b is not None
    experiment = EXPERIMENTS.get(variant)
    method, kwargs = VARIANTS["default" if experiment else variant]
    config = RankerConfig(random_state=pool.state, **kwargs)
    texts = [b.texts[i] for i in pool.rows]
    t0 = time.perf_counter()
    swapped = experiment(random_state=pool.state) if experiment else nullcontext()
    with threadpool_limits(1), swapped:
        X, _ = pool_features(b.X[pool.rows], texts, config.lexical_dims, pool.state)
        protos = pad_prototypes({pool.target: b.prototypes[pool.target]}, config.lexical_dims)
        res = run(
            X, b.labels[pool.rows], [pool.target], pool.seeds, budget, method, config, protos,
            index_columns=b.X.shape[1],
        )  # fmt: skip
    out = {"method": variant, "key": pool.key, "found": res.found,
           "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    if res.views is not None:  # view choice: each view's contested picks and hits
        out["views"] = {"picks": res.views.picks.tolist(), "hits": res.views.hits.tolist()}
    return out


def _load_worker(name: str) -> None:
    global LOADED
    LOADED = load(SETS[name])  # from the embedding cache: seconds


def run_variants(name: str, todo: list[PoolSpec], variants: list[str], budget: int,
                 jobs: int) -> list[dict]:  # fmt: skip
    tasks = [(p, v, budget) for v in variants for p in todo]
    results = []
    if jobs > 1:  # spawned, not forked: a fork after the embedder's threads ran can hang
        ctx = mp.get_context("spawn")
        with ctx.Pool(jobs, initializer=_load_worker, initargs=(name,)) as workers:
            results = list(workers.imap_unordered(run_ours, tasks))
    else:
        results = [run_ours(t) for t in tasks]
    for r in sorted(results, key=lambda r: (r["method"], r["key"])):
        harness.log(f"  {r['method']} {r['key']}: {r['found'][-1]} found in {r['seconds']:.0f} s")
    return results


# ---------------------------------------------------------------- the peers


def peers_venv() -> Path:
    default = Path.home() / ".cache" / "rarelabel-peers-venv"
    return Path(os.environ.get("RARELABEL_PEERS_VENV", default))


def ensure_peers() -> tuple[Path | None, str | None]:
    """The peers' python, creating their venv from PyPI if needed; or why it cannot be had.
    They never enter the main environment: their pins (scikit-learn, numpy) are their own.
    They run in out/: asreview's dataset module leaves a request cache in its working dir."""
    OUT.mkdir(parents=True, exist_ok=True)
    py = peers_venv() / "bin" / "python"
    probe = [str(py), "-c", "import asreview, small_text, hnswlib"]
    if (
        py.exists()
        and subprocess.run(probe, capture_output=True, stdin=subprocess.DEVNULL, cwd=OUT).returncode
        == 0
    ):
        return py, None
    install_log = OUT / "peers-install.log"
    install_log.parent.mkdir(parents=True, exist_ok=True)
    harness.log(f"creating {peers_venv()}: pip install {' '.join(PEER_PINS)} (log: {install_log})")
    with install_log.open("w") as f:
        steps = [
            [sys.executable, "-m", "venv", str(peers_venv())],
            [str(py), "-m", "pip", "install", "--progress-bar", "off", *PEER_PINS],
        ]
        for cmd in steps:
            if (
                subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT
                ).returncode
                != 0
            ):
                tail = install_log.read_text().strip().splitlines()[-1:]
                return None, f"`{' '.join(cmd[2:])}` failed: {' '.join(tail)}"
    if (
        subprocess.run(probe, capture_output=True, stdin=subprocess.DEVNULL, cwd=OUT).returncode
        != 0
    ):
        return None, "installed, but `import asreview, small_text, hnswlib` fails"
    return py, None


def run_peers(
    py: Path, work: Path, loaded: Loaded, todo: list[PoolSpec], budget: int, jobs: int,
    small_text: str,
) -> tuple[list[dict], dict[str, str], dict | None]:  # fmt: skip
    """Both peers on every pool, in their venv; the finds counted here, like ours. Returns
    the runs, the reason each peer that failed on a pool is absent, and their versions."""
    work = work.resolve()  # the peers run in it
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "X.npy", loaded.X)
    request = {
        "texts": loaded.texts,
        "embeddings": str(work / "X.npy"),
        "budget": budget,
        "C": RankerConfig().C,  # small-text's classifier: tropel's regularisation
        "small_text_strategy": small_text,
        "peers": list(PEERS),
        "pools": [
            {"key": p.key, "state": p.state, "rows": p.rows.tolist(), "seeds": sorted(p.seeds),
             "relevant": (loaded.labels[p.rows] == p.target).astype(int).tolist()}
            for p in todo
        ],
    }  # fmt: skip
    harness.write_json(work / "request.json", request, indent=None)
    cmd = [str(py), str(harness.ROOT / "benchmarks" / "peers.py"), str(work / "request.json"),
           str(work / "result.json"), "--jobs", str(jobs)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # in `work`: ASReview's import leaves a requests cache (synergy_cache.sqlite) in its cwd
    with subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:  # fmt: skip
        for line in proc.stdout:  # into the log, as it comes
            print(line, end="", flush=True)
    if proc.returncode != 0:
        return [], {p: f"peers.py exited {proc.returncode}" for p in PEERS}, None
    result = json.loads((work / "result.json").read_text())
    by_key = {p.key: p for p in todo}
    runs, absent = [], {}
    for r in result["runs"]:
        if r["error"]:
            absent.setdefault(r["peer"], f"{r['key']}: {r['error']}")
            continue
        relevant = loaded.labels[by_key[r["key"]].rows] == by_key[r["key"]].target
        found = np.cumsum(relevant[r["asked"]]).astype(int).tolist()
        runs.append({"method": r["peer"], "key": r["key"], "found": found,
                     "seconds": r["seconds"]})  # fmt: skip
    return runs, absent, result["versions"]


# ---------------------------------------------------------------- the table


def checkpoints(budget: int) -> list[int]:
    """The labels at which recall is read: 50, 100, 300, or the budget if it is shorter."""
    return [k for k in CHECKPOINTS if k <= budget] or [budget]


def paired_cell(mine: list[list[int]], base: list[list[int]], k: int) -> str:
    """Finds over the baseline by label k, summed over the pools; (more/equal/fewer, p)."""
    d = np.array([a[k - 1] - b[k - 1] for a, b in zip(mine, base, strict=True)])
    more, fewer = int((d > 0).sum()), int((d < 0).sum())
    p = harness.sign_test(more, fewer)
    return f"{d.sum():+d} ({more}/{len(d) - more - fewer}/{fewer}, p {p:.2g})"


def pool_record(p: PoolSpec) -> dict:
    return {"key": p.key, "state": p.state, "size": len(p.rows), "positives": p.positives,
            "seeds": sorted(p.seeds)}  # fmt: skip


def summarise(
    pools: list[dict], runs: list[dict], methods: list[str], budget: int, against: str = "tropel"
) -> dict:
    """Per method: mean recall@k over the pools, the mean found curve, and against the
    baseline method (`against`) on the same pools."""
    ks = checkpoints(budget)
    positives = {p["key"]: p["positives"] for p in pools}
    found = {(r["method"], r["key"]): r["found"] for r in runs}
    keys = [p["key"] for p in pools]
    out = {}
    for m in methods:
        if not all((m, k) in found for k in keys):
            continue
        curves = [found[(m, key)] for key in keys]
        rec = {k: [recall_at(c, positives[key], k) for c, key in zip(curves, keys, strict=True)]
               for k in ks}  # fmt: skip
        length = min(len(c) for c in curves)
        out[m] = {
            "recall": {k: None if None in v else float(np.mean(v)) for k, v in rec.items()},
            "mean_found": np.mean([c[:length] for c in curves], axis=0).round(3).tolist(),
            "seconds_per_run": float(np.mean([r["seconds"] for r in runs if r["method"] == m])),
        }
        credit = [r["views"] for r in runs if r["method"] == m and "views" in r]
        if credit:  # view choice: the contested slots each view filled, and its hits there
            out[m]["views"] = {f: np.sum([c[f] for c in credit], axis=0).tolist()
                               for f in ("picks", "hits")}  # fmt: skip
        if m != against and against in methods and all((against, k) in found for k in keys):
            base = [found[(against, key)] for key in keys]
            out[m]["paired"] = {k: paired_cell(curves, base, k) for k in ks if k <= length}
    return out


def heading(name: str, pools: list[dict], budget: int) -> list[str]:
    spec = SETS[name]
    pos = [p["positives"] for p in pools]
    states = len({p["key"].split("/")[0] for p in pools})
    prevalence = "natural skew" if spec.prevalence is None else f"prevalence {spec.prevalence}"
    kind = "tuning set" if spec.tuning else "held out"
    return [
        f"### {name} ({kind}): {spec.name}, {prevalence}",
        "",
        f"{len(pools)} pools ({states} states x {len(spec.targets)} targets: "
        f"{', '.join(spec.targets)}); pool size {np.mean([p['size'] for p in pools]):.0f}; "
        f"positives besides the {harness.INITIAL} seeds {np.mean(pos):.1f} per pool "
        f"({min(pos)}-{max(pos)}); budget {budget}.",
        "",
    ]


def table(
    summary: dict, methods: list[str], absent: dict[str, str], budget: int, against: str = "tropel"
) -> list[str]:
    """The markdown rows: a method per row, or the reason it is absent."""
    ks = checkpoints(budget)
    lines = [
        "| method | " + " | ".join(f"R@{k}" for k in ks)
        + " | " + " | ".join(f"vs {against} @{k}" for k in ks) + " | s/run |",
        "|---" * (2 * len(ks) + 2) + "|",
    ]  # fmt: skip
    for m in methods:
        label = PEER_LABELS.get(m, m)
        if m not in summary:
            reason = absent.get(m, "not run")
            lines.append(f"| {label} | absent: {reason} |" + " |" * (2 * len(ks)))
            continue
        s = summary[m]
        rec = " | ".join(harness.fmt(s["recall"][k]) for k in ks)
        vs = s.get("paired")
        paired = " | ".join(vs[k] if vs and k in vs else "(baseline)" for k in ks)
        lines.append(f"| {label} | {rec} | {paired} | {s['seconds_per_run']:.0f} |")
    notes = [views_note(PEER_LABELS.get(m, m), summary[m]["views"])
             for m in methods if "views" in summary.get(m, {})]  # fmt: skip
    return [*lines, "", LEGEND.format(against=against), *notes]


def views_note(label: str, views: dict) -> str:
    """Where the labels sent a view-choice method: each view's contested slots and hits."""
    (pw, pe), (hw, he) = views["picks"], views["hits"]
    total = max(1, pw + pe)
    return (
        f"\n{label}: of {pw + pe} contested slots the words view filled {pw} ({pw / total:.0%}, "
        f"{hw} hits) and the embedding view {pe} ({he} hits)."
    )


LEGEND = (
    "R@k: found / min(k, positives), mean over the pools. vs {against} @k: finds added by label "
    "k, summed over the pools (pools with more/equal/fewer finds, two-sided sign test p). "
    "s/run: mean seconds per pool (wall, on a shared machine)."
)


def held_out_together(report: dict, methods: list[str], budget: int, against: str) -> str:
    """Every held-out pool of the sets run, as one table: the issue's question in one line
    per method (a method absent from any set is left out)."""
    pools, runs = [], []
    for name, record in report["sets"].items():
        if SETS[name].tuning:
            continue
        pools += [{**p, "key": f"{name}:{p['key']}"} for p in record["pools"]]
        runs += [{**r, "key": f"{name}:{r['key']}"} for r in record["runs"]]
    if not pools:
        return ""
    names = ", ".join(n for n in report["sets"] if not SETS[n].tuning)
    summary = summarise(pools, runs, methods, budget, against)
    head = [f"### The held-out sets together ({len(pools)} pools: {names})", ""]
    return "\n".join(head + table(summary, methods, {}, budget, against))


def plot(name: str, summary: dict, positives: float, path: Path) -> None:
    from backend.reports import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for m, s in summary.items():
        y = s["mean_found"]
        ax.plot(np.arange(1, len(y) + 1), y, label=PEER_LABELS.get(m, m),
                ls="--" if m == "tropel" else "-")  # fmt: skip
    ax.axhline(positives, color="k", ls=":", lw=1, label=f"all positives ({positives:.1f})")
    ax.set(xlabel="labels spent", ylabel="positives found (mean over pools)", title=name)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main


class Tee:
    """Everything printed also goes to the log file under out/."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, s: str) -> None:
        for st in self.streams:
            st.write(s)
            st.flush()

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    p.add_argument("--states", type=int, default=3, help="random states 0..N-1 (default 3)")
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    p.add_argument("--variants", default="default,tropel",
                   help="of simulate_dbpedia's VARIANTS, or bg_split")  # fmt: skip
    p.add_argument("--no-peers", action="store_true", help="skip ASReview and small-text")
    p.add_argument("--against", default="tropel",
                   help="the method every other is paired with (default tropel)")  # fmt: skip
    p.add_argument("--small-text", choices=SMALL_TEXT, default="anchoral", help="its strategy")
    p.add_argument("--out", type=Path, default=OUT / "heldout.json")
    p.add_argument("--log", type=Path, default=OUT / "heldout.log")
    p.add_argument("--table", type=Path, nargs="+", metavar="JSON",
                   help="print saved results (a later file's set replaces an earlier's) and "
                   "write them merged to --out; run nothing")  # fmt: skip
    args = p.parse_args(argv)
    args.sets = parse_sets(p, args.sets)
    args.variants = [v for v in args.variants.split(",") if v]
    variants = [*VARIANTS, *EXPERIMENTS]
    if bad := sorted(set(args.variants) - set(variants)):
        p.error(f"unknown {', '.join(bad)}; choose from {', '.join(variants)}")
    if min(args.states, args.budget, args.jobs) < 1:
        p.error("--states, --budget and --jobs must be >= 1")
    return args


def parse_sets(p: argparse.ArgumentParser, text: str) -> list[str]:
    """`--sets` of a script that runs on this suite's sets: the names, or a usage error."""
    names = [s for s in text.split(",") if s]
    if bad := sorted(set(names) - set(SETS)):
        p.error(f"unknown {', '.join(bad)}; choose from {', '.join(SETS)}")
    return names


def name_small_text(strategy: str) -> None:
    PEER_LABELS["small-text"] = f"small-text ({SMALL_TEXT[strategy]})"


def run_set(name: str, args: argparse.Namespace, py: Path | None, files: Path) -> dict:
    """Every method on every pool of one set: the record the JSON keeps."""
    global LOADED
    t0 = time.perf_counter()
    LOADED = load(SETS[name])
    todo = pools(SETS[name], LOADED, args.states)
    runs = run_variants(name, todo, args.variants, args.budget, args.jobs)
    record = {"spec": asdict(SETS[name]), "pools": [pool_record(p) for p in todo], "absent": {}}
    if py is not None:
        harness.log(f"{name}: peers on {len(todo)} pools")
        peer_runs, record["absent"], record["peer_versions"] = run_peers(
            py, files / "peers" / name, LOADED, todo, args.budget, args.jobs, args.small_text
        )
        runs += peer_runs
    return {**record, "runs": runs, "seconds": round(time.perf_counter() - t0, 1)}


def render(
    name: str, record: dict, methods: list[str], budget: int, files: Path, against: str
) -> str:
    """The set's summary, markdown table and plot, from its record (fresh or saved)."""
    record["summary"] = summarise(record["pools"], record["runs"], methods, budget, against)
    why = record.get("why_no_peers")
    absent = {**{m: why for m in PEERS if why}, **record["absent"]}
    md = "\n".join(heading(name, record["pools"], budget)
                   + table(record["summary"], methods, absent, budget, against))  # fmt: skip
    png = files / f"{name}.png"
    positives = float(np.mean([p["positives"] for p in record["pools"]]))
    plot(name, record["summary"], positives, png)
    record["table"], record["plot"] = md, str(png)
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = args.out.with_suffix("")  # out/heldout.json -> plots and peer files in out/heldout/
    if args.table:  # re-render saved results with this code; run nothing
        files_in = [json.loads(f.read_text()) for f in args.table]
        saved = {**files_in[-1], "sets": {k: v for f in files_in for k, v in f["sets"].items()}}
        PEER_LABELS["small-text"] = (
            f"small-text ({SMALL_TEXT[saved['args'].get('small_text', 'anchoral')]})"
        )
        for name, record in saved["sets"].items():
            methods = saved.get("methods") or [*saved["args"]["variants"], *PEERS]
            budget = saved["args"]["budget"]
            print(render(name, record, methods, budget, files, args.against) + "\n")
        print(held_out_together(saved, methods, saved["args"]["budget"], args.against))
        if len(args.table) > 1:
            harness.write_json(args.out, saved, indent=1)
        return 0
    name_small_text(args.small_text)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout = Tee(sys.__stdout__, args.log.open("a"))
    harness.log(f"heldout.py {' '.join(sys.argv[1:])}")
    commit = subprocess.run(["git", "-C", str(harness.ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    py, why_no_peers = (None, "skipped (--no-peers)") if args.no_peers else ensure_peers()
    methods = args.variants + ([] if args.no_peers else list(PEERS))
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "commit": commit, "methods": methods, "sets": {}}  # fmt: skip
    t_all = time.perf_counter()
    for name in args.sets:
        record = {**run_set(name, args, py, files), "why_no_peers": why_no_peers}
        md = render(name, record, methods, args.budget, files, args.against)
        print("\n" + md + "\n", flush=True)
        report["sets"][name] = record
        harness.write_json(args.out, report, indent=1)  # after each set: a stop keeps the sets done
        harness.log(f"{name}: done in {record['seconds']:.0f} s; {args.out}, {record['plot']}")
    print("\n" + held_out_together(report, methods, args.budget, args.against), flush=True)
    harness.log(f"all sets in {(time.perf_counter() - t_all) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
