"""Putting a project's job on the RQ queue, without importing the worker's code (the web
process enqueues by name, so it never loads the rankers)."""

from __future__ import annotations

from datetime import timedelta

from rq import Queue, Retry

from backend.store import Store

QUEUE = "rarelabel"
JOB = "backend.jobs.process_project"
# Embedding a backlog, in chunks any worker can take: workers serve QUEUE first, so a label
# is never stuck behind a big import.
EMBED_QUEUE = "rarelabel-embed"
EMBED_JOB = "backend.embedder.embed_chunk"
QUEUES = [QUEUE, EMBED_QUEUE]
RETRY = Retry(max=4, interval=[5, 15, 30, 60])  # a job's failures, before the sweep takes over
JOB_TIMEOUT = 6 * 3600  # embedding a million tasks takes hours; the lock, not this, frees


def enqueue_embedding(store: Store, project: int, chunks: int) -> None:
    """`chunks` embedding jobs; each claims what is left of the backlog when it runs."""
    queue = Queue(EMBED_QUEUE, connection=store.r)
    options = {"timeout": JOB_TIMEOUT, "result_ttl": 600, "failure_ttl": 86400}
    queue.enqueue_many([Queue.prepare_data(EMBED_JOB, (project,), **options)] * chunks)


def enqueue(store: Store, project: int, delay: float = 0, retry: bool = True) -> None:
    """`retry=False` for the sweep's jobs: the next sweep is their retry, so a long outage
    costs one failed job per sweep, not a growing stack of backoffs."""
    queue = Queue(QUEUE, connection=store.r)
    options = {"job_timeout": JOB_TIMEOUT, "result_ttl": 600, "failure_ttl": 86400}
    options["retry"] = RETRY if retry else None
    if delay > 0:
        queue.enqueue_in(timedelta(seconds=delay), JOB, project, **options)
    else:
        queue.enqueue(JOB, project, **options)
