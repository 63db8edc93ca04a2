"""The worker cannot wedge and the store cannot be walked back: against the real Redis.

The faults that need Label Studio (kill -9, outages, lost webhooks) are in test_faults.py;
these are the ones whose truth Redis alone holds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.registry import ScheduledJobRegistry

from backend import app as app_module
from backend import embedder, jobs, locks, sweep, warm
from backend.embedder import embed_tasks
from backend.events import apply_event
from backend.queueing import EMBED_QUEUE, QUEUE
from backend.settings import ConfigError, resolve
from backend.store import Store, connect

LABEL_CONFIG = (Path(__file__).parents[1] / "label_config.xml").read_text()
REDIS_TEST_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def store(monkeypatch, tmp_path) -> Store:
    monkeypatch.setenv("REDIS_URL", REDIS_TEST_URL)
    monkeypatch.setenv("RARELABEL_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("RARE_TARGETS", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "LABEL_STUDIO_URL"):
        monkeypatch.delenv(var, raising=False)
    r = connect(REDIS_TEST_URL)
    r.flushdb()
    app_module._backend.cache_clear()
    warm.drop_states()
    yield Store(r)
    r.flushdb()
    app_module._backend.cache_clear()
    warm.drop_states()


def choice(label: str) -> list[dict]:
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


def annotation(ann_id: int, task: int, label: str, updated_at: str, action="ANNOTATION_CREATED"):
    return {
        "action": action,
        "annotation": {
            "id": ann_id,
            "task": task,
            "result": choice(label),
            "updated_at": updated_at,
        },
        "task": {"id": task, "data": {"text": f"text of task {task}"}},
    }


def synced_project(store: Store, project: int = 7) -> None:
    """A project the worker has met: settings stored, synced and reconciled just now."""
    store.save_config(resolve(project, LABEL_CONFIG, {"targets": ["Artist"]}))
    store.set_status(project, synced_at=time.time(), reconciled_at=time.time())


def test_a_late_older_event_never_overwrites_a_newer_label(store):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist"]})
    newer = annotation(1, 10, "Athlete", "2026-12-01T10:00:05.000Z", "ANNOTATION_UPDATED")
    older = annotation(1, 10, "Artist", "2026-12-01T10:00:01.000Z")
    assert apply_event(store, cfg, newer)
    assert not apply_event(store, cfg, older)  # the re-delivered create arrives last
    assert store.labels(7) == {10: "Athlete"}


def test_a_deleted_annotation_cannot_come_back(store):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist"]})
    apply_event(store, cfg, annotation(1, 10, "Artist", "2026-12-01T10:00:01Z"))
    apply_event(store, cfg, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1}]})
    late = annotation(1, 10, "Artist", "2026-12-01T10:00:09Z")  # even with a newer time
    assert not apply_event(store, cfg, late)
    assert store.labels(7) == {}


def test_deleted_tasks_leave_the_pool_and_every_record(store):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist"]})
    tasks = [{"id": i, "data": {"text": f"A village number {i}."}} for i in range(4)]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    store.set_pushed(7, {0: 0.1, 1: 0.2})
    before = store.pool_version(7)
    apply_event(store, cfg, {"action": "TASKS_DELETED", "tasks": [{"id": 0}, {"id": 3}]})
    assert store.pool_ids(7) == {1, 2} and store.task_count(7) == 2
    assert store.pushed(7) == {1: 0.2}  # no prediction is ever planned for task 0 again
    assert store.pool_version(7)[1] == before[1] + 1  # a removal: the warm state is rebuilt


def test_predict_never_adds_unconfirmed_tasks_to_the_pool(store):
    from model.stored import StoredModel

    client = TestClient(app_module.create_app())
    synced_project(store)
    store.save_model(7, StoredModel("rarelabel", ["Artist"], [[0.0] * 384], [0.0], ["cosine"]))
    body = {"project": "7.1", "tasks": [{"id": 999, "data": {"text": "A painter from Lyon."}}]}
    r = client.post("/predict", json=body)
    assert r.status_code == 200 and r.json()["results"][0]["result"]  # scored from the model
    assert store.pool_ids(7) == set()


def test_a_poison_event_is_set_aside_after_its_attempts_and_stops_blocking(store):
    synced_project(store)
    store.record_event(7, {"action": "ANNOTATION_CREATED", "annotation": {"task": 3}})  # no id
    for attempt in range(1, jobs.MAX_EVENT_ATTEMPTS):
        with pytest.raises(KeyError):  # raised: RQ retries the job with backoff
            jobs.process_project(7)
        assert len(store.pending_events(7)) == 1, attempt
    jobs.process_project(7)  # the last attempt sets it aside and goes on
    assert store.pending_events(7) == []
    (aside,) = store.set_aside_events(7)
    assert aside["action"] == "ANNOTATION_CREATED" and "KeyError" in aside["error"]


def test_a_job_finding_the_lock_taken_reschedules_itself_instead_of_waiting(store, monkeypatch):
    monkeypatch.setenv("RARELABEL_LOCK_SECONDS", "30")
    synced_project(store)
    held = store.r.lock(store.key(7, "lock"), timeout=30)
    assert held.acquire(blocking=False)
    t0 = time.monotonic()
    assert jobs.process_project(7) == {"deferred": True}
    assert time.monotonic() - t0 < 2  # the worker is free at once
    assert len(ScheduledJobRegistry(QUEUE, connection=store.r)) == 1


def test_a_dead_jobs_lock_expires_and_a_live_jobs_lock_is_renewed(store, monkeypatch):
    monkeypatch.setenv("RARELABEL_LOCK_SECONDS", "1")
    dead = store.r.lock(store.key(7, "lock"), timeout=1)
    assert dead.acquire(blocking=False)  # a killed job never releases it
    time.sleep(1.2)
    with locks.project_lock(store, 7) as held:
        assert held
        time.sleep(2.5)  # far past the lock's lifetime: the renewing thread keeps it
        assert store.r.exists(store.key(7, "lock"))
        with locks.project_lock(store, 7) as other:
            assert not other
    assert not store.r.exists(store.key(7, "lock"))


def test_a_retrain_owed_during_a_retrain_is_not_cleared_by_it(store):
    """An embedding chunk that finishes while a retrain runs marks the project again; the
    retrain, done, clears only the mark it served, so the new tasks get their ranking (the
    lost update that once left a pool ranked on 1,256 of its 2,000 tasks for good)."""
    store.mark_dirty(7)
    served = store.dirty_mark(7)  # the retrain starts
    store.mark_dirty(7)  # a chunk of the backlog lands meanwhile
    assert store.clear_dirty(7, served) is False and store.dirty(7)
    assert store.clear_dirty(7, store.dirty_mark(7)) is True and not store.dirty(7)


def test_the_sweep_gives_a_job_to_every_project_owing_work(store, monkeypatch):
    monkeypatch.setenv("RARELABEL_RECONCILE_SECONDS", "60")
    for p in (1, 2, 3, 4):
        synced_project(store, p)
    store.record_event(1, {"action": "START_TRAINING"})  # pending events
    store.mark_dirty(2)  # a retrain owed (the last push failed)
    store.set_status(3, reconciled_at=time.time() - 120)  # a reconciliation due
    assert sorted(sweep.sweep(store, force=True)) == [1, 2, 3]
    assert len(Queue(QUEUE, connection=store.r)) == 3
    assert sweep.sweep(store) == []  # another worker's sweep in the same interval: none


@pytest.mark.parametrize(
    "extra, word",
    [
        ({"f_a": float("nan")}, "finite"),
        ({"C": "inf"}, "finite"),
        ({"queue_size": 10**6}, "queue_size"),
        ({"targets": ["Artist"], "f_A": 3}, "f_A"),  # an unknown key is named
        ([1, 2], "JSON object"),
        (5, "JSON object"),
    ],
)
def test_every_setting_is_validated(extra, word):
    with pytest.raises(ConfigError, match=word):
        resolve(1, LABEL_CONFIG, extra)


VILLAGES = ["A village in Serbia.", "A hamlet in Poland.", "A painter from Lyon.",
            "A town in Bavaria.", "A sculptor of marble.", "An Estonian village.",
            "A parish in Latvia.", "A singer and songwriter."]  # fmt: skip


def rank_as_the_worker_does(store: Store, cfg) -> list[int]:
    """The fit-and-queue half of a retrain (the push needs Label Studio: test_faults.py)."""
    from model.labels import LabelState

    state = warm.project_state(store, cfg)
    pool = state.refresh(store)
    labels = LabelState(cfg.targets)
    for task, label in store.labels(cfg.project_id).items():
        labels.set_label(task, label)
    prio = state.prioritiser_for()
    prio.fit(pool, labels, state.rarity_for(labels), state.index_for(cfg.ranker))
    return [pool.ids[r] for r in prio.queue(cfg.queue_size).rows]


@pytest.mark.parametrize(
    "change",
    [
        {"descriptions": {"Artist": "a painter or sculptor"}},
        {"lexical_dims": 0},
        {"lexical_dims": 8},
        {"f_a": 5},
        {"targets": ["Artist", "Village"]},
        {"seals_above": 0},
        {"strategy": "adaptive"},
    ],
)
def test_every_settings_change_gets_a_fresh_warm_state_that_ranks(store, change):
    base = {"targets": ["Artist"], "lexical_dims": 16}
    cfg = resolve(7, LABEL_CONFIG, base)
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(VILLAGES)]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    apply_event(store, cfg, annotation(1, 2, "Artist", "2026-12-01T10:00:00Z"))
    first = warm.project_state(store, cfg)
    assert len(rank_as_the_worker_does(store, cfg)) == 7  # every unlabelled task of 8
    changed = resolve(7, LABEL_CONFIG, {**base, **change})
    state = warm.project_state(store, changed)
    assert state is not first  # dropped whole: nothing of the old settings survives
    more = [{"id": 100 + i, "data": {"text": f"{t} Again."}} for i, t in enumerate(VILLAGES)]
    apply_event(store, changed, {"action": "TASKS_CREATED", "tasks": more})  # an import after
    queue = rank_as_the_worker_does(store, changed)
    assert len(queue) == 15 and 2 not in queue
    prio = warm.project_state(store, changed).prioritiser_for()
    assert prio.targets == changed.targets
    assert all(len(v) == state.refresh(store).X.shape[1] for v in prio.prototypes.values())
    if "descriptions" in change:  # the prototype is the description's, not the bare name's
        old = first.prioritiser_for().prototypes["Artist"]
        assert not np.allclose(prio.prototypes["Artist"][:384], old[:384])


def test_a_multi_label_annotation_counts_every_known_choice(store, caplog):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist", "Athlete"]})
    event = annotation(1, 10, "Artist", "2026-12-01T10:00:00Z")
    event["annotation"]["result"][0]["value"]["choices"] = ["Athlete", "Spaceship", "Artist"]
    assert apply_event(store, cfg, event)
    assert store.labels(7) == {10: frozenset({"Artist", "Athlete"})}
    assert "Spaceship" in caplog.text  # the unknown choice is logged, the others count


def test_the_web_process_loads_neither_the_worker_nor_the_embedding_model():
    import subprocess
    import sys

    code = (
        "import sys, backend.app; "
        "print([m for m in ('backend.jobs', 'backend.warm', 'backend.retrain', "
        "'sentence_transformers', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_deleted_tasks_annotations_go_with_it(store):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist"]})
    apply_event(store, cfg, annotation(1, 10, "Artist", "2026-12-01T10:00:00Z"))
    apply_event(store, cfg, annotation(2, 11, "Artist", "2026-12-01T10:00:00Z"))
    apply_event(store, cfg, {"action": "TASKS_DELETED", "tasks": [{"id": 10}]})
    assert store.labels(7) == {11: "Artist"}
    assert not apply_event(store, cfg, annotation(1, 10, "Artist", "2026-12-01T10:00:09Z"))


def test_with_redis_away_a_webhook_is_a_503_that_says_so(monkeypatch):
    from tests.ls_harness import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    monkeypatch.delenv("BASIC_AUTH_USER", raising=False)
    app_module._backend.cache_clear()
    try:
        client = TestClient(app_module.create_app(), raise_server_exceptions=False)
        event = annotation(1, 10, "Artist", "2026-12-01T10:00:00Z")
        r = client.post("/webhook", json={**event, "project": {"id": 7}})
        assert r.status_code == 503 and "Redis" in r.json()["error"]
        assert client.get("/health").status_code == 503
    finally:
        app_module._backend.cache_clear()


def test_a_project_failing_before_its_first_retrain_is_failing_on_metrics_too(store):
    from backend.metrics import render_metrics
    from tests.prom import metric

    synced_project(store)
    store.set_status(7, last_error="cannot reach Label Studio", last_error_at=time.time())
    text = render_metrics(store)
    assert metric(text, "rarelabel_last_job_failed", {"project": "7"}) == 1


def project_with_backlog(store: Store, n: int, project: int = 7):
    """A synced project whose `n` tasks all wait in the backlog, as after a big import."""
    cfg = resolve(project, LABEL_CONFIG, {"targets": ["Artist"]})
    store.save_config(cfg)
    store.set_status(project, synced_at=time.time(), reconciled_at=time.time())
    tasks = [
        {"id": i, "data": {"text": f"Village {i} lies on a river in Poland."}} for i in range(n)
    ]
    embed_tasks(store, cfg, tasks, at_most=0)
    assert store.backlog_size(project) == n and not store.pool_ids(project)
    return cfg


def test_embedding_jobs_on_two_workers_embed_every_task_once(store):
    project_with_backlog(store, 2 * embedder.CHUNK + 150)
    assert embedder.fan_out(store, 7) == 3  # one job per chunk, on the embedding queue
    assert len(Queue(EMBED_QUEUE, connection=store.r)) == 3
    assert embedder.fan_out(store, 7) == 0  # not twice while they are queued
    done: list[int] = []
    workers = [threading.Thread(target=lambda: done.append(embedder.embed_chunk(7))) for _ in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.append(embedder.embed_chunk(7))  # the third job
    assert sorted(done) == [150, embedder.CHUNK, embedder.CHUNK]  # no task taken twice
    assert store.pool_ids(7) == set(range(2 * embedder.CHUNK + 150))
    assert store.backlog_size(7) == 0 and store.dirty(7)  # and a retrain is owed
    assert len(Queue(QUEUE, connection=store.r)) == 1  # one project job, for three chunks


def test_tasks_a_killed_embedding_job_held_are_embedded_by_the_next(store, monkeypatch):
    monkeypatch.setenv("RARELABEL_LOCK_SECONDS", "1")
    project_with_backlog(store, 80)
    held = store.take_backlog(7, 50, lease=1)  # a job takes these, then is killed -9
    assert len(held) == 50 and store.backlog_size(7) == 80  # still counted as waiting
    assert embedder.embed_chunk(7) == 30  # the dead job's claim is still fresh
    time.sleep(1.2)
    assert embedder.embed_chunk(7) == 50  # now it has lapsed: nothing is lost
    assert store.pool_ids(7) == set(range(80)) and store.backlog_size(7) == 0


def test_a_task_deleted_while_it_is_embedded_stays_out_of_the_pool(store):
    cfg = project_with_backlog(store, 5)
    ids = store.take_backlog(7, 5, lease=30)
    apply_event(store, cfg, {"action": "TASKS_DELETED", "tasks": [{"id": 2}]})
    vectors = {t: np.ones(384, np.float32) / np.sqrt(384) for t in ids}
    store.release_claims(7, ids, vectors)  # the job finishes after the deletion
    assert store.pool_ids(7) == {0, 1, 3, 4} and store.backlog_size(7) == 0
