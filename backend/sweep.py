"""The sweep: every worker, at start and then every `sweep_seconds`, gives a job to each
project with pending events, a ranking owed or a reconciliation due, so no fault needs a
new webhook (or a person) to be repaired."""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import RedisError

from backend import labelstudio as ls
from backend.client import client_for, our_backends
from backend.queueing import enqueue
from backend.settings import redis_url, setting
from backend.store import Store, connect

log = logging.getLogger("rarelabel.worker")


def sweep_seconds() -> float:
    return float(setting("sweep_seconds"))


def reconcile_seconds() -> float:
    return float(setting("reconcile_seconds"))


def needs_job(store: Store, project: int, now: float) -> bool:
    if store.queued_events(project) or store.dirty(project) or store.backlog_size(project):
        return True
    status = store.status(project)
    if "synced_at" not in status:
        return True
    return now - float(status.get("reconciled_at", 0)) >= reconcile_seconds()


def sweep(store: Store, force: bool = False) -> list[int]:
    """Give a job to every project that needs one; returns them. Cheap: a few Redis reads
    per project, and at most one sweep per interval across all workers (a worker that
    starts sweeps at once: `force`)."""
    taken = store.r.set("rl:sweep", 1, nx=True, ex=max(1, int(sweep_seconds() * 0.9)))
    if not (taken or force):
        return []
    if not store.initialised():
        discover(store)
    now, due = time.time(), []
    for project in store.projects():
        if needs_job(store, project, now) and not store.r.exists(store.key(project, "lock")):
            enqueue(store, project, retry=False)
            due.append(project)
    if due:
        log.info("sweep: jobs for projects %s", due)
    return due


def discover(store: Store) -> None:
    """After Redis lost its data: find the projects that use this backend in Label Studio
    (needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)."""
    try:
        client = client_for(None)
        for project in ls.list_projects(client):
            if our_backends(client, project):
                store.add_project(project)
                log.info("project %s: found in Label Studio, will be rebuilt", project)
        store.mark_initialised()
    except ls.LabelStudioError as e:
        log.warning("cannot look for projects in Label Studio yet: %s", e)


def run_sweeps(stop: threading.Event) -> None:
    """The worker's sweeping thread: at start, then every `sweep_seconds`; after a Redis
    outage, at once and with every project's reconciliation due."""
    first, outage, run_id = True, True, None
    while True:
        try:
            store = Store(connect(redis_url()))
            now_id = store.r.info("server").get("run_id")  # new at every Redis restart
            if (outage or now_id != run_id) and not first:  # webhooks may have been lost
                store.reconcile_soon(store.projects())
                log.info("sweep: Redis was away; every project is reconciled now")
            sweep(store, force=first or outage or now_id != run_id)
            first, outage, run_id = False, False, now_id
        except RedisError as e:
            outage = True
            log.warning("sweep: Redis unavailable (%s); trying again", e)
        if stop.wait(sweep_seconds()):
            return
