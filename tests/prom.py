"""Reading `/metrics` in tests: samples by name and labels, in any label order."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric(text: str, name: str, labels: dict[str, str]) -> float | None:
    """One sample of a Prometheus exposition, or None when it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None
