"""The worker's job: apply recorded events, reconcile with Label Studio, retrain, push.

Nothing here can wedge:
* One job per project at a time (backend.locks). A job that finds the lock taken is
  scheduled again shortly instead of blocking its worker.
* A failed job is retried by RQ with backoff (the worker runs RQ's scheduler); events are
  acknowledged only after they are applied, so a crash loses nothing.
* An event that keeps failing is set aside with its error, not left blocking those behind.
* The sweep (backend.sweep) gives a job to each project that owes work, so no fault needs
  a new webhook (or a person) to be repaired.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from backend import labelstudio as ls
from backend.client import client_for, config_from_label_studio, secure_webhooks
from backend.embedder import fan_out
from backend.events import apply_event, is_noop, needs_configuring
from backend.locks import project_lock
from backend.queueing import enqueue
from backend.reconcile import first_contact, reconcile, sync
from backend.retrain import retrain_and_push
from backend.settings import (
    ConfigError,
    lock_seconds,
    parse_label_config,
    redis_url,
    resolve,
)
from backend.store import Store, connect
from backend.sweep import reconcile_seconds

log = logging.getLogger("rarelabel.worker")
# PROJECT_UPDATED is not among them: configuring the project fires it, so it would loop.
REBUILD_ACTIONS = {"SETUP", "START_TRAINING"}
MAX_EVENT_ATTEMPTS = 3  # then the event is set aside with its error


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
    served = store.dirty_mark(project)
    result = retrain_and_push(store, cfg)
    if configure:  # after the push: Label Studio accepts a model_version it has seen
        ls.configure_project(client_for(cfg), project, cfg.model_version)
        secure_webhooks(cfg)
    owed = not store.clear_dirty(project, served)  # marked again during the retrain
    store.ack_events(project, events)
    if "synced_at" not in store.status(project) or owed:
        enqueue(store, project)  # the full sync after a first ranking, or the retrain owed
    elif store.backlog_size(project):
        fan_out(store, project)
    return result
