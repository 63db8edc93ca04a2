"""Tasks to vectors: the one embedder of a process, its cache shared by all in Redis.

The model loads on the first text no cache holds, so a web process answering `/predict` for
tasks the pool already has never loads it.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from backend.queueing import enqueue, enqueue_embedding
from backend.settings import ProjectConfig, lock_seconds, redis_url
from backend.store import RedisVectorCache, Store, connect
from model.embedding import Embedder

log = logging.getLogger("rarelabel.embedder")
CHUNK = 1000  # tasks per embedding job (~5-13 s on 2 cores)
RENEW_EVERY = 64  # texts embedded between renewals of the job's claim (~1 s)
FANOUT_SECONDS = 120  # embedding jobs none of which has run for this long are lost


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    return Embedder(cache=RedisVectorCache(connect(redis_url())))


def texts_of(cfg: ProjectConfig, tasks: list[dict]) -> dict[int, str]:
    """Each task's text; a task without one in the config's field is logged and left out."""
    texts: dict[int, str] = {}
    for task in tasks:
        data = task.get("data")
        text = data.get(cfg.label.text_key) if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            log.warning(
                "project %s task %s: no text in field %r, skipped",
                cfg.project_id,
                task.get("id"),
                cfg.label.text_key,
            )
            continue
        texts[int(task["id"])] = text
    return texts


def embed_tasks(
    store: Store, cfg: ProjectConfig, tasks: list[dict], at_most: int | None = None
) -> dict[int, np.ndarray]:
    """Add tasks Label Studio has confirmed to the pool; returns the vectors of those new to it.

    Every text is stored, known or not: the lexical features are fitted on them. Every task
    id is recorded as one Label Studio has, text or not (reconciliation counts them). With
    `at_most`, only that many new tasks are embedded, labelled ones first, and the rest go
    to the backlog (`embed_backlog`)."""
    store.add_tasks(cfg.project_id, [int(t["id"]) for t in tasks])
    texts = texts_of(cfg, tasks)
    known = store.has_vectors(cfg.project_id, list(texts))
    store.add_texts(cfg.project_id, texts)
    fresh = [t for t in texts if t not in known]
    if at_most is not None:
        labelled = {int(t["id"]) for t in tasks if t.get("annotations")}
        fresh.sort(key=lambda t: (t not in labelled, t))
        store.add_backlog(cfg.project_id, fresh[at_most:])
        fresh = fresh[:at_most]
    return embed_texts(store, cfg, {t: texts[t] for t in fresh})


def encode(texts: dict[int, str]) -> dict[int, np.ndarray]:
    if not texts:
        return {}
    X = embedder().encode(list(texts.values()), progress=len(texts) > 1000)
    return dict(zip(texts, X, strict=True))


def embed_texts(store: Store, cfg: ProjectConfig, texts: dict[int, str]) -> dict[int, np.ndarray]:
    """Embed these tasks' texts into the pool; returns their vectors."""
    vectors = encode(texts)
    store.add_vectors(cfg.project_id, vectors)
    return vectors


def embed_backlog(store: Store, cfg: ProjectConfig, n: int) -> int:
    """Embed up to `n` tasks of the project's backlog, labelled ones first (their labels
    count from the next retrain on); returns how many. Safe on many workers at once: each
    claims its own tasks, and a job killed midway loses none (store.take_backlog)."""
    p = cfg.project_id
    ids = store.take_backlog(p, n, lease=lock_seconds(), first=store.labels(p))
    texts = list(store.texts(p, ids).items())
    vectors: dict[int, np.ndarray] = {}
    for start in range(0, len(texts), RENEW_EVERY):
        vectors.update(encode(dict(texts[start : start + RENEW_EVERY])))
        store.renew_claims(p, ids)
        store.r.expire(store.key(p, "fanout"), FANOUT_SECONDS)  # the jobs are at work
    store.release_claims(p, ids, vectors)
    return len(ids)


def fan_out(store: Store, project: int) -> int:
    """Queue embedding jobs for the project's backlog, one per CHUNK tasks, unless some
    are already queued or running; any worker takes them. Returns how many were queued."""
    n = store.backlog_size(project)
    if not n or not store.r.set(store.key(project, "fanout"), 1, nx=True, ex=FANOUT_SECONDS):
        return 0
    chunks = -(-n // CHUNK)
    enqueue_embedding(store, project, chunks)
    log.info("project %s: %d tasks to embed, in %d jobs", project, n, chunks)
    return chunks


def embed_chunk(project: int) -> int:
    """The embedding job: one CHUNK of the backlog into the pool, then a retrain owed (the
    project's job, queued once however many chunks finish meanwhile)."""
    store = Store(connect(redis_url()))
    cfg = store.config(project)
    if cfg is None:
        return 0
    n = embed_backlog(store, cfg, CHUNK)
    if n:
        store.mark_dirty(project)
        if store.schedule(project):
            enqueue(store, project)
    if not store.backlog_size(project):
        store.r.delete(store.key(project, "fanout"))
    return n
