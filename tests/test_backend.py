"""The web app and the worker's event handling, against the real Redis (an isolated DB)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rq import Queue

from backend import app as app_module
from backend import jobs, warm
from backend import labelstudio as ls
from backend.embedder import embed_tasks
from backend.events import apply_event, is_noop, needs_configuring
from backend.imports import screen_import
from backend.queueing import QUEUE
from backend.settings import (
    PROJECT_SETTINGS,
    RANKER_SETTINGS,
    ConfigError,
    ProjectConfig,
    parse_label_config,
    resolve,
)
from backend.store import Store, connect
from backend.warm import project_state
from model.prioritiser import LARGE_POOL, RankerConfig
from model.stored import StoredModel
from tests.prom import metric

LABEL_CONFIG = (Path(__file__).parents[1] / "label_config.xml").read_text()
REDIS_TEST_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def store(monkeypatch, tmp_path) -> Store:
    monkeypatch.setenv("REDIS_URL", REDIS_TEST_URL)
    monkeypatch.setenv("RARELABEL_CACHE_DIR", str(tmp_path / "cache"))  # saved indexes
    for var in ("RARE_TARGETS", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "LABEL_STUDIO_URL"):
        monkeypatch.delenv(var, raising=False)
    r = connect(REDIS_TEST_URL)
    r.flushdb()
    app_module._backend.cache_clear()
    warm.drop_states()  # a worker's in-memory pools and fits belong to one test
    yield Store(r)
    r.flushdb()
    app_module._backend.cache_clear()
    warm.drop_states()


@pytest.fixture
def client(store) -> TestClient:
    return TestClient(app_module.create_app())


def annotation_event(ann_id: int, task_id: int, label: str | None, **extra) -> dict:
    result = [] if label is None else ls.choices_result(label, "label", "text")
    return {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 7},
        "annotation": {"id": ann_id, "task": task_id, "result": result, **extra},
        "task": {"id": task_id, "data": {"text": f"text of task {task_id}"}},
    }


def jobs_queued(store: Store) -> int:
    return len(Queue(QUEUE, connection=store.r))


def test_label_config_is_found_and_targets_default_to_all_but_other():
    label = parse_label_config(LABEL_CONFIG)
    assert (label.from_name, label.to_name, label.text_key) == ("label", "text", "text")
    cfg = resolve(1, LABEL_CONFIG)
    assert "Company" in cfg.targets and "Other" in label.choices and "Other" not in cfg.targets


def test_targets_come_from_extra_params_over_environment(monkeypatch):
    monkeypatch.setenv("RARE_TARGETS", "Artist,Athlete")
    assert resolve(1, LABEL_CONFIG).targets == ["Artist", "Athlete"]
    cfg = resolve(1, LABEL_CONFIG, '{"targets": ["Company"], "f_a": 20, "strategy": "margin"}')
    assert (cfg.targets, cfg.ranker.f_a, cfg.ranker.strategy) == (["Company"], 20.0, "margin")


def test_seals_is_on_from_a_pool_size_that_can_be_set_or_turned_off(monkeypatch):
    default = resolve(1, LABEL_CONFIG).ranker
    assert not default.needs_index(LARGE_POOL - 1) and default.needs_index(LARGE_POOL)
    assert resolve(1, LABEL_CONFIG, {"seals_above": 0}).ranker.needs_index(10)
    monkeypatch.setenv("RARELABEL_SEALS_ABOVE", "5000")
    config = resolve(1, LABEL_CONFIG).ranker
    assert not config.needs_index(4999) and config.needs_index(5000)
    off = resolve(1, LABEL_CONFIG, {"seals_above": "off"}).ranker
    assert off.seals_above is None and not off.needs_index(10**7)


@pytest.mark.parametrize(
    "extra, word",
    [
        ({"targets": ["Spaceship"]}, "Spaceship"),
        ({"strategy": "psychic"}, "psychic"),
        ({"queue_size": 0}, "queue_size"),
        ({"audit_rate": 1.5}, "audit_rate"),
        ({"audit_uniform_share": 0}, "audit_uniform_share"),
        ({"audit_rate": "often"}, "numeric"),
        ({"target_recall": 1.0}, "target_recall"),
        ({"target_recall": 0.3}, "target_recall"),
        ({"lexical_dims": -1}, "lexical_dims"),
        ({"seals_above": -1}, "seals_above"),
        ({"seals_above": "lots"}, "numeric"),
        ({"view_choice": "maybe"}, "view_choice"),
        ("{not json", "JSON"),
    ],
)
def test_bad_settings_are_named(extra, word):
    with pytest.raises(ConfigError, match=word):
        resolve(1, LABEL_CONFIG, extra)


OTHER_VALUES = {  # a valid value other than the default for each of the ranker's settings
    "strategy": "margin",
    "uncertainty": "information_density",
    "f_a": "20",
    "C": "3",
    "outlier_prior": "0.5",
    "lexical_dims": "16",
    "seals_above": "5000",
    "view_choice": "on",
}


def test_the_ranker_settings_default_to_the_rankers_own_defaults():
    assert set(OTHER_VALUES) == set(RANKER_SETTINGS)
    assert resolve(1, LABEL_CONFIG).ranker == RankerConfig()


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_each_ranker_setting_is_read_from_its_variable_and_extra_params_win(monkeypatch, name):
    setting = PROJECT_SETTINGS[name]
    value = setting.parse(OTHER_VALUES[name])
    assert value != getattr(RankerConfig(), name)
    monkeypatch.setenv(setting.env, OTHER_VALUES[name])
    assert getattr(resolve(1, LABEL_CONFIG).ranker, name) == value
    default = getattr(RankerConfig(), name)
    assert getattr(resolve(1, LABEL_CONFIG, {name: default}).ranker, name) == default


def test_a_config_stored_before_the_ranker_was_held_whole_still_loads():
    """The layout in Redis: the ranker's settings beside the others (also what is written)."""
    stored = json.dumps(
        {
            "project_id": 7,
            "label": {
                "from_name": "label",
                "to_name": "text",
                "text_key": "text",
                "choices": ["Artist", "Other"],
            },
            "targets": ["Artist"],
            "descriptions": {},
            "f_a": 20.0,
            "strategy": "positive",
            "uncertainty": "margin",
            "outlier_prior": 0.05,
            "queue_size": 50,
            "C": 10.0,
            "lexical_dims": 384,
            "seals_above": None,
            "model_version": "rarelabel",
            "hostname": None,
            "access_token": None,
            "extra": {"f_a": 20},
        }
    )
    cfg = ProjectConfig.from_json(stored)
    assert (cfg.ranker.f_a, cfg.ranker.seals_above, cfg.queue_size) == (20.0, None, 50)
    assert cfg.audit_rate == 0.0  # settings added since: their defaults
    assert cfg.target_recall == 0.95
    added = {"audit_rate": 0.0, "audit_uniform_share": 0.5, "target_recall": 0.95,
             "view_choice": False}  # fmt: skip
    assert json.loads(cfg.to_json()) == {**json.loads(stored), **added}


def test_the_audit_settings_keep_the_warm_state():
    """They change what the estimates read, not the ranking: the fingerprint stays."""
    extra = {"target_recall": 0.8, "audit_rate": 1, "audit_uniform_share": 1}
    phase = resolve(1, LABEL_CONFIG, extra)
    assert (phase.target_recall, phase.audit_rate, phase.audit_uniform_share) == (0.8, 1, 1)
    assert phase.fingerprint() == resolve(1, LABEL_CONFIG).fingerprint()


@pytest.mark.parametrize("key", ["neighbours", "augment", "pseudo_source", "thompson", "f_A"])
def test_an_unknown_or_removed_extra_param_is_a_400_that_names_it(client, store, key):
    r = client.post(
        "/setup", json={"project": "7.1", "schema": LABEL_CONFIG, "extra_params": {key: 1}}
    )
    assert r.status_code == 400 and key in r.json()["error"] and "f_a" in r.json()["error"]
    assert store.config(7) is None


def test_config_without_choices_on_text_is_refused():
    with pytest.raises(ConfigError, match="Choices"):
        parse_label_config('<View><Text name="t" value="$t"/></View>')


def test_health_answers(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "UP"


def test_setup_stores_settings_and_schedules_first_contact(client, store):
    r = client.post(
        "/setup",
        json={
            "project": "7.1700000000",
            "schema": LABEL_CONFIG,
            "extra_params": {"targets": ["Artist"]},
        },
    )
    assert r.status_code == 200 and r.json()["model_version"] == "rarelabel"
    assert store.config(7).targets == ["Artist"]
    assert [e["action"] for e in store.pending_events(7)] == ["SETUP"]
    assert jobs_queued(store) == 1
    # the same setup again changes nothing and queues nothing
    client.post(
        "/setup",
        json={
            "project": "7.1700000000",
            "schema": LABEL_CONFIG,
            "extra_params": {"targets": ["Artist"]},
        },
    )
    assert len(store.pending_events(7)) == 1 and jobs_queued(store) == 1


def test_setup_with_unknown_target_is_a_400_with_the_reason(client, store):
    r = client.post(
        "/setup",
        json={"project": "7.1", "schema": LABEL_CONFIG, "extra_params": {"targets": ["Spaceship"]}},
    )
    assert r.status_code == 400 and "Spaceship" in r.json()["error"]
    assert store.config(7) is None


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"project": {"id": 7}}',  # no action
        b'{"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 2}}',  # no project
        b'{"action": "ANNOTATION_CREATED", "project": {"id": 7}}',  # no annotation
        b'{"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"id": 1}}',
        b'{"action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": 3}',
        b'{"action": "TASKS_CREATED", "project": {"id": 7}, "tasks": [{"data": {}}]}',
    ],
)
def test_malformed_webhooks_get_400_and_change_nothing(client, store, body):
    r = client.post("/webhook", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]
    assert store.r.dbsize() == 0


def test_unknown_action_is_ignored(client, store):
    r = client.post("/webhook", json={"action": "LABEL_LINK_CREATED", "project": {"id": 7}})
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert store.r.dbsize() == 0


def test_a_burst_of_annotations_queues_one_job(client, store):
    for i in range(10):
        r = client.post("/webhook", json=annotation_event(100 + i, i, "Artist"))
        assert r.status_code == 200
    assert len(store.pending_events(7)) == 10
    assert jobs_queued(store) == 1
    store.unschedule(7)  # a job has started: the next event queues exactly one more
    client.post("/webhook", json=annotation_event(200, 50, "Artist"))
    client.post("/webhook", json=annotation_event(201, 51, "Artist"))
    assert jobs_queued(store) == 2


def test_events_move_labels_and_a_skip_is_not_a_label(store):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist", "Athlete"]})
    events = [
        annotation_event(1, 10, "Artist"),
        annotation_event(2, 11, "Village"),
        annotation_event(3, 12, "Athlete", was_cancelled=True),
        {**annotation_event(1, 10, "Athlete"), "action": "ANNOTATION_UPDATED"},
        {"action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": [{"id": 2}]},
        annotation_event(4, 13, "NotAChoice"),
    ]
    for e in events:
        apply_event(store, cfg, e)
    assert store.labels(7) == {10: "Athlete"}
    assert store.pool_size(7) == 4  # every task's text was embedded once
    assert store.has_vectors(7, [10, 11, 12, 13]) == {10, 11, 12, 13}


def test_tasks_without_the_text_field_are_skipped(store):
    cfg = resolve(7, LABEL_CONFIG)
    tasks = [{"id": 1, "data": {"text": "A village in Serbia."}}, {"id": 2, "data": {"url": "x"}}]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    assert store.pool_size(7) == 1 and store.has_vectors(7, [1, 2]) == {1}


def test_metrics_are_prometheus_text(client, store):
    client.post("/webhook", json=annotation_event(1, 1, "Artist"))
    store.save_config(resolve(7, LABEL_CONFIG))
    store.set_status(7, labels_seen=3, **{"positives:Artist": 2})
    text = client.get("/metrics").text
    assert metric(text, "rarelabel_queue_depth", {"kind": "events"}) == 1
    assert metric(text, "rarelabel_labels_seen", {"project": "7"}) == 3
    assert metric(text, "rarelabel_rare_positives_found", {"project": "7", "class": "Artist"}) == 2


def test_basic_auth_when_configured(client, monkeypatch):
    monkeypatch.setenv("BASIC_AUTH_USER", "ls")
    monkeypatch.setenv("BASIC_AUTH_PASS", "s3cret")
    assert client.get("/health").status_code == 200  # Label Studio's connection check
    good = base64.b64encode(b"ls:s3cret").decode()
    bad = base64.b64encode(b"ls:wrong").decode()
    body = {"project": "7.1", "schema": LABEL_CONFIG}
    for path in ("/setup", "/webhook", "/predict", "/train", "/metrics"):
        assert client.post(path, json=body).status_code == 401, path
    r = client.post("/setup", json=body, headers={"Authorization": f"Basic {bad}"})
    assert r.status_code == 401
    r = client.post("/setup", json=body, headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 200


def test_a_manager_edit_that_breaks_the_order_is_repaired_once(client, store):
    cfg = resolve(7, LABEL_CONFIG)
    project = {"id": 7, "sampling": "Sequential sampling", "model_version": ""}
    broken = {"action": "PROJECT_UPDATED", "project": project}
    assert client.post("/webhook", json=broken).status_code == 200
    event = store.pending_events(7)[-1]
    assert event["sampling"] == "Sequential sampling"
    assert needs_configuring(cfg, event)
    ours = {
        "action": "PROJECT_UPDATED",
        "sampling": "Uncertainty sampling",
        "model_version": cfg.model_version,
    }
    assert not needs_configuring(cfg, ours)  # our own update does not loop
    assert not needs_configuring(cfg, {"action": "PROJECT_UPDATED"})


def test_an_import_is_screened_and_reported(store):
    cfg = resolve(7, LABEL_CONFIG)
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(VILLAGES)]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    late = [{"id": 100, "data": {"text": "Apple Inc. is an American technology company."}}]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": late})
    status = store.status(7)
    assert status["last_import_tasks"] == "1"
    assert status["last_import_likely_rare"] == "1"  # a company among villages stands out


def test_our_own_configuration_echo_is_a_noop(store):
    cfg = resolve(7, LABEL_CONFIG)
    echo = {
        "action": "PROJECT_UPDATED",
        "sampling": "Uncertainty sampling",
        "model_version": cfg.model_version,
        "label_config": LABEL_CONFIG,
    }
    assert is_noop(cfg, echo)
    changed = {**echo, "label_config": LABEL_CONFIG.replace('"Other"', '"Misc"')}
    assert not is_noop(cfg, changed)
    assert not is_noop(cfg, {**echo, "model_version": ""})
    assert not is_noop(cfg, annotation_event(1, 1, "Artist"))


def test_has_vectors_checks_only_the_given_tasks(store):
    cfg = resolve(7, LABEL_CONFIG)
    event = {"action": "TASKS_CREATED", "tasks": [{"id": 1, "data": {"text": "A village."}}]}
    apply_event(store, cfg, event)
    assert store.has_vectors(7, [1, 2]) == {1}
    assert store.has_vectors(7, []) == set()


def test_an_unreachable_label_studio_loses_nothing(store, monkeypatch):
    from tests.ls_harness import free_port

    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "some-token")
    store.record_event(7, annotation_event(1, 10, "Artist"))
    with pytest.raises(ls.LabelStudioError, match="cannot reach"):
        jobs.process_project(7)  # raised: RQ retries it with backoff
    assert len(store.pending_events(7)) == 1  # kept for the next attempt
    assert store.config(7) is None and store.labels(7) == {}  # no partial state
    assert "last_error" in store.status(7)


def test_predict_compares_classes_at_different_stages_on_one_scale(client, store):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist", "Athlete"]})
    store.save_config(cfg)
    v = np.zeros(384, np.float32)
    v[0] = 1.0
    store.add_vectors(7, {5: v})
    W = np.zeros((2, 384), np.float32)
    W[0, 0], W[1, 0] = 0.9, 2.0  # cosine 0.9 -> 0.95; margin 2.0 -> sigmoid 0.88
    model = StoredModel(
        "rarelabel", ["Artist", "Athlete"], W.tolist(), [0.0, 0.0], ["cosine", "linear"]
    )
    store.save_model(7, model)
    store.set_pushed(7, {5: 0.25})
    r = client.post("/predict", json={"project": "7.1", "tasks": [{"id": 5, "data": {}}]})
    (result,) = r.json()["results"]
    assert result["result"][0]["value"]["choices"] == ["Artist"]
    assert result["score"] == 0.25  # the queue position Label Studio orders by


VILLAGES = [
    "A village in Serbia.",
    "A hamlet in Poland.",
    "A village in Iran.",
    "A town in Bavaria.",
    "A village in Estonia.",
    "An Estonian village.",
    "A parish in Latvia.",
    "A small settlement in Romania.",
]


def test_the_asking_class_is_stored_with_its_logit(store):
    store.record_asked(7, {1: ("Company", 2.5), 2: ("Artist", -0.125)})
    store.r.hset(store.key(7, "asked"), "3", "Athlete")  # written before logits were stored
    assert store.asked(7) == {1: ("Company", 2.5), 2: ("Artist", -0.125), 3: ("Athlete", None)}


def test_pool_rows_carry_the_word_statistics_and_refit_as_the_pool_grows(store):
    cfg = resolve(7, LABEL_CONFIG, {"lexical_dims": 16})
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(VILLAGES)]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    pool = project_state(store, cfg).refresh(store)
    assert pool.X.shape == (8, 384 + 16)
    stored = store.lexical(7, pool.ids)
    assert set(stored) == set(pool.ids)  # /predict reads the same rows from Redis
    lexical_part = pool.X[:, 384:] * np.sqrt(2)
    np.testing.assert_allclose(np.stack([stored[t] for t in pool.ids]), lexical_part, atol=2e-3)
    state = project_state(store, cfg)
    fitted, size = state.lexical, state.lexical_fitted_at
    assert size == 8
    one = [{"id": 40, "data": {"text": "A village in Serbia with a church."}}]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": one})
    grown = state.refresh(store)  # +1/8 < a quarter: no refit, only the new row featurised
    assert (state.lexical, state.lexical_fitted_at) == (fitted, 8)
    np.testing.assert_array_equal(grown.X[:8], pool.X)
    expected = np.hstack(
        [store.vectors(7, [40])[40], fitted.transform([one[0]["data"]["text"]])[0]]
    )
    np.testing.assert_allclose(grown.X[grown.row[40]], expected / np.sqrt(2), atol=1e-6)
    assert 40 in store.lexical(7, [40])
    more = [
        {"id": 50 + i, "data": {"text": f"{t} It has a church."}} for i, t in enumerate(VILLAGES)
    ]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": more})
    grown = project_state(store, cfg).refresh(store)
    assert len(grown.ids) == 17 and state.lexical_fitted_at == 17  # refitted: grew 2x
    assert state.lexical is not fitted
    assert set(store.lexical(7, grown.ids)) == set(grown.ids)


def test_a_large_pool_is_kept_compact_as_it_grows(store, monkeypatch):
    monkeypatch.setattr(warm, "LARGE_POOL", 9)
    cfg = resolve(7, LABEL_CONFIG, {"lexical_dims": 16})
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(VILLAGES)]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    small = project_state(store, cfg).refresh(store)
    assert small.X.dtype == np.float32  # 8 tasks: below the line
    one = [{"id": 40, "data": {"text": "A village in Serbia with a church."}}]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": one})
    large = project_state(store, cfg).refresh(store)  # 9 tasks: float16, the old rows carried over
    assert large.X.dtype == np.float16 and large.X.shape == (9, 400)
    np.testing.assert_allclose(large.X[:8], small.X, atol=1e-3)


def test_a_pools_index_is_grown_saved_and_loaded_after_a_restart(store, monkeypatch):
    """The SEALS index covers the embedding columns, grows with each import, and a
    restarted worker loads it from disk and indexes only what was imported since."""
    cfg = resolve(7, LABEL_CONFIG, {"lexical_dims": 16, "seals_above": 8})
    config = cfg.ranker  # SEALS from 8 tasks

    def import_and_index(task_ids: range):
        tasks = [{"id": i, "data": {"text": f"{VILLAGES[i % 8]} ({i})"}} for i in task_ids]
        apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
        state = project_state(store, cfg)
        return state.refresh(store), state.index_for(config)

    pool, index = import_and_index(range(8))
    assert project_state(store, cfg).index_for(resolve(7, LABEL_CONFIG).ranker) is None
    assert index.ids == pool.ids and index.dim == 384 and pool.X.shape[1] == 400
    assert index.saved_size == 8 and Path(f"{warm.index_path(7)}.hnsw").exists()
    pool, grown = import_and_index(range(8, 9))
    assert grown is index and index.saved_size == 9  # 12% more rows than on disk: saved
    pool, grown = import_and_index(range(9, 12))
    assert grown is index and len(index.index) == 12 and index.saved_size == 12
    # a neighbour of a row is found by its embedding, whatever the lexical columns say
    rows, _ = index.index.neighbours(store.vectors(7, [3])[3], 1)
    assert pool.ids[rows[0][0]] == 3

    def no_build(*args):
        raise AssertionError("a restarted worker must load the index, not build it")

    monkeypatch.setattr(warm.PoolIndex, "build", no_build)
    warm.drop_states()  # a restart: nothing in memory
    pool, loaded = import_and_index(range(12, 13))
    assert loaded is not index and loaded.ids == pool.ids and len(loaded.index) == 13
    assert loaded.saved_size == 13  # 13 rows are 8% more than the copy on disk: saved
    monkeypatch.setattr(warm, "INDEX_SAVE_GROWTH", 2.0)
    pool, loaded = import_and_index(range(13, 15))
    assert len(loaded.index) == 15 and loaded.saved_size == 13  # under 2x: not yet
    # tasks deleted in Label Studio: the rows moved, so the index is built afresh
    monkeypatch.undo()
    store.remove_tasks(7, [0])
    state = project_state(store, cfg)
    pool = state.refresh(store)
    rebuilt = state.index_for(config)
    assert rebuilt is not loaded and rebuilt.ids == pool.ids == list(range(1, 15))


def test_without_lexical_columns_the_pool_is_the_embedding(store):
    cfg = resolve(7, LABEL_CONFIG, {"lexical_dims": 0})
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(VILLAGES)]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    assert project_state(store, cfg).refresh(store).X.shape == (8, 384)
    assert store.lexical(7, list(range(8))) == {}


def test_switching_the_lexical_setting_rebuilds_the_pool_rows(store):
    def import_and_pool(dims: int, task_ids: range):
        cfg = resolve(7, LABEL_CONFIG, {"lexical_dims": dims})
        tasks = [{"id": i, "data": {"text": VILLAGES[i % 8]}} for i in task_ids]
        apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
        state = project_state(store, cfg)
        return state.refresh(store), state.lexical_columns

    pool, columns = import_and_pool(0, range(8))
    assert pool.X.shape == (8, 384) and columns == 0
    pool, columns = import_and_pool(16, range(8, 9))
    assert pool.X.shape == (9, 400) and columns == 16
    pool, columns = import_and_pool(0, range(9, 10))
    assert pool.X.shape == (10, 384) and columns == 0


def test_predict_scores_the_lexical_columns_the_worker_stored(client, store):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist", "Athlete"], "lexical_dims": 4})
    store.save_config(cfg)
    v = np.zeros(384, np.float32)
    v[0] = 1.0
    store.add_vectors(7, {5: v})
    lex = np.array([0.5, -0.5, 0.5, 0.5], np.float32)
    store.set_lexical(7, {5: lex}, replace=True)
    W = np.zeros((2, 388), np.float32)
    W[0, 384:], W[1, 384:] = -lex, lex  # equal on the embedding; only the words decide
    model = StoredModel(
        "rarelabel", ["Artist", "Athlete"], W.tolist(), [0.0, 0.0], ["linear", "linear"]
    )
    store.save_model(7, model)
    r = client.post("/predict", json={"project": "7.1", "tasks": [{"id": 5, "data": {}}]})
    (result,) = r.json()["results"]
    assert result["result"][0]["value"]["choices"] == ["Athlete"]


@pytest.mark.parametrize("width, by_rankers", [(384 + 8, True), (384, False)])
def test_an_import_is_screened_by_rankers_in_their_own_columns(store, width, by_rankers):
    cfg = resolve(7, LABEL_CONFIG, {"targets": ["Artist", "Athlete"], "lexical_dims": 8})
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(VILLAGES)]
    apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
    project_state(store, cfg).refresh(store)  # the worker's first fit of the word statistics
    model = StoredModel(
        "rarelabel",
        ["Artist", "Athlete"],
        np.zeros((2, width)).tolist(),
        [10.0, 10.0],
        ["linear", "linear"],
    )
    store.save_model(7, model)  # every task is rare to these rankers
    late = [{"id": 100, "data": {"text": "A village in Serbia near the river."}}]
    summary = screen_import(store, cfg, embed_tasks(store, cfg, late))
    assert summary["n"] == 1
    if by_rankers:
        assert summary["likely_rare"] == 1
    else:  # rankers of another width are skipped for the outlier screen, without a crash:
        assert summary["likely_common"] == 1  # a village among villages is common to it


def test_a_known_task_without_a_stored_text_gets_it_on_the_next_sync(store):
    cfg = resolve(7, LABEL_CONFIG)
    store.add_vectors(7, {3: np.ones(384, np.float32) / np.sqrt(384)})  # pooled, no text
    assert store.texts(7, [3]) == {}
    fresh = embed_tasks(store, cfg, [{"id": 3, "data": {"text": "A village in Iran."}}])
    assert fresh == {}  # nothing embedded again
    assert store.texts(7, [3]) == {3: "A village in Iran."}
