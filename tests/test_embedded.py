"""The embedded default: `rarelabel serve` with no REDIS_URL is the whole backend, and its
store survives a restart, even a kill -9 of the web process."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from rq import Worker

from backend.store import Store, connect
from tests.ls_harness import free_port, wait_for


def serve(cache: Path, log: Path, **extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RARELABEL_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", **extra}
    for var in ("REDIS_URL", "BASIC_AUTH_USER", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        env.pop(var, None)
    cmd = ["rarelabel", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).json().get("status") == "UP"
    except (httpx.HTTPError, ValueError):
        return False


def store_of(cache: Path) -> Store:
    return Store(connect(f"unix://{cache}/store/redis.sock?db=0"))


def answers(store: Store) -> bool:
    try:
        return bool(store.r.ping())
    except Exception:  # noqa: BLE001 - any failure: not answering
        return False


@pytest.fixture
def cache(tmp_path):
    yield tmp_path / "cache"
    store = store_of(tmp_path / "cache")
    if answers(store):  # never leave a server behind, whatever failed
        store.r.shutdown(nosave=True)


def test_one_command_keeps_its_state_across_a_kill_and_leaves_no_orphan(cache, tmp_path):
    proc, url = serve(cache, tmp_path / "serve.log")
    wait_for(lambda: healthy(url), 60, "the embedded backend's /health")
    event = {"action": "START_TRAINING", "project": {"id": 3}}
    assert httpx.post(f"{url}/webhook", json=event, timeout=5).status_code == 200
    store = store_of(cache)
    assert [e["action"] for e in store.pending_events(3)] == ["START_TRAINING"]

    os.kill(proc.pid, signal.SIGKILL)  # the web process dies without cleaning up
    proc.wait(10)
    wait_for(lambda: not answers(store), 10, "the embedded Redis to stop with its parent")

    proc, url = serve(cache, tmp_path / "serve.log")
    try:
        wait_for(lambda: healthy(url), 60, "the restarted backend")
        assert [e["action"] for e in store_of(cache).pending_events(3)] == ["START_TRAINING"]
        # its worker is alive: with no Label Studio configured, the job fails and says why
        wait_for(
            lambda: "LABEL_STUDIO_URL" in store_of(cache).status(3).get("last_error", ""),
            60,
            "the worker's attempt",
        )
        assert store_of(cache).pending_events(3)  # and keeps the event for the next one
    finally:
        proc.terminate()
        proc.wait(30)
    wait_for(lambda: not answers(store_of(cache)), 10, "a clean stop to stop the store")


def live_workers(store: Store) -> set[int]:
    """The pids of the RQ workers registered on the store whose process is alive (a killed
    worker's registration outlives it until its TTL)."""
    pids = set()
    for worker in Worker.all(connection=store.r):
        try:
            os.kill(worker.pid, 0)
        except (OSError, TypeError):
            continue
        pids.add(worker.pid)
    return pids


def test_one_worker_per_core_each_restarted_when_killed(cache, tmp_path):
    proc, url = serve(cache, tmp_path / "serve.log", RARELABEL_EMBEDDED_WORKERS="2")
    try:
        wait_for(lambda: healthy(url), 60, "the embedded backend's /health")
        store = store_of(cache)
        wait_for(lambda: len(live_workers(store)) == 2, 60, "two workers")
        first = live_workers(store)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(live_workers(store)) == 2 and victim not in live_workers(store),
            60,
            "the killed worker started again",
        )
        assert len(live_workers(store) & first) == 1  # the other one was left alone
    finally:
        proc.terminate()
        proc.wait(30)
    wait_for(lambda: not answers(store_of(cache)), 10, "a clean stop to stop the store")


def serve_and_fail(cache: Path, **extra: str) -> subprocess.CompletedProcess:
    """`rarelabel serve` on a store that cannot start: it must exit by itself."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["RARELABEL_CACHE_DIR"] = str(cache)
    env.update(extra)
    cmd = ["rarelabel", "serve", "--port", str(free_port())]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_a_store_in_use_or_impossible_is_refused_in_one_line(cache, tmp_path):
    proc, url = serve(cache, tmp_path / "first.log")
    try:
        wait_for(lambda: healthy(url), 60, "the first backend")
        second = serve_and_fail(cache)
        assert second.returncode != 0
        assert "in use" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        proc.terminate()
        proc.wait(30)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    third = serve_and_fail(blocker)
    assert third.returncode != 0 and "cannot create the store directory" in third.stderr
    for bad in ("0", "two"):
        fourth = serve_and_fail(cache, RARELABEL_EMBEDDED_WORKERS=bad)
        assert fourth.returncode != 0 and "RARELABEL_EMBEDDED_WORKERS" in fourth.stderr
        assert len(fourth.stderr.strip().splitlines()) == 1


def test_a_worker_without_redis_url_says_what_to_do():
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        ["rarelabel", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "REDIS_URL" in done.stderr
