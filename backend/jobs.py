"""Worker jobs: apply recorded events, retrain, push the queue back to Label Studio.

One job per project at a time (a Redis lock); a burst of webhooks becomes one or two jobs
because the web app enqueues only when no job is pending. Events are acknowledged only
after they are applied, so a crash loses nothing: the next job replays them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from rq import Queue

from backend import labelstudio as ls
from backend.queue_sync import plan_push
from backend.settings import (
    ConfigError,
    ProjectConfig,
    env,
    parse_label_config,
    redis_url,
    resolve,
)
from backend.store import RedisVectorCache, Store, connect
from model.embedding import Embedder, cache_dir
from model.features import LexicalFeatures, embedding_part, with_lexical
from model.labels import LabelState
from model.prioritiser import LARGE_POOL, Pool, Prioritiser, RankerConfig, embed_prototypes
from model.rankers import class_probabilities
from model.screening import OutlierScreen, PoolRarity, summarise, summarise_probabilities
from model.seals import PoolIndex

log = logging.getLogger("rarelabel.worker")
QUEUE = "rarelabel"
# PROJECT_UPDATED is not among them: configuring the project fires it, so it would loop.
REBUILD_ACTIONS = {"SETUP", "START_TRAINING"}
MIN_SCREEN_POOL = 5  # an outlier screen needs a pool to compare with
LEXICAL_REFIT_GROWTH = 1.25  # refit the pool's word statistics when it has grown by a quarter
INDEX_SAVE_GROWTH = 1.05  # save a pool's neighbour index again when it holds 5% more rows


def enqueue(store: Store, project: int) -> None:
    Queue(QUEUE, connection=store.r).enqueue(
        process_project, project, job_timeout=3600, result_ttl=600, failure_ttl=86400
    )


@dataclass
class _Warm:
    """What a long-lived worker keeps between jobs: nothing that cannot be rebuilt."""

    pools: dict[int, Pool] = field(default_factory=dict)
    prioritisers: dict[int, Prioritiser] = field(default_factory=dict)
    rarity: dict[int, PoolRarity] = field(default_factory=dict)  # outlier score per pool row
    screens: dict[int, OutlierScreen] = field(default_factory=dict)
    lexical: dict[int, tuple[LexicalFeatures, int]] = field(default_factory=dict)  # + pool size
    lexical_columns: dict[int, int] = field(default_factory=dict)  # in the pool's rows now
    indexes: dict[int, PoolIndex] = field(default_factory=dict)  # SEALS neighbour indexes


@lru_cache(maxsize=1)
def _warm() -> _Warm:
    return _Warm()


@lru_cache(maxsize=1)
def _embedder() -> Embedder:
    return Embedder(cache=RedisVectorCache(connect(redis_url())))


def client_for(cfg: ProjectConfig | None):
    """Environment first (the backend's own view of the network), else what /setup said."""
    url = env("LABEL_STUDIO_URL") or (cfg.hostname if cfg else None)
    key = env("LABEL_STUDIO_API_KEY") or (cfg.access_token if cfg else None)
    if not url or not key:
        raise ls.LabelStudioError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for the backend")
    return _client(url, key)


@lru_cache(maxsize=8)
def _client(url: str, key: str):
    """One client per server and key for the worker's life: building one exchanges a personal
    access token for an access token (a request), and the SDK refreshes that by itself."""
    return ls.make_client(url, key)


def config_from_label_studio(project: int) -> ProjectConfig:
    """First contact through a webhook: read the project's label config from Label Studio."""
    return resolve(project, ls.check_project(client_for(None), project)["label_config"])


def embed_tasks(store: Store, cfg: ProjectConfig, tasks: list[dict]) -> dict[int, np.ndarray]:
    """Add the tasks' vectors to the pool; tasks without the text field are logged and skipped.

    Every text is stored, known or not: the lexical features are fitted on them (a pool
    from before they existed gets its texts on the next sync). Returns the vectors of the
    tasks that were new to the pool."""
    ids = [int(t["id"]) for t in tasks if "id" in t]
    known = store.has_vectors(cfg.project_id, ids)
    texts: dict[int, str] = {}
    for task in tasks:
        text = (task.get("data") or {}).get(cfg.label.text_key)
        if not isinstance(text, str) or not text.strip():
            log.warning("project %s task %s: no text in field %r, skipped",
                        cfg.project_id, task.get("id"), cfg.label.text_key)  # fmt: skip
            continue
        texts[int(task["id"])] = text
    store.add_texts(cfg.project_id, texts)
    fresh = {t: text for t, text in texts.items() if t not in known}
    if not fresh:
        return {}
    X = _embedder().encode(list(fresh.values()), progress=len(fresh) > 1000)
    vectors = dict(zip(fresh, X, strict=True))
    store.add_vectors(cfg.project_id, vectors)
    return vectors


def label_of(cfg: ProjectConfig, annotation: dict) -> str | None:
    """The chosen label of a usable annotation; None for a skip or a choice not in the config."""
    if annotation.get("was_cancelled"):
        return None
    label = ls.choice_of(annotation.get("result") or [], cfg.label.from_name)
    if label is not None and label not in cfg.label.choices:
        log.warning("project %s annotation %s: choice %r not in the label config, ignored",
                    cfg.project_id, annotation.get("id"), label)  # fmt: skip
        return None
    return label


def sync_from_label_studio(store: Store, cfg: ProjectConfig) -> None:
    """Rebuild the pool and the labels from Label Studio, the source of truth."""
    t0 = time.perf_counter()
    client = client_for(cfg)
    tasks = ls.fetch_tasks(client, cfg.project_id)
    n_new = len(embed_tasks(store, cfg, tasks))
    anns: dict[int, tuple[int, str]] = {}
    for task in tasks:
        for ann in task.get("annotations") or []:
            label = label_of(cfg, ann)
            if label is not None:
                anns[int(ann["id"])] = (int(task["id"]), label)
    store.replace_annotations(cfg.project_id, anns)
    store.set_status(cfg.project_id, synced_at=time.time())
    log.info("project %s: synced %d tasks (%d newly embedded), %d labels in %.1fs",
             cfg.project_id, len(tasks), n_new, len(anns), time.perf_counter() - t0)  # fmt: skip


def apply_event(store: Store, cfg: ProjectConfig, event: dict) -> None:
    action = event.get("action")
    p = cfg.project_id
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        ann, task = event["annotation"], event.get("task") or {}
        task_id = int(task.get("id") or ann["task"])
        label = label_of(cfg, ann)
        if label is None:
            store.delete_annotation(p, int(ann["id"]))
        else:
            store.set_annotation(p, int(ann["id"]), task_id, label)
        if task.get("data"):
            embed_tasks(store, cfg, [task])
    elif action == "ANNOTATIONS_DELETED":
        for ann in event.get("annotations") or []:
            store.delete_annotation(p, int(ann["id"]))
    elif action == "TASKS_CREATED":
        screen_import(store, cfg, embed_tasks(store, cfg, event.get("tasks") or []))


def screen_import(store: Store, cfg: ProjectConfig, vectors: dict[int, np.ndarray]) -> dict:
    """How many imported tasks look rare: by the trained rankers, else by outlier rarity."""
    if not vectors:
        return {}
    p, E = cfg.project_id, np.stack(list(vectors.values()))  # the embeddings
    X = E  # in the rankers' space (below)
    model = store.model(p)
    linear = np.array(model["stages"]) == "linear" if model else np.zeros(0, bool)
    fitted = _warm().lexical.get(p)
    if fitted:  # in the rankers' space: the embedding and the pool's word statistics
        texts = store.texts(p, list(vectors))
        X = with_lexical(E, fitted[0].transform([texts.get(t, "") for t in vectors]))
    # rankers trained on other columns (a worker restart, a changed setting) cannot score X
    if linear.any() and len(model["W"][0]) == X.shape[1]:
        W, b = np.asarray(model["W"], np.float32), np.asarray(model["b"], np.float32)
        proba = class_probabilities(X @ W.T + b, linear)
        summary = summarise_probabilities(proba, targets=model["targets"], columns=linear)
        summary.pop("by_target", None)
        how = "rankers"
    else:
        screen = _warm().screens.get(p)
        if screen is None:
            pool = _pool(store, cfg)
            if len(pool.ids) < MIN_SCREEN_POOL:
                log.info("project %s: %d tasks are too few to screen", p, len(pool.ids))
                return {}
            screen = OutlierScreen()  # fitted on a sample: no float32 copy of a large pool
            semantic = embedding_part(pool.X[screen.fit_sample(len(pool.ids))], _lexical_columns(p))
            _warm().screens[p] = screen.fit(semantic)
        summary, how = summarise(screen.score(E)), "outlier screen"
    store.set_status(p, last_import_tasks=summary["n"],
                     last_import_likely_rare=summary["likely_rare"],
                     last_import_likely_common=summary["likely_common"])  # fmt: skip
    log.info("project %s: import of %d tasks screened by the %s: %d likely rare, %d likely common",
             p, summary["n"], how, summary["likely_rare"], summary["likely_common"])  # fmt: skip
    return summary


def _pool(store: Store, cfg: ProjectConfig) -> Pool:
    """The project's vectors, kept in memory while the pool size is unchanged.

    With `lexical_dims`, each row is the embedding plus the pool's word statistics
    (model.features), refitted when the pool has grown by a quarter; the rows go to Redis
    too, so /predict scores a task as the worker does. A large pool is kept as float16."""
    warm, project = _warm(), cfg.project_id
    cached = warm.pools.get(project)
    if cached is not None and len(cached.ids) == store.pool_size(project):
        return cached
    vecs = store.vectors(project)
    ids = sorted(vecs)
    if not ids:
        return Pool([], np.zeros((0, 1), np.float32))
    X = np.stack([vecs[t] for t in ids])
    width, compact = X.shape[1], len(ids) >= LARGE_POOL
    if cfg.lexical_dims > 0:
        X = _with_lexical_columns(store, cfg, ids, X, cached, compact)
    warm.lexical_columns[project] = X.shape[1] - width
    pool = Pool(ids, X, compact=compact)
    warm.pools[project] = pool
    warm.rarity.pop(project, None)  # the outlier prior is per pool row
    warm.screens.pop(project, None)
    return pool


def _with_lexical_columns(
    store: Store,
    cfg: ProjectConfig,
    ids: list[int],
    X: np.ndarray,
    cached: Pool | None,
    compact: bool,
) -> np.ndarray:
    """The pool's rows with their lexical columns: a refit (first time, or the pool grew by
    a quarter) featurises every text; otherwise only the new tasks' texts are read and
    transformed, and the other rows come from the pool already in memory (in float16 for a
    `compact` pool: no float32 copy of all its rows)."""
    warm, project = _warm(), cfg.project_id
    lexical, fitted_at = warm.lexical.get(project, (None, 0))
    refit = (
        lexical is None
        or cached is None
        or lexical.dims != cfg.lexical_dims
        or cached.X.shape[1] != X.shape[1] + lexical.dims  # the setting was off before
        or len(ids) >= LEXICAL_REFIT_GROWTH * fitted_at
    )
    is_new = np.ones(len(ids), bool) if refit else np.array([t not in cached.row for t in ids])
    fresh = [t for t, new in zip(ids, is_new, strict=True) if new]
    texts = store.texts(project, fresh)  # one read: a refit fits on and featurises the same
    docs = [texts.get(t, "") for t in fresh]
    if refit:
        t0 = time.perf_counter()
        lexical = LexicalFeatures(cfg.lexical_dims)
        L = lexical.fit_transform(docs)
        warm.lexical[project] = (lexical, len(ids))
        warm.prioritisers.pop(project, None)  # new feature columns: rankers start afresh
        log.info("project %s: lexical features fitted on %d texts in %.1fs",
                 project, len(ids), time.perf_counter() - t0)  # fmt: skip
    else:
        L = lexical.transform(docs)
    store.set_lexical(project, dict(zip(fresh, L, strict=True)), replace=refit)
    dtype = np.float16 if compact else np.float32
    if refit:
        return with_lexical(X, L, dtype)
    out = np.empty((len(ids), X.shape[1] + lexical.dims), dtype=dtype)
    out[is_new] = with_lexical(X[is_new], L)
    out[~is_new] = cached.X[[cached.row[t] for t, new in zip(ids, is_new, strict=True) if not new]]
    return out


def _lexical_columns(project: int) -> int:
    """How many lexical columns the project's pool rows carry (0 when the setting is off)."""
    return _warm().lexical_columns.get(project, 0)


def index_path(project: int) -> Path:
    """Where the worker saves the project's neighbour index (`.hnsw` and `.rows.npz`)."""
    return cache_dir() / "indexes" / f"project-{project}"


def _pool_index(pool: Pool, project: int, config: RankerConfig) -> PoolIndex | None:
    """The pool's SEALS neighbour index, over the embedding columns (model.seals), when the
    configuration ranks through one.

    Kept in memory between jobs and grown by each job's imported tasks; it outlives a
    lexical refit, and it is saved to disk (again at every 5% of growth), so a restarted
    worker loads it and indexes only the tasks imported since, instead of building it
    again (minutes at a million rows)."""
    if not config.needs_index(len(pool.ids)):
        return None
    warm, dim, path = _warm(), pool.X.shape[1] - _lexical_columns(project), index_path(project)
    kept = warm.indexes.get(project)
    if kept is None:
        kept = PoolIndex.load(path, dim)
        if kept is not None:
            log.info("project %s: loaded the neighbour index of %d tasks", project, len(kept.ids))
    t0 = time.perf_counter()
    index = PoolIndex.follow(kept, pool.ids, pool.X, dim)
    if index is not kept:
        log.info("project %s: built the neighbour index of %d tasks in %.1fs",
                 project, len(pool.ids), time.perf_counter() - t0)  # fmt: skip
    if len(index.ids) >= INDEX_SAVE_GROWTH * index.saved_size:
        index.save(path)
    warm.indexes[project] = index
    return index


def _rarity(pool: Pool, project: int, cfg: ProjectConfig, state: LabelState) -> PoolRarity | None:
    """LOF rarity of the pool's rows, fitted once per pool and only while some target has
    no positive (the only time the prior is used). Each row is scored when a step first
    reads it: a step reads its SEALS working set, not every row of a large pool."""
    if cfg.outlier_prior <= 0 or all(state.positives(t) for t in cfg.targets):
        return None
    warm, lexical = _warm(), _lexical_columns(project)
    if project not in warm.rarity:
        warm.rarity[project] = PoolRarity(
            OutlierScreen("lof"), pool.X, lambda X: embedding_part(X, lexical)
        )
    return warm.rarity[project]


def retrain_and_push(store: Store, cfg: ProjectConfig) -> dict:
    """Fit every class, rank the pool, and write what changed in the queue to Label Studio."""
    t0 = time.perf_counter()
    p = cfg.project_id
    pool = _pool(store, cfg)
    if len(pool.ids) == 0:
        log.info("project %s: empty pool, nothing to rank", p)
        return {"pushed": 0}
    labels = store.labels(p)
    asked = store.asked(p)
    state = LabelState(cfg.targets)
    for task, label in labels.items():  # in annotation order: recent precision per class
        if task in pool.row:
            state.set_label(task, label)
            target, logit = asked.get(task, (None, None))
            if target in cfg.targets:
                state.record_query(task, target, logit)
    prio = _warm().prioritisers.get(p)
    if prio is None or prio.targets != cfg.targets:
        protos = embed_prototypes(_embedder(), cfg.targets, cfg.descriptions, _lexical_columns(p))
        prio = Prioritiser(cfg.targets, ranker_config(cfg), protos)
        _warm().prioritisers[p] = prio
    prio.config = ranker_config(cfg)
    prio.fit(pool, state, _rarity(pool, p, cfg, state), _pool_index(pool, p, prio.config))
    rows, _ = prio.queue(cfg.queue_size)
    queue = [int(pool.ids[r]) for r in rows]
    label_of_task = dict(zip(queue, prio.queue_targets_, strict=True))  # the class that asked
    logit_of_task = dict(zip(queue, prio.queue_logits_.tolist(), strict=True))
    fit_seconds = time.perf_counter() - t0

    plan = plan_push(store.pushed(p), queue, set(labels))
    client = client_for(cfg)
    if plan.deletes:
        ls.delete_predictions(client, p, plan.deletes)
    written = ls.push_predictions(
        client, p, [(t, label_of_task[t], s) for t, s in plan.writes.items()],
        cfg.model_version, cfg.label.from_name, cfg.label.to_name,
    )  # fmt: skip
    store.set_pushed(p, plan.scores)
    store.record_asked(p, {t: (label_of_task[t], logit_of_task[t]) for t in plan.writes})
    store.save_model(p, model_json(prio, cfg))
    counts = state.counts()
    total = time.perf_counter() - t0
    store.set_status(
        p,
        last_retrain_at=time.time(),
        last_retrain_seconds=round(fit_seconds, 4),
        last_push_seconds=round(total - fit_seconds, 4),
        last_predictions_written=written,
        labels_seen=len(labels),
        pool_size=len(pool.ids),
        **{f"positives:{t}": counts[t]["positives"] for t in cfg.targets},
    )
    log.info("project %s: retrained on %d labels in %.3fs, wrote %d predictions, removed %d",
             p, len(labels), fit_seconds, written, len(plan.deletes))  # fmt: skip
    return {"pushed": written, "removed": len(plan.deletes), "fit_seconds": fit_seconds}


def ranker_config(cfg: ProjectConfig) -> RankerConfig:
    return RankerConfig(
        f_a=cfg.f_a, strategy=cfg.strategy, uncertainty=cfg.uncertainty, C=cfg.C,
        outlier_prior=cfg.outlier_prior, lexical_dims=cfg.lexical_dims,
        seals_above=cfg.seals_above,
    )  # fmt: skip


def model_json(prio: Prioritiser, cfg: ProjectConfig) -> dict:
    """Enough to score any vector in a web process: per-class weights and bias."""
    return {
        "model_version": cfg.model_version,
        "targets": prio.targets,
        "W": [prio.rankers_[t].weights[0].tolist() for t in prio.targets],
        "b": [float(prio.rankers_[t].weights[1]) for t in prio.targets],
        "stages": [prio.rankers_[t].stage for t in prio.targets],
    }


def needs_configuring(cfg: ProjectConfig, event: dict) -> bool:
    """A manager's edit reset the order (e.g. turning pre-labelling off blanks model_version).

    Only a difference triggers a fix, so our own update's PROJECT_UPDATED ends the exchange.
    """
    if event.get("action") != "PROJECT_UPDATED" or "sampling" not in event:
        return False
    return (event.get("sampling"), event.get("model_version")) != (
        ls.UNCERTAINTY_SAMPLING,
        cfg.model_version,
    )


def is_noop(cfg: ProjectConfig, event: dict) -> bool:
    """A PROJECT_UPDATED that changes nothing we depend on (e.g. our own configure_project)."""
    if event.get("action") != "PROJECT_UPDATED" or needs_configuring(cfg, event):
        return False
    xml = event.get("label_config")
    return not xml or parse_label_config(xml) == cfg.label


def process_project(project: int) -> dict:
    """The one job: apply pending events (rebuilding from Label Studio when needed), retrain."""
    store = Store(connect(redis_url()))
    with store.r.lock(store.key(project, "lock"), timeout=3600, blocking_timeout=3600):
        store.unschedule(project)
        events = store.pending_events(project)
        try:
            cfg = store.config(project)
            if cfg is None:
                cfg = config_from_label_studio(project)
                store.save_config(cfg)
            for e in events:
                xml = e.get("label_config") if e.get("action") == "PROJECT_UPDATED" else None
                if xml and parse_label_config(xml) != cfg.label:
                    cfg = resolve(project, xml, cfg.extra, cfg.hostname, cfg.access_token)
                    store.save_config(cfg)
                    log.info("project %s: label config changed, targets %s", project, cfg.targets)
            configure = any(needs_configuring(cfg, e) for e in events)
            synced = "synced_at" in store.status(project)
            if events and all(is_noop(cfg, e) for e in events) and synced:
                store.ack_events(project, len(events))  # our own configuration echoing back
                return {"skipped": len(events)}
            if not synced or any(e.get("action") in REBUILD_ACTIONS for e in events):
                sync_from_label_studio(store, cfg)
                configure = True
            else:
                for e in events:
                    try:
                        apply_event(store, cfg, e)
                    except (KeyError, TypeError, ValueError) as err:
                        log.error("project %s: skipped a malformed %s event: %r",
                                  project, e.get("action"), err)  # fmt: skip
            result = retrain_and_push(store, cfg)
            if configure:  # after the push: Label Studio accepts a model_version it has seen
                ls.configure_project(client_for(cfg), project, cfg.model_version)
        except (ls.LabelStudioError, ConfigError) as e:
            log.error(
                "project %s: %s; %d events kept for the next attempt", project, e, len(events)
            )
            store.set_status(project, last_error=str(e), last_error_at=time.time())
            return {"error": str(e)}
        store.ack_events(project, len(events))
        return result
