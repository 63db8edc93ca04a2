"""Prometheus text exposition, written by hand: a handful of gauges needs no client library."""

from __future__ import annotations

from rq import Queue

from backend.store import Store

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
    "last_import_tasks": ("rarelabel_import_tasks", "Tasks in the last import"),
    "last_import_likely_rare": ("rarelabel_import_likely_rare", "Last import: likely rare"),
    "last_import_likely_common": ("rarelabel_import_likely_common", "Last import: likely common"),
}


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(store: Store) -> str:
    from backend.jobs import QUEUE

    lines = [
        "# HELP rarelabel_queue_depth Work waiting: recorded events and queued jobs",
        "# TYPE rarelabel_queue_depth gauge",
        f'rarelabel_queue_depth{{kind="events"}} {store.queued_events()}',
        f'rarelabel_queue_depth{{kind="jobs"}} {len(Queue(QUEUE, connection=store.r))}',
    ]
    statuses = {p: store.status(p) for p in store.projects()}
    for field, (name, help_text) in GAUGES.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for p, st in statuses.items():
            if field in st:
                lines.append(f'{name}{{project="{p}"}} {float(st[field])}')
    name = "rarelabel_rare_positives_found"
    lines += [f"# HELP {name} Human-labelled positives per rare class", f"# TYPE {name} gauge"]
    for p, st in statuses.items():
        for key, value in st.items():
            if key.startswith("positives:"):
                cls = _label_value(key.split(":", 1)[1])
                lines.append(f'{name}{{project="{p}",class="{cls}"}} {float(value)}')
    return "\n".join(lines) + "\n"
