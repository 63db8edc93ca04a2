"""Replay a labelled dataset: an oracle annotator labels whatever the system asks for next.

This is both the project's benchmark and a user feature (like a screening tool's simulate
mode): it tells a manager how fast the loop finds a rare class on data they already know.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model.estimate import Estimate, Pick, draw_audit, estimate
from model.feature_update import FeatureUpdate, background_classes
from model.features import pad_prototypes, pool_features, with_lexical
from model.labels import LabelState, has
from model.prioritiser import Pool, Prioritiser, RankerConfig, embed_prototypes
from model.view_choice import ViewChoice, ViewCredit

CHECKPOINTS = (50, 100, 300)


@dataclass
class RunResult:
    method: str
    found: list[int]  # cumulative rare positives found after 1, 2, ... labels
    seconds_per_label: float
    prioritiser: Prioritiser | None = field(default=None, repr=False)
    state: LabelState | None = field(default=None, repr=False)
    # with `estimates`: each class's estimate after 1, 2, ... labels (aligned with `found`)
    estimates: list[dict[str, Estimate]] | None = field(default=None, repr=False)
    audit: list[bool] = field(default_factory=list, repr=False)  # which labels were audit picks
    # with `config.view_choice`: each view's contested picks and hits (model.view_choice)
    views: ViewCredit | None = field(default=None, repr=False)


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
    progress: Callable[[str, int], None] | None = None,
    index_columns: int | None = None,
    audit_rate: float = 0.0,
    estimates: bool = False,
) -> RunResult:
    """Label `budget` tasks one at a time, retraining after each; count rare finds.

    `method` is "system" (the configured loop), "tropel" (Patterson et al. 2015: a linear
    model on fixed features, human labels only, top-scored item each step) or "random".
    `index_columns`: where the configuration uses SEALS, its neighbour index covers these
    leading columns of `X` (the embedding's, as in the service) instead of all of them.
    `audit_rate`: the share of labels drawn as an audit sample (`model.estimate.draw_audit`)
    instead of asked for by the ranker; its draws come from their own generator, so at 0 a
    run is the same as without it. `estimates`: estimate each class's count after each label.
    With `config.feature_update_every`, every so many labels the features are learnt anew
    from the labels so far (model.feature_update), and ranked on from the next label on.
    """
    if not 0 <= audit_rate < 1:
        raise ValueError(f"audit_rate must be in [0, 1), got {audit_rate}")
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
    views = None
    if method == "system" and config.view_choice and config.lexical_dims > 0:
        views = ViewChoice(targets, config, prototypes, X.shape[1] - config.lexical_dims)
        prio = views.views[0]  # the words view: what the estimates and audits read
    else:
        prio = Prioritiser(targets, config, prototypes) if method != "random" else None
    index = None
    if prio is not None and index_columns and config.needs_index(len(X)):
        from model.seals import PoolIndex

        index = PoolIndex.build(pool.ids, X, index_columns)
    random_order = rng.permutation(np.setdiff1d(np.arange(len(X)), list(seeds)))
    audit_rng = np.random.default_rng([config.random_state, 1]) if audit_rate > 0 else None
    tracked = prio is not None and (estimates or audit_rng is not None)
    labelled = np.zeros(len(X), dtype=bool)
    labelled[list(seeds)] = True
    history = {t: [Pick(has(lab, t)) for lab in seeds.values()] for t in targets}
    found, n_found, ests, audits = [], 0, [], []
    t0 = time.perf_counter()
    every, clusters = config.feature_update_every, None
    update = FeatureUpdate(random_state=config.random_state) if every else None
    for step in range(budget):
        audit = False
        if update is not None and prio is not None and step and step % every == 0:
            if clusters is None:
                clusters = background_classes(X, update.clusters, config.random_state)
            learnt = updated_features(update, X, state, prio, clusters)
            if learnt is not None:  # else nothing to learn from yet: the next update retries
                pool = Pool(pool.ids, learnt)
                prio.forget_solutions()
                prio.prototypes = pad_prototypes(prototypes or {}, learnt.shape[1] - X.shape[1])
        if prio is None:
            if step >= len(random_order):
                break
            row = int(random_order[step])
        else:
            if views is None:
                queue, owner = prio.fit(pool, state, index=index).queue(1), None
            else:
                queue, owners = views.fit(pool, state, index=index).queue(1)
                owner = int(owners[0]) if len(owners) else None
            S = pool_scores(prio, pool.X) if tracked else None
            if estimates and step > 0:
                ests.append(class_estimates(history, S, labelled, targets))
            if len(queue) == 0:
                break
            row = int(queue.rows[0])
            audit = audit_rng is not None and audit_rng.random() < audit_rate
            draw = None
            if audit:  # a random task instead, drawn by the ranker's probability and uniform
                unlabelled = np.flatnonzero(~labelled)
                _, prob = prio.predict(pool.X[unlabelled])
                draw = draw_audit(prob, audit_rng)
                row = int(unlabelled[draw.index])
            else:
                state.record_query(row, queue.targets[0], queue.logits[0])
            if tracked:
                for j, t in enumerate(targets):
                    hit = has(str(labels[row]), t)
                    if draw is None:
                        history[t].append(Pick(hit, float(S[row, j])))
                    else:
                        n = len(unlabelled)  # the tasks it was drawn from
                        history[t].append(
                            Pick(hit, float(S[row, j]), True, draw.q, draw.uniform, n, len(X))
                        )
        state.set_label(row, str(labels[row]))
        labelled[row] = True
        if views is not None and not audit and owner is not None:
            views.credit.add(owner, bool(is_rare[row]))
        audits.append(audit)
        n_found += bool(is_rare[row])
        found.append(n_found)
        if progress is not None:  # (method, labels spent): a progress bar's update
            progress(method, len(found))
    elapsed = (time.perf_counter() - t0) / max(1, len(found))
    if prio is not None:
        prio.fit(pool, state, index=index)
        if estimates and len(ests) < len(found):
            ests.append(class_estimates(history, pool_scores(prio, pool.X), labelled, targets))
    credit = None if views is None else views.credit
    return RunResult(
        method, found, elapsed, prio, state, ests if estimates else None, audits, credit
    )


def pool_scores(prio: Prioritiser, X: np.ndarray) -> np.ndarray:
    """(n, k) scores of every pool row by the last fit (a SEALS fit scored only its view)."""
    return prio.scores_ if prio.view_ is None else prio.score(X)


def class_estimates(
    history: dict[str, list[Pick]], S: np.ndarray, labelled: np.ndarray, targets: list[str]
) -> dict[str, Estimate]:
    return {t: estimate(history[t], S[~labelled, j]) for j, t in enumerate(targets)}


def updated_features(
    update: FeatureUpdate,
    X: np.ndarray,
    state: LabelState,
    prio: Prioritiser,
    clusters: np.ndarray,
) -> np.ndarray | None:
    """The pool's features learnt from the labels so far: each class's human positives, and
    its human negatives with the pseudo-negatives of the last fit (rows are task ids here).
    None while no class has both (every pick a hit, on a class still ranked by cosine)."""
    pos = {t: np.array(sorted(state.positives(t)), dtype=np.int64) for t in prio.targets}
    neg = {
        t: np.array(sorted(state.negatives(t) | prio.pseudo_negatives_.get(t, set())))
        for t in prio.targets
    }
    if not any(len(pos[t]) and len(neg[t]) for t in prio.targets):
        return None
    return update.fit(X, pos, neg, clusters).transform(X)


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
    # the system's estimates (model.estimate) after 1, 2, ... labels, aligned with
    # found["system"]: rare items in the pool besides the seeds, as `positives` counts them
    estimate: dict[str, list[float | None]] | None = None
    estimate_by_target: dict[str, dict[str, list[float | None]]] | None = None
    positives_by_target: dict[str, int] | None = None
    stopped_at: int | None = None  # labels spent when every class's rule first said stop
    stopped_at_by_target: dict[str, int | None] | None = None
    # with view choice: each view's contested picks and hits in the system run
    views: dict[str, list[int]] | None = None

    def to_json(self) -> dict:
        return asdict(self)


def report(
    runs: list[RunResult],
    positives: int,
    budget: int,
    targets: list[str],
    seeds: dict[int, str] | None = None,
    positives_by_target: dict[str, int] | None = None,
) -> SimulationReport:
    """The runs side by side; with `seeds`, the system run's estimates net of them."""
    rep = SimulationReport(
        positives=positives,
        budget=budget,
        targets=targets,
        found={r.method: r.found for r in runs},
        seconds_per_label={r.method: round(r.seconds_per_label, 4) for r in runs},
        recall={r.method: {k: recall_at(r.found, positives, k) for k in CHECKPOINTS} for r in runs},
        positives_by_target=positives_by_target,
    )
    system = next((r for r in runs if r.method == "system" and r.views is not None), None)
    if system is not None:
        rep.views = {"picks": system.views.picks.tolist(), "hits": system.views.hits.tolist()}
    system = next((r for r in runs if r.method == "system" and r.estimates is not None), None)
    if system is not None and seeds is not None:
        _add_estimates(rep, system.estimates, seeds)
    return rep


def _add_estimates(
    rep: SimulationReport, ests: list[dict[str, Estimate]], seeds: dict[int, str]
) -> None:
    """Each class's interval net of its seeds, and their sum. The sum's interval adds the
    classes' bounds: wider than the sum's own 90% interval, never narrower."""
    by_target = {}
    for t in rep.targets:
        k = sum(lab == t for lab in seeds.values())
        by_target[t] = {
            key: [None if getattr(e[t], key) is None else getattr(e[t], key) - k for e in ests]
            for key in ("total", "low", "high")
        }
    rep.estimate_by_target = by_target
    rep.estimate = {
        key: [
            None
            if any(v[key][i] is None for v in by_target.values())
            else sum(v[key][i] for v in by_target.values())
            for i in range(len(ests))
        ]
        for key in ("total", "low", "high")
    }
    rep.stopped_at_by_target = {
        t: next((i + 1 for i, e in enumerate(ests) if e[t].stop), None) for t in rep.targets
    }
    rep.stopped_at = next(
        (i + 1 for i, e in enumerate(ests) if all(e[t].stop for t in rep.targets)), None
    )


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
    progress: Callable[[str, int], None] | None = None,
    audit_rate: float = 0.0,
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
    X = embedder.encode(pool.texts, progress=progress is not None)
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
            audit_rate=audit_rate,
            estimates=True,
        )  # SEALS neighbours by the embedding, as in the service
        if m == "system"
        else run(X, labels, targets, seeds, budget, m, config, protos, progress=progress)
        for m in methods
    ]
    by_target = {t: int(np.sum(labels == t)) - initial for t in targets}
    rep = report(runs, positives, budget, targets, seeds, by_target)
    if test_data is not None and runs[0].prioritiser is not None:
        X_test = embedder.encode(test_data.texts, progress=progress is not None)
        if lexical is not None:
            X_test = with_lexical(X_test, lexical.transform(test_data.texts))
        rep.f1 = f1_per_target(runs[0].prioritiser, X_test, np.array(test_data.labels))
    return rep
