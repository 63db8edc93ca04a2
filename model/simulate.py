"""Replay a labelled dataset: an oracle annotator labels whatever the system asks for next.

This is both the project's benchmark and a user feature (like a screening tool's simulate
mode): it tells a manager how fast the loop finds a rare class on data they already know.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.features import pad_prototypes, pool_features, with_lexical
from model.labels import LabelState
from model.prioritiser import Pool, Prioritiser, RankerConfig, embed_prototypes

CHECKPOINTS = (50, 100, 300)


@dataclass
class RunResult:
    method: str
    found: list[int]  # cumulative rare positives found after 1, 2, ... labels
    seconds_per_label: float
    prioritiser: Prioritiser | None = field(default=None, repr=False)
    state: LabelState | None = field(default=None, repr=False)


def tropel_config(config: RankerConfig) -> RankerConfig:
    """Patterson et al. 2015: a linear model on human labels only, asking for its top-scored
    item of the whole pool (across classes: the most probable class head), none of our
    additions."""
    return RankerConfig(
        f_a=0, strategy="positive", C=config.C, human_weight=1.0, class_choice="probability",
        outlier_prior=0.0, lexical_dims=0, seals_above=None, random_state=config.random_state,
    )  # fmt: skip


def initial_positives(
    labels: np.ndarray, targets: list[str], k: int, rng: np.random.Generator
) -> dict[int, str]:
    seeds: dict[int, str] = {}
    for t in targets:
        rows = np.flatnonzero(labels == t)
        if len(rows) < k:
            raise ValueError(f"target {t!r} has {len(rows)} rows in the pool; {k} seeds needed")
        seeds.update({int(r): t for r in rng.choice(rows, size=k, replace=False)})
    return seeds


def run(
    X: np.ndarray,
    labels: np.ndarray,
    targets: list[str],
    seeds: dict[int, str],
    budget: int,
    method: str = "system",
    config: RankerConfig | None = None,
    prototypes: dict[str, np.ndarray] | None = None,
    progress: bool = False,
    index_columns: int | None = None,
) -> RunResult:
    """Label `budget` tasks one at a time, retraining after each; count rare finds.

    `method` is "system" (the configured loop), "tropel" (Patterson et al. 2015: a linear
    model on fixed features, human labels only, top-scored item each step) or "random".
    `index_columns`: where the configuration uses SEALS, its neighbour index covers these
    leading columns of `X` (the embedding's, as in the service) instead of all of them.
    """
    config = config or RankerConfig()
    rng = np.random.default_rng(config.random_state)
    is_rare = np.isin(labels, targets)
    pool = Pool(list(range(len(X))), X)
    state = LabelState(targets)
    for row, label in seeds.items():
        state.set_label(row, label)
    if method == "tropel":
        config = tropel_config(config)
    elif method not in ("system", "random"):
        raise ValueError(f"unknown method {method!r}")
    prio = Prioritiser(targets, config, prototypes) if method != "random" else None
    index = None
    if prio is not None and index_columns and config.needs_index(len(X)):
        from model.seals import PoolIndex

        index = PoolIndex.build(pool.ids, X, index_columns)
    random_order = rng.permutation(np.setdiff1d(np.arange(len(X)), list(seeds)))
    found, n_found = [], 0
    t0 = time.perf_counter()
    for step in tqdm(range(budget), desc=method, disable=not progress, leave=False):
        if prio is None:
            if step >= len(random_order):
                break
            row = int(random_order[step])
        else:
            rows, _ = prio.fit(pool, state, index=index).queue(1)
            if len(rows) == 0:
                break
            row = int(rows[0])
            state.record_query(row, prio.queue_targets_[0], prio.queue_logits_[0])
        state.set_label(row, str(labels[row]))
        n_found += bool(is_rare[row])
        found.append(n_found)
    elapsed = (time.perf_counter() - t0) / max(1, len(found))
    if prio is not None:
        prio.fit(pool, state, index=index)
    return RunResult(method, found, elapsed, prio, state)


def sign_test(more: int, fewer: int) -> float:
    """Two-sided sign test: how likely a split at least this uneven is between two variants
    that are equally good, over pools where one found more and the other fewer (ties
    dropped). Runs a find or two apart are told apart by this, not by their means."""
    n, k = more + fewer, min(more, fewer)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def recall_at(found: list[int], positives: int, k: int) -> float | None:
    """found ÷ min(k, positives) after k labels; None when the run was shorter than k."""
    if k > len(found) or positives == 0:
        return None
    return found[k - 1] / min(k, positives)


def f1_per_target(prio: Prioritiser, X_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Held-out F1 of each class's final classifier (positive where its score > 0)."""
    scores = prio.score(X_test)
    out = {}
    for j, t in enumerate(prio.targets):
        pred, true = scores[:, j] > 0, y_test == t
        tp = float(np.sum(pred & true))
        denom = float(pred.sum() + true.sum())
        out[t] = 2 * tp / denom if denom else 0.0
    return out


@dataclass
class SimulationReport:
    positives: int
    budget: int
    targets: list[str]
    found: dict[str, list[int]]
    seconds_per_label: dict[str, float]
    recall: dict[str, dict[int, float | None]]
    f1: dict[str, float] | None = None

    def to_json(self) -> dict:
        return asdict(self)


def report(
    runs: list[RunResult], positives: int, budget: int, targets: list[str]
) -> SimulationReport:
    return SimulationReport(
        positives=positives,
        budget=budget,
        targets=targets,
        found={r.method: r.found for r in runs},
        seconds_per_label={r.method: round(r.seconds_per_label, 4) for r in runs},
        recall={r.method: {k: recall_at(r.found, positives, k) for k in CHECKPOINTS} for r in runs},
    )


def format_table(rep: SimulationReport) -> str:
    ks = [k for k in CHECKPOINTS if k <= rep.budget] or [rep.budget]
    head = f"{'method':<10}" + "".join(f"{'found@' + str(k):>11}{'recall':>8}" for k in ks)
    lines = [f"pool holds {rep.positives} rare positives besides the seeds", head]
    for method, found in rep.found.items():
        cells = ""
        for k in ks:
            r = recall_at(found, rep.positives, k)
            cells += f"{found[k - 1] if k <= len(found) else '-':>11}"
            cells += f"{'-' if r is None else f'{r:.2f}':>8}"
        lines.append(f"{method:<10}{cells}")
    if rep.f1:
        f1s = ", ".join(f"{t} {v:.2f}" for t, v in rep.f1.items())
        lines.append(f"held-out F1 (system): mean {np.mean(list(rep.f1.values())):.2f} ({f1s})")
    return "\n".join(lines)


def write_outputs(rep: SimulationReport, out: Path) -> None:
    """`curve.json` for machines and `curve.png` (found vs labels, with the ideal) for people."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(rep.to_json(), indent=1))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(1, rep.budget + 1)
    ax.plot(x, np.minimum(x, rep.positives), "k:", label="ideal")
    for method, found in rep.found.items():
        ax.plot(np.arange(1, len(found) + 1), found, label=method)
    ax.set_xlabel("labels spent")
    ax.set_ylabel("rare positives found")
    ax.set_title(f"{', '.join(rep.targets)}: {rep.positives} rare items in the pool")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)


def simulate_csv(
    path: str | Path,
    targets: list[str],
    budget: int,
    *,
    text_column: str = "text",
    label_column: str = "label",
    prevalence: float | None = None,
    initial: int = 5,
    random_state: int = 0,
    test: str | Path | None = None,
    config: RankerConfig | None = None,
    embedder=None,
    methods: tuple[str, ...] = ("system", "tropel", "random"),
    progress: bool = True,
) -> SimulationReport:
    """The `rarelabel simulate` command minus printing: read, build the pool, embed, replay."""
    from model.data import DataError, build_pool, check_targets, read_csv
    from model.embedding import Embedder, SQLiteCache, default_cache_path

    if budget < 1:
        raise DataError(f"budget must be >= 1, got {budget}")
    if initial < 1:
        raise DataError(f"initial positives must be >= 1, got {initial}")
    config = config or RankerConfig(random_state=random_state)
    data = read_csv(path, text_column, label_column)
    test_data = read_csv(test, text_column, label_column) if test else None
    if test_data is not None:
        check_targets(test_data, targets)
    rng = np.random.default_rng(random_state)
    rows = build_pool(data, targets, prevalence, rng)
    pool = data.subset(rows)
    labels = np.array(pool.labels)
    try:
        seeds = initial_positives(labels, targets, initial, rng)
    except ValueError as e:
        raise DataError(str(e)) from None
    positives = int(np.isin(labels, targets).sum()) - len(seeds)
    embedder = embedder or Embedder(cache=SQLiteCache(default_cache_path()))
    X = embedder.encode(pool.texts, progress=progress)
    # The system ranks on the embedding plus the pool's word statistics; tropel, as its
    # paper defines it, on the fixed embedding.
    X_sys, lexical = pool_features(X, pool.texts, config.lexical_dims, random_state)
    protos = embed_prototypes(embedder, targets)
    sys_protos = pad_prototypes(protos, config.lexical_dims)
    runs = [
        run(
            X_sys,
            labels,
            targets,
            seeds,
            budget,
            m,
            config,
            sys_protos,
            progress=progress,
            index_columns=X.shape[1],
        )  # SEALS neighbours by the embedding, as in the service
        if m == "system"
        else run(X, labels, targets, seeds, budget, m, config, protos, progress=progress)
        for m in methods
    ]
    rep = report(runs, positives, budget, targets)
    if test_data is not None and runs[0].prioritiser is not None:
        X_test = embedder.encode(test_data.texts, progress=progress)
        if lexical is not None:
            X_test = with_lexical(X_test, lexical.transform(test_data.texts))
        rep.f1 = f1_per_target(runs[0].prioritiser, X_test, np.array(test_data.labels))
    return rep
