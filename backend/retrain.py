"""Fit every class, rank the pool, and write what changed in the queue to Label Studio."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from backend import labelstudio as ls
from backend.audit import audit_head
from backend.client import client_for
from backend.estimates import as_json, class_estimates
from backend.queue_sync import plan_push
from backend.settings import ProjectConfig
from backend.store import Store
from backend.warm import project_state
from model.labels import LabelState
from model.stored import StoredModel
from model.view_choice import ViewCredit, outcomes

log = logging.getLogger("rarelabel.worker")


class _TasksGone(Exception):
    """The push named tasks Label Studio no longer has; they were pruned."""


def retrain_and_push(store: Store, cfg: ProjectConfig) -> dict:
    """One retrain and push. A push refused because tasks are gone from Label Studio prunes
    them from the pool and ranks again, once: the other tasks still get their scores."""
    try:
        return _retrain_and_push(store, cfg)
    except _TasksGone:
        return _retrain_and_push(store, cfg)


def prune_missing(store: Store, cfg: ProjectConfig, tasks: set[int]) -> set[int]:
    """Remove from the pool the tasks Label Studio no longer has; returns them."""
    gone = tasks - ls.existing_tasks(client_for(cfg), cfg.project_id, tasks)
    if gone:
        store.remove_tasks(cfg.project_id, gone)
        log.warning(
            "project %s: %d tasks gone from Label Studio, pruned", cfg.project_id, len(gone)
        )
    return gone


def _retrain_and_push(store: Store, cfg: ProjectConfig) -> dict:
    t0 = time.perf_counter()
    p = cfg.project_id
    state = project_state(store, cfg)
    pool = state.refresh(store)
    if len(pool.ids) == 0:
        log.info("project %s: empty pool, nothing to rank", p)
        return {"pushed": 0}
    labels, asked = store.labels(p), store.asked(p)
    state_labels = LabelState(cfg.targets)
    for task, label in labels.items():  # in annotation order: recent precision per class
        if task in pool.row:
            state_labels.set_label(task, label)
            target, logit = asked.get(task, (None, None))
            if target in cfg.targets:
                state_labels.record_query(task, target, logit)
    views = state.views_for()
    prio = state.prioritiser_for()
    prio.config = cfg.ranker
    rarity, index = state.rarity_for(state_labels), state.index_for(prio.config)
    if views is None:
        q, owners = prio.fit(pool, state_labels, rarity, index).queue(cfg.queue_size), None
    else:  # the credit from what was asked and labelled; a repeated retrain draws the same
        views.credit = ViewCredit.count(outcomes(store.views(p), labels, cfg.targets))
        views.rng = np.random.default_rng([p, len(labels)])
        q, owners = views.fit(pool, state_labels, rarity, index).queue(cfg.queue_size)
    queue = [int(pool.ids[r]) for r in q.rows]
    owner_of_task = {} if owners is None else dict(zip(queue, owners.tolist(), strict=True))
    label_of_task = dict(zip(queue, q.targets, strict=True))  # the class that asked
    logit_of_task = dict(zip(queue, q.logits.tolist(), strict=True))
    # the fit's own scores when it saw the whole pool; a SEALS fit saw only a view of it
    scores = prio.raw_scores_ if prio.view_ is None else prio.score(pool.X)
    audits = store.audits(p)  # a draw made now is unlabelled: the estimates have no use for it
    audit = audit_head(store, cfg, pool, labels, audits, prio, scores)
    if audit:  # served first; shown with its likeliest class, and not one the ranker asked
        shown, _ = prio.predict(pool.X[[pool.row[t] for t in audit]])
        label_of_task.update(zip(audit, shown, strict=True))
        queue = audit + [t for t in queue if t not in audit][: cfg.queue_size - len(audit)]
    fit_seconds = time.perf_counter() - t0

    plan = plan_push(store.pushed(p), queue, set(labels))
    client = client_for(cfg)
    store.set_status(p, push_in_flight=1)  # until set_pushed: Label Studio's copy is unknown
    if plan.deletes:
        ls.delete_predictions(client, p, plan.deletes)
    items = [(t, label_of_task[t], s) for t, s in plan.writes.items()]
    try:
        written = ls.push_predictions(
            client, p, items, cfg.model_version, cfg.label.from_name, cfg.label.to_name
        )
    except ls.LabelStudioError as e:  # Label Studio refuses a batch naming a deleted task
        if e.status == 400 and prune_missing(store, cfg, set(plan.writes)):
            store.set_pushed(p, ls.our_predictions(client, p, cfg.model_version))
            raise _TasksGone from e
        raise
    store.set_pushed(p, plan.scores)
    store.set_status(p, push_in_flight=0)
    asked_now = {t: (label_of_task[t], logit_of_task[t]) for t in plan.writes if t not in audit}
    store.record_asked(p, asked_now)
    store.record_views(p, {t: v for t, v in owner_of_task.items() if t not in audit})
    store.save_model(p, StoredModel.from_prioritiser(prio, cfg.model_version))
    counts = state_labels.counts()
    estimates = class_estimates(cfg.targets, pool, labels, asked, scores, audits, cfg.target_recall)
    estimates = as_json(estimates)
    store.add_curve_point(
        p,
        {
            "labels": len(labels),
            "found": {t: counts[t]["positives"] for t in cfg.targets},
            "estimate": {
                t: {k: e[k] for k in ("total", "low", "high")} for t, e in estimates.items()
            },
        },
    )
    total = time.perf_counter() - t0
    store.set_status(
        p,
        last_retrain_at=time.time(),
        last_retrain_seconds=round(fit_seconds, 4),
        last_push_seconds=round(total - fit_seconds, 4),
        last_predictions_written=written,
        labels_seen=len(labels),
        pool_size=len(pool.ids),
        estimates=json.dumps(estimates),
        audit_labels=sum(t in labels for t in audits),
        views="" if views is None else json.dumps(views_status(views.credit)),
        **{f"positives:{t}": counts[t]["positives"] for t in cfg.targets},
    )
    log.info(
        "project %s: retrained on %d labels in %.3fs, wrote %d predictions, removed %d",
        p,
        len(labels),
        fit_seconds,
        written,
        len(plan.deletes),
    )
    return {"pushed": written, "removed": len(plan.deletes), "fit_seconds": fit_seconds}


def views_status(credit: ViewCredit) -> dict:
    """What the status page says of the view choice."""
    return {
        "picks": credit.picks.tolist(),
        "hits": credit.hits.tolist(),
        "p_words_better": round(credit.p_first_better(), 3),
    }
