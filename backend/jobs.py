"""The worker's job: apply recorded events, reconcile with Label Studio, retrain, push.

Nothing here can wedge:
* One job per project at a time, under a Redis lock that expires `lock_seconds` after its
  job stops renewing it (a killed worker frees it within that). A job that finds the lock
  taken is scheduled again shortly instead of blocking its worker.
* A failed job is retried by RQ with backoff (the worker runs RQ's scheduler); events are
  acknowledged only after they are applied, so a crash loses nothing.
* An event that keeps failing is set aside with its error, not left blocking those behind.
* `sweep`, run by every worker at start and then every 15 s, gives a job to each project
  with pending events, a ranking owed, or a reconciliation due, so no fault needs a new
  webhook (or a person) to be repaired.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from redis.exceptions import RedisError

from backend import labelstudio as ls
from backend.client import client_for, config_from_label_studio, our_backends, secure_webhooks
from backend.embedder import fan_out
from backend.events import apply_event, is_noop, needs_configuring
from backend.queueing import enqueue
from backend.reconcile import first_contact, reconcile, sync
from backend.retrain import retrain_and_push
from backend.settings import (
    ConfigError,
    lock_seconds,
    parse_label_config,
    redis_url,
    resolve,
    setting,
)
from backend.store import Store, connect

log = logging.getLogger("rarelabel.worker")
# PROJECT_UPDATED is not among them: configuring the project fires it, so it would loop.
REBUILD_ACTIONS = {"SETUP", "START_TRAINING"}
MAX_EVENT_ATTEMPTS = 3  # then the event is set aside with its error


def sweep_seconds() -> float:
    return float(setting("sweep_seconds"))


def reconcile_seconds() -> float:
    return float(setting("reconcile_seconds"))


@contextmanager
def project_lock(store: Store, project: int) -> Iterator[bool]:
    """Yields whether this job holds the project's lock; while it does, a thread renews it
    every third of its lifetime, so only a dead job's lock ever expires."""
    ttl = lock_seconds()
    lock = store.r.lock(store.key(project, "lock"), timeout=ttl, blocking=False, thread_local=False)
    if not lock.acquire():
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                lock.reacquire()
            except RedisError as e:  # Redis away: the job's own calls fail and it retries
                log.warning("project %s: could not renew the job lock: %s", project, e)

    renewer = threading.Thread(target=renew, daemon=True, name=f"lock-{project}")
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        with suppress(RedisError):  # expired, or Redis gone: it frees itself
            lock.release()


def process_project(project: int) -> dict:
    """The one job of a project (see the module doc)."""
    store = Store(connect(redis_url()))
    with project_lock(store, project) as held:
        if not held:  # one deferred job per project at a time; the sweep backs it up
            marker = store.key(project, "deferred")
            if store.r.set(marker, 1, nx=True, ex=max(1, int(lock_seconds()))):
                enqueue(store, project, delay=max(1.0, lock_seconds() / 3))
            return {"deferred": True}
        store.unschedule(project)
        try:
            return _process(store, project)
        except ls.LabelStudioError as e:
            if e.status == 404:
                return _forget(store, project, e)
            log.error("project %s: %s; its events are kept for the next attempt", project, e)
            store.set_status(project, last_error=str(e), last_error_at=time.time())
            raise
        except ConfigError as e:
            log.error("project %s: %s", project, e)
            store.set_status(project, last_error=str(e), last_error_at=time.time())
            return {"error": str(e)}


def _forget(store: Store, project: int, error: Exception) -> dict:
    """Label Studio has no such project (any more): its events and state are dropped."""
    log.warning("project %s: Label Studio has no such project (%s); forgotten", project, error)
    store.forget_project(project)
    return {"forgotten": project}


def _config(store: Store, project: int, events: list[dict]):
    """The project's settings: stored, else rebuilt from Label Studio; a new label config
    in an event re-resolves them."""
    cfg = store.config(project)
    if cfg is None:
        cfg = config_from_label_studio(project)
        store.save_config(cfg)
        log.info("project %s: settings rebuilt from Label Studio, targets %s", project, cfg.targets)
    for e in events:
        xml = e.get("label_config") if e.get("action") == "PROJECT_UPDATED" else None
        if isinstance(xml, str) and parse_label_config(xml) != cfg.label:
            cfg = resolve(project, xml, cfg.extra, cfg.hostname, cfg.access_token)
            store.save_config(cfg)
            log.info("project %s: label config changed, targets %s", project, cfg.targets)
    return cfg


def _apply(store: Store, cfg, events: list[dict]) -> bool:
    """Apply each event; one that fails MAX_EVENT_ATTEMPTS times is set aside."""
    changed = False
    for e in events:
        try:
            changed |= apply_event(store, cfg, e)
        except (ls.LabelStudioError, RedisError):
            raise  # not the event's fault: the job is retried
        except Exception as err:  # noqa: BLE001 - any other failure is the event's own
            attempts = store.event_failed(cfg.project_id, e)
            why = f"{type(err).__name__}: {err}"
            if attempts < MAX_EVENT_ATTEMPTS:
                raise
            log.error("project %s: %s event set aside after %d attempts: %s",
                      cfg.project_id, e.get("action"), attempts, why)  # fmt: skip
            store.set_aside(cfg.project_id, e, why)
    return changed


def _process(store: Store, project: int) -> dict:
    events = store.pending_events(project)
    cfg = _config(store, project, events)
    status = store.status(project)
    configure = any(needs_configuring(cfg, e) for e in events)
    synced = "synced_at" in status
    due = time.time() - float(status.get("reconciled_at", 0)) >= reconcile_seconds()
    just_synced = not synced or any(e.get("action") in REBUILD_ACTIONS for e in events)
    if just_synced and store.pool_size(project) == 0 and "first_contact_at" not in status:
        first_contact(store, cfg)  # rank a first page now; the full sync is the next job
        changed = configure = True
    elif just_synced:
        sync(store, cfg)
        changed = configure = True
    else:
        changed = _apply(store, cfg, events)
        if due or status.get("push_in_flight") == "1":
            result = reconcile(store, cfg)
            changed, configure = changed or result.changed, configure or result.configure
    if store.backlog_size(project) and not just_synced:
        fan_out(store, project)  # embedding jobs; each owes a retrain when it is done
    if changed:
        store.mark_dirty(project)
    if not store.dirty(project):
        store.ack_events(project, events)
        if configure:
            ls.configure_project(client_for(cfg), project, cfg.model_version)
        skipped = all(is_noop(cfg, e) for e in events)
        return {"skipped": len(events)} if skipped else {"unchanged": True}
    result = retrain_and_push(store, cfg)
    if configure:  # after the push: Label Studio accepts a model_version it has seen
        ls.configure_project(client_for(cfg), project, cfg.model_version)
        secure_webhooks(cfg)
    store.clear_dirty(project)
    store.ack_events(project, events)
    if "synced_at" not in store.status(project):
        enqueue(store, project)  # the full sync, right after this first ranking
    elif store.backlog_size(project):
        fan_out(store, project)
    return result


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
