"""Recorded webhook events into the store: labels, pool membership, our own echoes.

Annotation events are applied by Label Studio's `updated_at`, never by arrival: an older
event (a late duplicate) never overwrites a newer state, and a deleted annotation leaves a
tombstone that a late `ANNOTATION_CREATED` cannot get past. Annotation ids are never reused
by Label Studio, so a tombstone is final.
"""

from __future__ import annotations

import logging
from datetime import datetime

from backend import labelstudio as ls
from backend.embedder import embed_tasks
from backend.imports import screen_import
from backend.settings import ProjectConfig, parse_label_config
from backend.store import Annotation, Store

log = logging.getLogger("rarelabel.worker")
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def timestamp(value) -> float:
    """Label Studio's `updated_at` (ISO 8601) as a Unix time; 0 when absent or unreadable."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def label_of(cfg: ProjectConfig, annotation: dict) -> str | list[str] | None:
    """The label of a usable annotation: one choice, or the sorted choices of a multi-label
    one; None for a skip. A choice the config does not have is logged and dropped, and the
    others still count."""
    if annotation.get("was_cancelled"):
        return None
    chosen = ls.choices_of(annotation.get("result") or [], cfg.label.from_name)
    unknown = [c for c in chosen if c not in cfg.label.choices]
    if unknown:
        log.warning(
            "project %s annotation %s: choices %r not in the label config, ignored",
            cfg.project_id,
            annotation.get("id"),
            unknown,
        )
    known = sorted(c for c in chosen if c in cfg.label.choices)
    if not known:
        return None
    return known[0] if len(known) == 1 else known


def apply_annotation(store: Store, cfg: ProjectConfig, task: int, annotation: dict) -> bool:
    """Record one annotation as Label Studio holds it; False when it is older than what the
    store has, or deleted already (nothing changes)."""
    p, ann_id = cfg.project_id, int(annotation["id"])
    if store.deleted(p, ann_id):
        return False
    new = Annotation(task, label_of(cfg, annotation), timestamp(annotation.get("updated_at")))
    old = store.annotation(p, ann_id)
    if old is not None and (old.updated > new.updated or old == new):
        return False
    store.set_annotation(p, ann_id, new)
    return True


def apply_event(store: Store, cfg: ProjectConfig, event: dict) -> bool:
    """Apply one event; True when the ranking must be refreshed."""
    action, p = event.get("action"), cfg.project_id
    if action in ANNOTATION_ACTIONS:
        ann, task = event["annotation"], event.get("task") or {}
        task_id = int(task.get("id") or ann["task"])
        if task.get("data"):
            embed_tasks(store, cfg, [task])
        return apply_annotation(store, cfg, task_id, ann)
    if action == "ANNOTATIONS_DELETED":
        ids = [int(a["id"]) for a in event.get("annotations") or []]
        store.delete_annotations(p, ids)
        return bool(ids)
    if action == "TASKS_CREATED":
        screen_import(store, cfg, embed_tasks(store, cfg, event.get("tasks") or []))
        return True
    if action == "TASKS_DELETED":
        removed = store.remove_tasks(p, [int(t["id"]) for t in event.get("tasks") or []])
        log.info("project %s: %d deleted tasks left the pool", p, removed)
        return True
    return False


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
