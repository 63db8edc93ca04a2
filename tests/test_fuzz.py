"""Property-based fuzzing of every endpoint: no body, however odd, gets a 5xx.

Bodies are drawn from the shapes the endpoints declare (backend.payloads) with any field
replaced by any JSON, plus arbitrary JSON and bytes; the app runs in process on the real
Redis. A body the app accepts must leave the store consistent: every recorded event is one
the worker can read back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import app as app_module
from backend.store import Store, connect

LABEL_CONFIG = (Path(__file__).parents[1] / "label_config.xml").read_text()
REDIS_TEST_URL = "redis://127.0.0.1:6379/13"
EXAMPLES = 150  # per endpoint; benchmarks/fuzz.py runs 10,000 and more

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20)
scalars |= st.floats(allow_nan=False) | st.sampled_from(["7", "7.17", "-1", "", "Artist"])
any_json = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ACTIONS = [
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATIONS_DELETED",
    "TASKS_CREATED",
    "TASKS_DELETED",
    "START_TRAINING",
    "PROJECT_UPDATED",
    "SOMETHING_ELSE",
]
REGION = {"type": "choices", "from_name": "label", "value": {"choices": ["Artist"]}}


def shaped(base: dict) -> st.SearchStrategy[dict]:
    """`base`, with any of its fields replaced by any JSON, dropped, or one added."""
    keys = list(base)
    return st.builds(
        lambda replace, drop, extra: {
            **{k: v for k, v in {**base, **replace}.items() if k not in drop},
            **extra,
        },
        st.dictionaries(st.sampled_from(keys), any_json, max_size=2),
        st.sets(st.sampled_from(keys), max_size=1),
        st.dictionaries(st.text(max_size=6), any_json, max_size=1),
    )


webhooks = st.sampled_from(ACTIONS).flatmap(
    lambda action: shaped(
        {
            "action": action,
            "project": {"id": 7, "label_config": LABEL_CONFIG, "sampling": "Sequential sampling"},
            "annotation": {
                "id": 1,
                "task": 2,
                "result": [REGION],
                "updated_at": "2026-12-01T10:00:00Z",
            },
            "annotations": [{"id": 1}],
            "task": {"id": 2, "data": {"text": "A painter."}},
            "tasks": [{"id": 2, "data": {"text": "A painter."}}],
        }
    )
)
setups = shaped(
    {"project": "7.17", "schema": LABEL_CONFIG, "extra_params": {"targets": ["Artist"]}}
)
predicts = shaped({"project": "7.17", "tasks": [{"id": 2, "data": {"text": "A painter."}}]})
trains = shaped({"project": {"id": 7}})
BODIES = {"/webhook": webhooks, "/setup": setups, "/predict": predicts, "/train": trains}


@pytest.fixture(scope="module")
def client() -> TestClient:
    mp = pytest.MonkeyPatch()
    mp.setenv("REDIS_URL", REDIS_TEST_URL)
    for var in ("BASIC_AUTH_USER", "LABEL_STUDIO_URL"):
        mp.delenv(var, raising=False)
    connect(REDIS_TEST_URL).flushdb()
    app_module._backend.cache_clear()
    yield TestClient(app_module.create_app(), raise_server_exceptions=False)
    connect(REDIS_TEST_URL).flushdb()
    app_module._backend.cache_clear()
    mp.undo()


def check(client: TestClient, path: str, content: bytes) -> None:
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, (path, content[:300], r.text[:300])
    if r.status_code >= 400:
        assert r.json()["error"], r.text  # a one-line reason, never an empty refusal
    store = Store(connect(REDIS_TEST_URL))
    for p in store.projects():
        store.pending_events(p)  # every recorded event reads back


@pytest.mark.parametrize("path", list(BODIES))
def test_no_declared_shape_gives_a_5xx(client, path):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(BODIES[path])
    def run(body):
        check(client, path, json.dumps(body).encode())

    run()


@pytest.mark.parametrize("path", list(BODIES))
def test_no_json_or_bytes_give_a_5xx(client, path):
    @settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=list(HealthCheck))
    @given(any_json.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64))
    def run(content):
        check(client, path, content)

    run()


@pytest.mark.parametrize("path", list(BODIES))
def test_deeply_nested_json_is_a_400(client, path):
    content = ("[" * 100_000 + "]" * 100_000).encode()
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    nested = '{"action": "ANNOTATION_CREATED", "project": ' + "[" * 5000 + "]" * 5000 + "}"
    r = client.post(path, content=nested.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    "path, body, word",
    [
        ("/webhook", {"action": "PROJECT_UPDATED", "project": 5}, None),  # accepted: 200
        (
            "/webhook",
            {
                "action": "ANNOTATION_CREATED",
                "project": {"id": 7},
                "annotation": {"id": 1, "task": 2, "result": ["Artist"]},
            },
            "result",
        ),
        ("/setup", {"project": "7.1", "schema": LABEL_CONFIG, "extra_params": [1]}, "extra_params"),
        ("/setup", {"project": "7.1", "schema": LABEL_CONFIG, "extra_params": 3}, "extra_params"),
        (
            "/setup",
            {"project": "7.1", "schema": LABEL_CONFIG, "extra_params": {"f_a": "NaN"}},
            "finite",
        ),
        ("/predict", {"project": "7.1", "tasks": [{"id": 1, "data": "a text"}]}, "data"),
    ],
)
def test_the_inputs_that_crashed_before_get_a_clear_answer(client, path, body, word):
    r = client.post(path, json=body)
    if word is None:
        assert r.status_code == 200
    else:
        assert r.status_code == 400 and word in r.json()["error"], r.text
