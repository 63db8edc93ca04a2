"""Tasks to vectors: the one embedder of a process, its cache shared by all in Redis.

The model loads on the first text no cache holds, so a web process answering `/predict` for
tasks the pool already has never loads it.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from backend.settings import ProjectConfig, redis_url
from backend.store import RedisVectorCache, Store, connect
from model.embedding import Embedder

log = logging.getLogger("rarelabel.embedder")


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


def embed_tasks(store: Store, cfg: ProjectConfig, tasks: list[dict]) -> dict[int, np.ndarray]:
    """Add tasks Label Studio has confirmed to the pool; returns the vectors of those new to it.

    Every text is stored, known or not: the lexical features are fitted on them. Every task
    id is recorded as one Label Studio has, text or not (reconciliation counts them)."""
    store.add_tasks(cfg.project_id, [int(t["id"]) for t in tasks])
    texts = texts_of(cfg, tasks)
    known = store.has_vectors(cfg.project_id, list(texts))
    store.add_texts(cfg.project_id, texts)
    fresh = {t: text for t, text in texts.items() if t not in known}
    if not fresh:
        return {}
    X = embedder().encode(list(fresh.values()), progress=len(fresh) > 1000)
    vectors = dict(zip(fresh, X, strict=True))
    store.add_vectors(cfg.project_id, vectors)
    return vectors
