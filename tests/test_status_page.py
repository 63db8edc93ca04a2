"""The status page in a real browser (Debian's Chromium, driven by playwright): it renders,
says what is wrong, and its numbers are the ones /metrics gives."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from backend.settings import resolve
from backend.store import Store, connect
from tests.prom import metric
from tests.serve_harness import start_serve

LABEL_CONFIG = (Path(__file__).parents[1] / "label_config.xml").read_text()
REDIS_TEST_URL = "redis://127.0.0.1:6379/14"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def served(tmp_path):
    r = connect(REDIS_TEST_URL)
    r.flushdb()
    store = Store(r)
    proc, url = start_serve(
        {"REDIS_URL": REDIS_TEST_URL, "BASIC_AUTH_USER": None}, tmp_path / "serve.log"
    )
    try:
        yield store, url
    finally:
        proc.terminate()
        proc.wait(20)
        r.flushdb()


def test_the_status_page_shows_each_projects_health_as_metrics_count_it(served, tmp_path):
    from playwright.sync_api import sync_playwright

    store, url = served
    healthy, troubled = 3, 5
    for p in (healthy, troubled):
        extra = {"targets": ["Artist", "Company"], "audit_rate": 0.05 if p == healthy else 0}
        extra |= {"target_recall": 0.9} if p == healthy else {}
        store.save_config(resolve(p, LABEL_CONFIG, extra))
    now = time.time()
    good = {"last_retrain_at": now - 4, "last_predictions_written": 12, "pool_size": 3060}
    # as the worker stores them after a retrain (backend.estimates): one class estimated,
    # one with nothing to go on yet
    artist_est = {"found": 9, "total": 11.4, "low": 9.0, "high": 15.0, "recall": 0.789}
    artist_est |= {"recall_low": 0.6, "labels_to_next_find": 7.5, "stop": False, "reason": "r"}
    artist_est |= {"verified": False, "random_labels_to_verify": 1234}
    company_est = {"found": 0, "total": None, "low": None, "high": None, "recall": None}
    company_est |= {"recall_low": None, "labels_to_next_find": None, "stop": False}
    company_est["reason"] = "no positive labelled yet: nothing shows how the scores map to hits"
    estimates = json.dumps({"Artist": artist_est, "Company": company_est})
    store.set_status(
        healthy,
        labels_seen=41,
        audit_labels=4,
        reconciled_at=now - 10,
        estimates=estimates,
        **good,
        **{"positives:Artist": 9},
    )
    for n in range(30, 42):
        band = {"total": 11.0 + n / 100, "low": 9.0, "high": 15.0}
        point = {"Artist": 9 if n > 35 else 8, "Company": 0}
        store.add_curve_point(healthy, {"labels": n, "found": point, "estimate": {"Artist": band}})
    bad = {"last_error": "importing predictions: HTTP 503", "last_error_at": now - 5}
    store.set_status(troubled, last_retrain_at=now - 600, pool_size=200, labels_seen=7, **bad)
    store.set_aside(troubled, {"action": "ANNOTATION_CREATED"}, "KeyError: 'id'")
    store.record_event(troubled, {"action": "START_TRAINING"})

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 900, "height": 1100})
        page.goto(f"{url}/status")
        shot = tmp_path / "status.png"
        page.screenshot(path=str(shot), full_page=True)

        def field(p: int, name: str) -> str:
            return page.locator(f'#project-{p} [data-field="{name}"]').first.inner_text()

        def found(p: int, cls: str, name: str = "positives") -> str:
            return page.locator(
                f'#project-{p} [data-field="{name}"][data-class="{cls}"]'
            ).inner_text()

        estimated = found(healthy, "Artist", "estimated_total")
        company_unknown = found(healthy, "Company", "unknown")
        verify = {c: found(healthy, c, "verified") for c in ("Artist", "Company")}
        curve = page.locator(f"#project-{healthy} svg polyline[data-found='Artist']").count()
        band = page.locator(f"#project-{healthy} svg polygon[data-band='Artist']").count()

        shown = {
            p: {
                "state": field(p, "state"),
                "pool_size": field(p, "pool_size"),
                "labels_seen": field(p, "labels_seen"),
                "pending": field(p, "pending_events"),
                "aside": field(p, "set_aside"),
                "why": field(p, "why"),
                "Artist": found(p, "Artist"),
                "audit_rate": field(p, "audit_rate"),
                "audit_labels": field(p, "audit_labels"),
                "target_recall": field(p, "target_recall"),
            }
            for p in (healthy, troubled)
        }
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("RARELABEL_SCREENSHOT_DIR"):  # to look at it
        shutil.copy(shot, Path(os.environ["RARELABEL_SCREENSHOT_DIR"]) / "status.png")

    assert shown[healthy]["state"] == "healthy" and shown[troubled]["state"] == "failing"
    assert "HTTP 503" in shown[troubled]["why"]  # the reason, not just a colour
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for p in (healthy, troubled):
        labels = {"project": str(p)}
        assert float(shown[p]["pool_size"]) == metric(text, "rarelabel_pool_size", labels)
        assert float(shown[p]["labels_seen"]) == metric(text, "rarelabel_labels_seen", labels)
        assert float(shown[p]["aside"]) == metric(text, "rarelabel_events_set_aside", labels)
        assert float(shown[p]["pending"]) == len(store.pending_events(p))
    assert metric(text, "rarelabel_last_job_failed", {"project": str(troubled)}) == 1
    audited = {"project": str(healthy)}
    assert float(shown[healthy]["audit_labels"]) == metric(text, "rarelabel_audit_labels", audited)
    assert (shown[healthy]["audit_rate"], shown[troubled]["audit_rate"]) == ("0.05", "0")
    assert shown[troubled]["audit_labels"] == "0"
    assert (shown[healthy]["target_recall"], shown[troubled]["target_recall"]) == ("0.9", "0.95")
    assert metric(text, "rarelabel_audit_labels", {"project": str(troubled)}) is None
    artist = {"project": str(healthy), "class": "Artist"}
    assert float(shown[healthy]["Artist"]) == metric(text, "rarelabel_rare_positives_found", artist)
    assert shown[troubled]["Artist"] == "0"  # no positive yet: zero found, not a made-up number
    total, low, high = (
        metric(text, f"rarelabel_rare_estimated_{k}", artist) for k in ("total", "low", "high")
    )
    assert estimated == f"{total:.0f} [{low:.0f}–{high:.0f}]" == "11 [9–15]"
    company = {"project": str(healthy), "class": "Company"}
    assert metric(text, "rarelabel_rare_estimated_total", company) is None  # never a made-up 0
    assert company_unknown.startswith("unknown: no positive labelled yet")
    # the sample test: what verifying would cost, on the page as in /metrics
    more = metric(text, "rarelabel_random_labels_to_verify", artist)
    assert verify["Artist"].startswith(f"no: {more:.0f} random labels more") and more == 1234
    assert metric(text, "rarelabel_stop_verified", artist) == 0
    assert verify["Company"] == "-"
    assert metric(text, "rarelabel_random_labels_to_verify", company) is None
    assert curve == 1 and band == 1
