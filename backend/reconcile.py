"""Bring the store back to Label Studio's state, which webhooks alone cannot guarantee.

Label Studio sends each webhook once and never retries, so one lost while the web process
or Redis was down is gone. Two ways back:
* `sync`: read every task (the export; slow on big projects) and rebuild the pool, the
  labels and our predictions' scores. Used at first contact, on *Start Training*, after
  Redis lost its data, and when the task counts disagree.
* `reconcile`: cheap enough to run every minute. The project's record (label config, task
  count, ordering settings), the annotated tasks only (cost grows with the labels, not the
  pool) and the list of our predictions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from backend import labelstudio as ls
from backend.client import client_for, secure_webhooks
from backend.embedder import embed_tasks
from backend.events import apply_annotation
from backend.settings import ProjectConfig
from backend.store import Store

log = logging.getLogger("rarelabel.worker")
FIRST_CHUNK = 128  # tasks embedded before the first ranking (~2 s on 2 cores)


@dataclass
class Reconciled:
    changed: bool  # the labels or the pool moved: a retrain is owed
    configure: bool  # the project's ordering settings are not ours


def _apply_annotated(store: Store, cfg: ProjectConfig, tasks: list[dict]) -> bool:
    """Label Studio's annotations win: apply what is newer, delete what it no longer has."""
    p, changed, seen = cfg.project_id, False, set()
    for task in tasks:
        for ann in task["annotations"]:
            seen.add(int(ann["id"]))
            changed |= apply_annotation(store, cfg, int(task["id"]), ann)
    gone = set(store.annotations(p)) - seen
    if gone:
        store.delete_annotations(p, gone)
    return changed or bool(gone)


def first_contact(store: Store, cfg: ProjectConfig) -> None:
    """A ranking within seconds of connecting: embed the project's first FIRST_CHUNK tasks,
    read as one page instead of the whole export; the job after it runs `sync`."""
    p = cfg.project_id
    vectors = embed_tasks(store, cfg, ls.first_tasks(client_for(cfg), p, FIRST_CHUNK))
    store.set_status(p, first_contact_at=time.time())
    log.info("project %s: first contact, %d tasks embedded to rank at once", p, len(vectors))


def sync(store: Store, cfg: ProjectConfig) -> None:
    """Rebuild the pool, the labels and our predictions' scores from Label Studio.

    Only the first FIRST_CHUNK new tasks are embedded here (labelled ones first), so a
    ranking reaches Label Studio seconds after connecting; the rest wait in the backlog,
    which each following job embeds a chunk of (backend.jobs)."""
    t0 = time.perf_counter()
    p, client = cfg.project_id, client_for(cfg)
    tasks = ls.fetch_tasks(client, p)
    ids = {int(t["id"]) for t in tasks}
    store.remove_tasks(p, (store.pool_ids(p) | store.task_ids(p)) - ids)
    n_new = len(embed_tasks(store, cfg, tasks, at_most=FIRST_CHUNK))
    _apply_annotated(store, cfg, tasks)
    store.set_pushed(p, ls.our_predictions(client, p, cfg.model_version))
    store.prune_tombstones(p)
    now = time.time()
    store.set_status(p, synced_at=now, reconciled_at=now, push_in_flight=0)
    log.info(
        "project %s: synced %d tasks (%d newly embedded, %d to embed next), %d labels in %.1fs",
        p,
        len(tasks),
        n_new,
        store.backlog_size(p),
        len(store.labels(p)),
        time.perf_counter() - t0,
    )


def reconcile(store: Store, cfg: ProjectConfig) -> Reconciled:
    """The cheap check; falls back to `sync` when Label Studio's task count differs."""
    t0 = time.perf_counter()
    p, client = cfg.project_id, client_for(cfg)
    project = ls.check_project(client, p)
    configure = (project.get("sampling"), project.get("model_version")) != (
        ls.UNCERTAINTY_SAMPLING,
        cfg.model_version,
    )
    if project.get("task_number") is not None and project["task_number"] != store.task_count(p):
        log.info(
            "project %s: Label Studio has %s tasks, the store %d: syncing",
            p,
            project["task_number"],
            store.task_count(p),
        )
        sync(store, cfg)
        return Reconciled(True, configure)
    changed = _apply_annotated(store, cfg, ls.fetch_annotated(client, p))
    theirs = ls.our_predictions(client, p, cfg.model_version)
    if theirs != store.pushed(p):
        store.set_pushed(p, theirs)
        changed = True
    secure_webhooks(cfg)
    store.prune_tombstones(p)
    store.set_status(p, reconciled_at=time.time(), push_in_flight=0)
    log.info("project %s: reconciled in %.2fs, changed: %s", p, time.perf_counter() - t0, changed)
    return Reconciled(changed, configure)
