"""`/metrics` through prometheus_client: a collector that reads the store at scrape time, so
every web process reports the same figures (they live in Redis, not in the process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from rq import Queue
from rq.registry import FailedJobRegistry

from backend.queueing import EMBED_QUEUE, QUEUE
from backend.status import project_status
from backend.store import Store
from model.view_choice import VIEWS

GAUGES = {
    "last_retrain_at": (
        "rarelabel_last_retrain_timestamp_seconds",
        "Unix time of the last retrain",
    ),
    "last_retrain_seconds": ("rarelabel_last_retrain_duration_seconds", "Fit and rescore time"),
    "last_push_seconds": ("rarelabel_last_push_duration_seconds", "Time to write predictions"),
    "last_predictions_written": ("rarelabel_predictions_written", "Predictions in the last push"),
    "labels_seen": ("rarelabel_labels_seen", "Human labels the model trains on"),
    "pool_size": ("rarelabel_pool_size", "Tasks embedded and ranked"),
    "audit_labels": ("rarelabel_audit_labels", "Labelled tasks of the audit sample"),
    "last_import_tasks": ("rarelabel_import_tasks", "Tasks in the last import"),
    "last_import_likely_rare": ("rarelabel_import_likely_rare", "Last import: likely rare"),
    "last_import_likely_common": ("rarelabel_import_likely_common", "Last import: likely common"),
    "last_error_at": ("rarelabel_last_error_timestamp_seconds", "Unix time of the last failed job"),
    "reconciled_at": (
        "rarelabel_last_reconcile_timestamp_seconds",
        "Unix time Label Studio's state was last compared with the store",
    ),
}


class StoreCollector:
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self):
        store = self.store
        depth = GaugeMetricFamily(
            "rarelabel_queue_depth",
            "Work waiting: recorded events and queued jobs",
            labels=["kind"],
        )
        depth.add_metric(["events"], store.queued_events())
        depth.add_metric(["jobs"], len(Queue(QUEUE, connection=store.r)))
        depth.add_metric(["embedding_jobs"], len(Queue(EMBED_QUEUE, connection=store.r)))
        depth.add_metric(["failed_jobs"], len(FailedJobRegistry(QUEUE, connection=store.r)))
        yield depth
        projects = store.projects()
        statuses = {p: store.status(p) for p in projects}
        for field, (name, help_text) in GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=["project"])
            for p, st in statuses.items():
                if field in st:
                    family.add_metric([str(p)], float(st[field]))
            yield family
        aside = GaugeMetricFamily(
            "rarelabel_events_set_aside",
            "Events that kept failing, kept with their error",
            labels=["project"],
        )
        lag = GaugeMetricFamily(
            "rarelabel_ranking_stale",
            "1 while a retrain is owed (labels ahead of the ranking)",
            labels=["project"],
        )
        errors = GaugeMetricFamily(
            "rarelabel_last_job_failed",
            "1 when the last job failed after the last retrain",
            labels=["project"],
        )
        backlog = GaugeMetricFamily(
            "rarelabel_tasks_to_embed",
            "Tasks of a first contact not embedded yet (ranked as they come)",
            labels=["project"],
        )
        healths = {p: project_status(store, p, curve=False) for p in statuses}
        for p, health in healths.items():  # the status page's own judgement: both agree
            backlog.add_metric([str(p)], health["to_embed"])
            aside.add_metric([str(p)], len(health["set_aside"]))
            lag.add_metric([str(p)], float(health["ranking_stale"]))
            errors.add_metric([str(p)], float(health["failing"]))
        yield from (aside, lag, errors, backlog)
        yield from view_gauges({p: h["views"] for p, h in healths.items() if h["views"]})
        found = GaugeMetricFamily(
            "rarelabel_rare_positives_found",
            "Human-labelled positives per rare class",
            labels=["project", "class"],
        )
        for p, st in statuses.items():
            for key, value in st.items():
                if key.startswith("positives:"):
                    found.add_metric([str(p), key.split(":", 1)[1]], float(value))
        yield found
        yield from estimate_gauges({p: h["estimates"] for p, h in healths.items()})


ESTIMATE_GAUGES = {  # an unknown estimate (no positive yet, ...) is left out, never 0
    "total": ("rarelabel_rare_estimated_total", "Estimated rare items of the class in the pool"),
    "low": ("rarelabel_rare_estimated_low", "Lower end of the estimate's 90% interval"),
    "high": ("rarelabel_rare_estimated_high", "Upper end of the estimate's 90% interval"),
    "recall": ("rarelabel_rare_recall_estimate", "Found / estimated total"),
    "stop": ("rarelabel_stop_suggested", "1 when recall >= target with 95% confidence"),
    "verified": (
        "rarelabel_stop_verified",
        "1 when the audit's uniform sample alone shows recall >= target at 95%",
    ),
    "random_labels_to_verify": (
        "rarelabel_random_labels_to_verify",
        "Uniform audit labels more, all misses, that would verify the recall",
    ),
}
# the field whose presence says a gauge is known; the calibrated ones: "total"
KNOWN_BY = {
    "verified": "random_labels_to_verify",
    "random_labels_to_verify": "random_labels_to_verify",
}


def estimate_gauges(estimates: dict[int, dict]):
    """The calibrated numbers exist once `total` does; the sample test's once anything is
    found (`random_labels_to_verify`), calibrated or not."""
    for field, (name, help_text) in ESTIMATE_GAUGES.items():
        known = KNOWN_BY.get(field, "total")
        family = GaugeMetricFamily(name, help_text, labels=["project", "class"])
        for p, per_class in estimates.items():
            for t, e in per_class.items():
                if e.get(known) is not None:
                    family.add_metric([str(p), t], float(e[field]))
        yield family


def view_gauges(views: dict[int, dict]):
    """With view_choice: each view's contested picks and the rare items among them."""
    for field, name, help_text in (
        ("picks", "rarelabel_view_contested_picks", "Labelled tasks a view put in contested slots"),
        ("hits", "rarelabel_view_hits", "Rare items among a view's contested picks"),
    ):
        family = GaugeMetricFamily(name, help_text, labels=["project", "view"])
        for p, v in views.items():
            for view, value in zip(VIEWS, v[field], strict=True):
                family.add_metric([str(p), view], float(value))
        yield family


def render_metrics(store: Store) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry).decode()
