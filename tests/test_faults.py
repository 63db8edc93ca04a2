"""Faults, end to end: the backend converges to Label Studio's state after each one.

A real Label Studio (one for the module), and per test a private Redis, `rarelabel serve` and
`rarelabel worker` (tests/stack.py) with fast intervals (sweep 2 s, reconciliation 10 s, job
lock 10 s) and a queue of 30, on a project of 300 short dbpedia14 texts with one target,
Athlete, at 4%. Each test breaks one thing, then asserts convergence within a bound
(a TimeoutError names what never came, with the backend's state and log tails; a backend
process that exits while it should run fails the wait at once) and prints the time it took
(`pytest -s`). The logs stay in each test's tmp dir (serve.log, worker.log, redis.log;
label-studio.log in the module's); pytest keeps the last 3 runs' dirs, `--basetemp DIR` keeps
one elsewhere.
"""

from __future__ import annotations

import re
import time

import pytest

from backend import labelstudio as ls
from tests.ls_harness import start_label_studio
from tests.stack import (
    Stack,
    baseline_annotation_to_push,
    dataset,
    fault_head_deleted,
    fault_label_studio_restart,
    fault_labelled_task_deleted,
    fault_lost_webhooks,
    fault_redis_restart,
    fault_task_deleted_while_web_down,
    fault_worker_kill,
)

pytestmark = pytest.mark.e2e  # redis-server: .ci/run installs it when absent

BOUND = 60.0  # seconds from a fault's end to convergence
REDIS_BOUND = 90.0
AUTH_BOUND = 30.0  # less than the reconciliation interval of that test: webhooks must work
N_SEEDS = 3
N_SERVED = 20  # tasks served after a Redis restart that must all be in the current queue


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    studio = start_label_studio(tmp_path_factory.mktemp("faults-ls"))
    yield studio
    studio.stop()


@pytest.fixture
def stack(studio, tmp_path, request):
    """A Redis, serve and worker for one test; ``@pytest.mark.parametrize("stack", [{...}],
    indirect=True)`` passes Stack keyword arguments (aof, env, intervals)."""
    with Stack(studio, tmp_path, **getattr(request, "param", {})) as st:
        print(f"\n[faults] logs in {tmp_path}", flush=True)
        yield st


def seed(st: Stack, p, n: int = N_SEEDS) -> None:
    """The annotator labels ``n`` tasks; returns once the backend has retrained on them, so
    each fault starts from a quiet stack."""
    for _ in range(n):
        st.label_next(p)
    t0 = p.annotated_at
    truth = st.ls_labels(p)
    st.wait(lambda: st.converged(p, truth, t0), BOUND, "the retrain on the seeds", p=p, truth=truth)


def test_worker_killed_during_a_job(stack):
    p = stack.create_project("fault: worker kill -9", dataset())
    seed(stack, p)
    recovery = fault_worker_kill(stack, p, BOUND)
    print(recovery)


def test_label_studio_restarted_before_the_push(stack):
    p = stack.create_project("fault: Label Studio restart", dataset())
    seed(stack, p)
    recovery, restarted_at = fault_label_studio_restart(stack, p, BOUND)
    print(recovery)
    assert float(stack.status(p)["last_retrain_at"]) > restarted_at
    preds = stack.ls_predictions(p)
    pushed = stack.store.pushed(p.id)
    assert all(any(v == "rarelabel" for v, _ in preds.get(t, [])) for t in pushed)


def serve_and_check_queue(st: Stack, p, n: int) -> None:
    """The annotator takes ``n`` tasks from Label Studio (answering each truthfully); every
    one must be in the backend's queue, read just before the task was asked for or within
    5 s after it (a retrain may be between its Label Studio write and its Redis write)."""
    outside = []
    for _ in range(n):
        before = st.store.pushed(p.id)
        task = ls.next_task(st.client, p.id)
        assert task is not None, "Label Studio ran out of tasks"
        task_id = int(task["id"])
        if task_id not in before:
            try:
                queued = lambda t=task_id: t in st.store.pushed(p.id)  # noqa: E731
                st.wait(queued, 5, f"task {task_id} queued")
            except TimeoutError:
                outside.append((task_id, st.ls_predictions(p).get(task_id)))
        st.annotate(p, task_id)
        time.sleep(0.5)
    assert not outside, (
        f"Label Studio served tasks outside the backend's queue (task, its predictions): "
        f"{outside}; stale predictions now: {st.stale_predictions(p)}\n{st.describe(p)}"
    )


@pytest.mark.parametrize(
    "stack", [{"aof": False}, {"aof": True}], indirect=True, ids=["no-aof", "aof"]
)
def test_redis_restarted(stack):
    p = stack.create_project(f"fault: Redis restart, AOF {stack.redis.appendonly}", dataset())
    seed(stack, p)
    recovery = fault_redis_restart(stack, p, REDIS_BOUND)
    print(recovery)
    cfg = stack.store.config(p.id)
    assert cfg.targets == ["Athlete"] and cfg.extra["targets"] == ["Athlete"]
    print(
        f"[faults] stale predictions in Label Studio after recovery: "
        f"{len(stack.stale_predictions(p))}"
    )
    serve_and_check_queue(stack, p, N_SERVED)


@pytest.mark.parametrize("stack", [{"aof": True}], indirect=True, ids=["aof"])
def test_redis_restarted_during_a_job(stack):
    """Redis goes away for 10 s while a job runs: the worker must ride it out (reconnect), not
    exit, and catch up with what happened meanwhile."""
    p = stack.create_project("fault: Redis down during a job", dataset())
    seed(stack, p)
    recovery = fault_redis_restart(stack, p, REDIS_BOUND, outage=10.0, during_job=True)
    print(recovery)
    assert not stack.backend.died()


def test_tasks_deleted(stack):
    p = stack.create_project("fault: tasks deleted", dataset())
    seed(stack, p)
    recovery, head = fault_head_deleted(stack, p, BOUND)
    print(recovery)
    assert not set(head) & stack.store.pool_ids(p.id)
    assert not set(head) & set(stack.store.pushed(p.id))

    error_at = stack.status(p).get("last_error_at")
    recovery, task = fault_task_deleted_while_web_down(stack, p, BOUND)
    print(recovery)
    recovery, labelled = fault_labelled_task_deleted(stack, p, BOUND)
    print(recovery)
    seconds = baseline_annotation_to_push(stack, p, BOUND)  # and the stack still retrains
    print(f"[faults] next retrain pushed {seconds:.1f} s after an annotation")
    assert stack.status(p).get("last_error_at") == error_at, stack.status(p).get("last_error")
    assert not {task, labelled} & stack.store.pool_ids(p.id)


def test_lost_webhooks(stack):
    p = stack.create_project("fault: lost webhooks", dataset())
    seed(stack, p)
    recovery = fault_lost_webhooks(stack, p, BOUND)
    print(recovery)
    assert stack.store.labels(p.id) == stack.ls_labels(p)


AUTH = ("rarelabel-ls", "s3cret-pass")


@pytest.mark.parametrize(
    "stack",
    [
        {
            "env": {
                "BASIC_AUTH_USER": AUTH[0],
                "BASIC_AUTH_PASS": AUTH[1],
                "RARELABEL_RECONCILE_SECONDS": "600",
            }
        }
    ],
    indirect=True,
    ids=["basic-auth"],
)
def test_basic_auth(stack):
    p = stack.create_project("fault: basic auth", dataset(), basic_auth=AUTH)
    backend = stack.backend
    assert backend.request("GET", "/health", auth=False).status_code == 200
    setup = {"project": f"{p.id}.0", "schema": "<View/>", "extra_params": {}}
    webhook = {"action": "START_TRAINING", "project": {"id": p.id}}
    assert backend.request("POST", "/setup", auth=False, json=setup).status_code == 401
    assert backend.request("POST", "/webhook", auth=False, json=webhook).status_code == 401
    predict = {"tasks": [{"id": 1, "data": {"text": "x"}}], "project": f"{p.id}.0"}
    assert backend.request("POST", "/predict", auth=False, json=predict).status_code == 401
    assert backend.request("GET", "/metrics", auth=False).status_code == 401
    wrong = backend.request("GET", "/metrics", auth=False, headers={"Authorization": "Basic eDp5"})
    assert wrong.status_code == 401

    for _ in range(2):
        stack.label_next(p)
    t0 = p.annotated_at
    truth = stack.ls_labels(p)
    hooks = [
        (h.get("url"), sorted(h.get("headers") or {}))
        for h in stack.ls_get("webhooks")
        if h.get("project") == p.id
    ]
    what = (
        "annotations through the authenticated webhook (Label Studio's webhooks of the "
        f"project, url and header names: {hooks})"
    )
    done = stack.wait(lambda: stack.labels_match(p, truth), AUTH_BOUND, what, p=p, truth=truth)
    print(
        f"[recovery] basic auth: annotations reached the backend {done - t0:.1f} s after "
        f"the last one"
    )
    metrics = backend.request("GET", "/metrics")
    assert metrics.status_code == 200
    stack.wait(lambda: stack.retrained_after(p, t0, len(truth)), BOUND, "the retrain", p=p)
    seen = re.search(
        rf'^rarelabel_labels_seen\{{project="{p.id}"\}} (\S+)$',
        backend.request("GET", "/metrics").text,
        re.MULTILINE,
    )
    assert seen and float(seen.group(1)) == len(truth)


def late_created(st: Stack, p, annotation: dict, task: dict) -> dict:
    """An ANNOTATION_CREATED webhook as Label Studio builds it, from the annotation and task
    as Label Studio served them at the time."""
    return {
        "action": "ANNOTATION_CREATED",
        "project": {"id": p.id, "title": f"project {p.id}"},
        "annotation": annotation,
        "task": {"id": task["id"], "data": task["data"], "project": p.id},
    }


def applied(st: Stack, p) -> bool:
    """No event waits and no job runs for the project."""
    return not st.store.pending_events(p.id) and not st.job_running(p)


def test_late_duplicate_webhooks(stack):
    p = stack.create_project("fault: late duplicates", dataset())
    seed(stack, p)
    # an annotation, then its update; the first version's webhook arrives again, late
    task_a, ann_a = stack.label_next(p, label="Other")
    old_a = stack.ls_get(f"annotations/{ann_a}/")
    data_a = stack.ls_get(f"tasks/{task_a}/")
    stack.wait(lambda: stack.store.labels(p.id).get(task_a) == "Other", BOUND, "label A", p=p)
    new_label = p.truth[task_a]  # the annotator corrects a mistake
    stack.update_annotation(p, ann_a, new_label)
    assert stack.ls_get(f"annotations/{ann_a}/")["updated_at"] != old_a["updated_at"]
    stack.wait(lambda: stack.store.labels(p.id).get(task_a) == new_label, BOUND, "A updated", p=p)
    late = stack.backend.request("POST", "/webhook", json=late_created(stack, p, old_a, data_a))
    assert late.status_code < 300, late.text
    stack.wait(lambda: applied(stack, p), BOUND, "the late duplicate to be handled", p=p)
    time.sleep(1.0)
    assert stack.store.labels(p.id).get(task_a) == new_label, (
        f"a late ANNOTATION_CREATED (updated_at {old_a['updated_at']}) overwrote the update\n"
        f"{stack.describe(p)}"
    )

    # an annotation, then its deletion; its creation's webhook arrives again, late
    task_b, ann_b = stack.label_next(p)
    old_b = stack.ls_get(f"annotations/{ann_b}/")
    data_b = stack.ls_get(f"tasks/{task_b}/")
    stack.wait(lambda: task_b in stack.store.labels(p.id), BOUND, "label B", p=p)
    stack.delete_annotation(p, ann_b)
    stack.wait(lambda: task_b not in stack.store.labels(p.id), BOUND, "B deleted", p=p)
    late = stack.backend.request("POST", "/webhook", json=late_created(stack, p, old_b, data_b))
    assert late.status_code < 300, late.text
    posted_at = time.time()
    stack.wait(lambda: applied(stack, p), BOUND, "the late creation to be handled", p=p)
    time.sleep(1.0)
    assert task_b not in stack.store.labels(p.id), (
        f"a late ANNOTATION_CREATED brought back deleted annotation {ann_b}\n{stack.describe(p)}"
    )

    # and a reconciliation pass after both agrees
    truth = stack.ls_labels(p)
    stack.wait(
        lambda: float(stack.status(p).get("reconciled_at") or 0) > posted_at + 1,
        BOUND,
        "a reconciliation after the late webhooks",
        p=p,
    )
    assert stack.store.labels(p.id) == truth, stack.describe(p, truth)
