"""A whole stack for fault tests and benchmarks, every part of which can be broken on purpose.

Label Studio (tests/ls_harness.py, shared), a private Redis (``redis-server`` on a free port,
its own data dir, never the system one on 6379), ``rarelabel serve`` and ``rarelabel worker``
as subprocesses; an annotator working through Label Studio's API; Label Studio's own state,
which is the truth the backend must converge to; and the faults themselves, each of which
returns how long the backend took to converge after it ended (tests/test_faults.py asserts
the bounds, benchmarks/recovery.py measures the times).

    studio = start_label_studio(tmp)                     # one per module: it starts slowly
    with Stack(studio, tmp / "case", aof=True) as st:    # Redis + serve + worker
        p = st.create_project("case", dataset())         # waits for the first ranking
        st.label_next(p)                                 # the annotator, via /next
        recovery = fault_worker_kill(st, p, bound=60)    # raises TimeoutError past the bound
        print(recovery.seconds)

Logs: ``<tmp>/serve.log``, ``<tmp>/worker.log`` and ``<tmp>/redis.log``, appended across
restarts, each start marked by a line ``==== [stack] ... ====``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import inspect
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from backend import labelstudio as ls
from backend.embedded import redis_executable
from backend.store import Store, connect
from tests.ls_harness import LabelStudioProcess, free_port, restart_label_studio, wait_for

REPO = Path(__file__).resolve().parents[1]
LABEL_CONFIG = (REPO / "label_config.xml").read_text()
FROM_NAME, TO_NAME = "label", "text"  # the Choices and the Text of label_config.xml
MODEL_VERSION = "rarelabel"  # the backend's default RARELABEL_MODEL_VERSION
TARGET = "Athlete"
# Fast intervals for tests: the worker's sweep, the reconciliation with Label Studio and the
# per-project job lock (its TTL, renewed by the live job). The backend's defaults are 60/60/30.
FAST_INTERVALS = {
    "RARELABEL_SWEEP_SECONDS": "2",
    "RARELABEL_RECONCILE_SECONDS": "10",
    "RARELABEL_LOCK_SECONDS": "10",
}
# Errors that only mean "that part is down right now" while polling through a fault.
TRANSIENT = (redis.RedisError, httpx.HTTPError, ls.LabelStudioError, OSError)


# --- data ------------------------------------------------------------------------------------


def dbpedia_path() -> Path:
    """The shipped sample (tests/data), else the full dbpedia14 beside the repository."""
    sample = REPO / "tests" / "data" / "dbpedia14_sample.csv.gz"
    if sample.is_file():
        return sample
    return REPO.parent / "shared" / "data" / "dbpedia14" / "dbpedia14.csv.gz"


@lru_cache(maxsize=8)
def dataset(
    n_tasks: int = 300,
    target: str = TARGET,
    n_target: int = 12,
    seed: int = 5,
    max_chars: int = 200,
) -> tuple[tuple[str, str], ...]:
    """(label, text) of ``n_tasks`` short distinct dbpedia14 texts, ``n_target`` of them
    ``target`` (12 of 300 = 4%), shuffled with a fixed seed."""
    csv.field_size_limit(sys.maxsize)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    with gzip.open(dbpedia_path(), "rt", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            text = r["text"].strip()
            if text and len(text) <= max_chars and text not in seen:
                seen.add(text)
                rows.append((r["label"], text))
    rng = np.random.default_rng(seed)
    positives = [r for r in rows if r[0] == target]
    others = [r for r in rows if r[0] != target]
    picked = [positives[i] for i in rng.choice(len(positives), n_target, replace=False)]
    picked += [others[i] for i in rng.choice(len(others), n_tasks - n_target, replace=False)]
    return tuple(picked[i] for i in rng.permutation(len(picked)))


# --- processes -------------------------------------------------------------------------------


def _mark(log_path: Path, what: str) -> None:
    with open(log_path, "ab") as log:
        log.write(f"\n==== [stack] {what} at {time.strftime('%H:%M:%S')} ====\n".encode())


def _end(process: subprocess.Popen | None, sig: int, timeout: float = 20.0) -> None:
    """Send ``sig`` to the process group we started (a worker forks its RQ scheduler), then
    SIGKILL it if it is still there after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):  # children the leader left behind
        os.killpg(process.pid, signal.SIGKILL)


class RedisServer:
    """A private ``redis-server``: free port, its own dir, no RDB snapshots, AOF on or off.

    Without AOF a restart loses everything (nothing is ever written to disk); with AOF
    (``appendfsync everysec``, flushed at a clean shutdown) a restart keeps the data.
    """

    def __init__(self, tmp: Path, appendonly: bool, port: int | None = None) -> None:
        self.dir = tmp / "redis-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "redis.log"
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        if not self.appendonly:  # nothing may survive: no AOF, no RDB from an earlier life
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
        # the server binary the package ships (backend.embedded): no system Redis needed
        cmd = [str(redis_executable()), "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--dir", str(self.dir), "--save", "", "--daemonize", "no"]
        cmd += ["--appendonly", "yes" if self.appendonly else "no"]
        _mark(self.log_path, f"start redis-server {' '.join(cmd[1:])}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        probe = redis.Redis(port=self.port, socket_connect_timeout=1)

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited ({self.process.returncode}), see {self.log_path}"
                )
            try:
                return bool(probe.ping())
            except redis.RedisError:
                return False

        wait_for(up, timeout, f"redis-server on port {self.port}", every=0.1)
        probe.close()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): with AOF the data is on disk, without it it is gone."""
        _mark(self.log_path, "stop (SIGTERM)")
        _end(self.process, signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()


class Backend:
    """``rarelabel serve`` and ``rarelabel worker`` as subprocesses with their logs."""

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        studio: LabelStudioProcess,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("BASIC_AUTH_", "RARELABEL_"))
        }
        self.env = {
            **base,
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": studio.url,
            "LABEL_STUDIO_API_KEY": studio.token,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen | None] = {"serve": None, "worker": None}
        self.expected: set[str] = set()  # the processes that should be running now
        self.logs = {name: tmp / f"{name}.log" for name in self.procs}

    @property
    def auth(self) -> tuple[str, str] | None:
        user = self.env.get("BASIC_AUTH_USER")
        return (user, self.env.get("BASIC_AUTH_PASS", "")) if user else None

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        if self.running(name):
            raise RuntimeError(f"{name} is already running")
        _mark(self.logs[name], f"start {' '.join(cmd)}")
        with open(self.logs[name], "ab") as log:
            proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        self.expected.add(name)
        return proc

    def running(self, name: str) -> bool:
        proc = self.procs[name]
        return proc is not None and proc.poll() is None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_serve(self, timeout: float = 60.0) -> None:
        proc = self._start(
            "serve", ["rarelabel", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        )

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"rarelabel serve exited ({proc.returncode}):\n{self.log_tail('serve')}"
                )
            return self.healthy()

        wait_for(up, timeout, "the backend's /health")

    def stop_serve(self) -> None:
        _mark(self.logs["serve"], "stop (SIGTERM)")
        self.expected.discard("serve")
        _end(self.procs["serve"], signal.SIGTERM)

    def start_worker(self) -> None:
        self._start("worker", ["rarelabel", "worker"])

    def stop_worker(self) -> None:
        _mark(self.logs["worker"], "stop (SIGTERM)")
        self.expected.discard("worker")
        _end(self.procs["worker"], signal.SIGTERM, timeout=30)

    def kill_worker(self) -> None:
        """kill -9 of the worker's whole process group (the worker and its RQ scheduler), as
        when its machine or container dies: nothing gets to clean up."""
        _mark(self.logs["worker"], "kill -9")
        self.expected.discard("worker")
        _end(self.procs["worker"], signal.SIGKILL)

    def died(self) -> dict[str, int]:
        """The processes that should be running but exited, with their exit codes."""
        return {
            name: self.procs[name].returncode
            for name in sorted(self.expected)
            if self.procs[name] is not None and self.procs[name].poll() is not None
        }

    def pause_worker(self) -> None:
        os.killpg(self.procs["worker"].pid, signal.SIGSTOP)

    def resume_worker(self) -> None:
        os.killpg(self.procs["worker"].pid, signal.SIGCONT)

    def request(self, method: str, path: str, auth: bool = True, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}{path}", auth=self.auth if auth else None, timeout=10, **kw
        )

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs[name]
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_summary(self, name: str, lines: int = 25) -> list[str]:
        """The last ``lines`` lines of a log that are not inside a traceback (log records,
        exception summaries, our start/stop marks)."""
        path = self.logs[name]
        text = path.read_text(errors="replace") if path.exists() else ""
        kept = [
            line
            for line in text.splitlines()
            if line.strip() and not line.startswith((" ", "\t", "Traceback", "During handling"))
        ]
        return kept[-lines:]

    def log_lines(self, name: str, *needles: str) -> list[str]:
        """Lines of a log that contain any of ``needles`` (case-insensitive)."""
        path = self.logs[name]
        text = path.read_text(errors="replace") if path.exists() else ""
        lowered = [n.lower() for n in needles]
        return [line for line in text.splitlines() if any(n in line.lower() for n in lowered)]

    def close(self) -> None:
        for name in ("worker", "serve"):
            proc = self.procs[name]
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # a paused worker cannot stop
                    os.killpg(proc.pid, signal.SIGCONT)
                _mark(self.logs[name], "stop (SIGTERM, teardown)")
                _end(proc, signal.SIGTERM)


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Project:
    id: int
    truth: dict[int, str]  # task id -> its true dbpedia14 class (what the annotator answers)
    ml_backend: int
    targets: list[str]
    annotations: dict[int, int] = field(default_factory=dict)  # ours: annotation id -> task
    deleted_tasks: set[int] = field(default_factory=set)
    annotated_at: float = 0.0  # unix time just before our latest annotation was submitted


@dataclass
class Recovery:
    """How long the backend took to converge after a fault."""

    fault: str
    seconds: float  # from the fault's end (the broken part is back) to convergence
    since_change: float  # from the last change made in Label Studio during the fault

    def __str__(self) -> str:
        return (
            f"[recovery] {self.fault}: converged {self.seconds:.1f} s after the fault "
            f"ended ({self.since_change:.1f} s after the last change)"
        )


class Stack:
    """A private Redis, ``rarelabel serve`` and ``rarelabel worker`` beside a shared Label
    Studio. The backend's environment gets ``intervals`` (FAST_INTERVALS by default; ``{}``
    keeps the backend's own defaults), a queue of 30, then ``env``."""

    def __init__(
        self,
        studio: LabelStudioProcess,
        tmp: Path,
        aof: bool = False,
        env: dict[str, str] | None = None,
        intervals: dict[str, str] | None = None,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.studio = studio
        self.redis = RedisServer(tmp, appendonly=aof)
        settings = {
            **(FAST_INTERVALS if intervals is None else intervals),
            "RARELABEL_QUEUE_SIZE": "30",
            **(env or {}),
        }
        self.backend = Backend(tmp, self.redis.url, studio, settings)
        self.client = ls.make_client(studio.url, studio.token, timeout=60)
        self.store = Store(connect(self.redis.url))

    def start(self) -> Stack:
        self.redis.start()
        self.backend.start_serve()
        self.backend.start_worker()
        return self

    def close(self) -> None:
        self.backend.close()
        self.redis.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Label Studio: the project, the annotator, the truth ---
    def create_project(
        self,
        title: str,
        rows: tuple[tuple[str, str], ...] | list[tuple[str, str]],
        targets: tuple[str, ...] = (TARGET,),
        basic_auth: tuple[str, str] | None = None,
        timeout: float = 300.0,
    ) -> Project:
        """A Label Studio project of ``rows``, connected to the backend with ``targets`` as
        extra params; returns once the first ranking is in Label Studio and in use."""
        pid = int(self.client.projects.create(title=title, label_config=LABEL_CONFIG).id)
        self.client.projects.import_tasks(pid, request=[{"text": text} for _, text in rows])
        label_of_text = {text: label for label, text in rows}
        truth = {
            int(t["id"]): label_of_text[t["data"]["text"]] for t in ls.fetch_tasks(self.client, pid)
        }
        assert len(truth) == len(rows)
        ml = self.connect(pid, {"targets": list(targets)}, basic_auth)
        p = Project(pid, truth, ml, list(targets))
        t0 = time.monotonic()
        self.wait(
            lambda: self.ready(p), timeout, f"the first ranking of project {pid}", p=p, every=1.0
        )
        print(
            f"[stack] project {pid}: {len(truth)} tasks ranked and configured in "
            f"{time.monotonic() - t0:.1f} s",
            flush=True,
        )
        return p

    def connect(self, pid: int, extra: dict, basic_auth: tuple[str, str] | None) -> int:
        """Connect the backend to a project, giving Label Studio the credentials if any."""
        if basic_auth is None:
            return ls.connect_backend(self.client, pid, self.backend.url, extra_params=extra)
        if "basic_auth" in inspect.signature(ls.connect_backend).parameters:
            return ls.connect_backend(
                self.client, pid, self.backend.url, extra_params=extra, basic_auth=basic_auth
            )
        created = self.client.ml.create(
            project=pid,
            url=self.backend.url,
            title="rarelabel",
            auth_method="BASIC_AUTH",
            basic_auth_user=basic_auth[0],
            basic_auth_pass=basic_auth[1],
            extra_params=extra,
        )
        return int(created.id)

    def ready(self, p: Project) -> bool:
        """Every task in the pool, a queue pushed and held by Label Studio, and the project
        ordered by it (uncertainty sampling on our model version)."""
        pool = self.store.pool_ids(p.id)
        if pool != set(p.truth) - p.deleted_tasks or not self.store.pushed(p.id):
            return False
        project = self.client.projects.get(p.id)
        if (project.sampling, project.model_version) != (ls.UNCERTAINTY_SAMPLING, MODEL_VERSION):
            return False
        return self.queue_in_label_studio(p)

    def label_next(self, p: Project, label: str | None = None) -> tuple[int, int]:
        """The annotator: take the task *Label All Tasks* serves and answer it (its true
        class unless ``label``); returns (task id, annotation id)."""
        task = ls.next_task(self.client, p.id)
        if task is None:
            raise AssertionError(f"Label Studio has no task left to serve in project {p.id}")
        task_id = int(task["id"])
        return task_id, self.annotate(p, task_id, label)

    def annotate(self, p: Project, task_id: int, label: str | None = None) -> int:
        p.annotated_at = time.time()  # before: its retrain may finish before the call returns
        ann = ls.create_annotation(
            self.client, task_id, label or p.truth[task_id], FROM_NAME, TO_NAME
        )
        p.annotations[ann] = task_id
        return ann

    def update_annotation(self, p: Project, annotation: int, label: str) -> None:
        result = ls.choices_result(label, FROM_NAME, TO_NAME)
        self.client.annotations.update(annotation, result=result)

    def delete_annotation(self, p: Project, annotation: int) -> None:
        self.client.annotations.delete(annotation)
        p.annotations.pop(annotation, None)

    def delete_task(self, p: Project, task_id: int) -> None:
        self.client.tasks.delete(str(task_id))
        p.deleted_tasks.add(task_id)
        p.annotations = {a: t for a, t in p.annotations.items() if t != task_id}

    def ls_get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.studio.url}/api/{path}",
            params=params,
            timeout=30,
            headers={"Authorization": f"Token {self.studio.token}"},
        )
        response.raise_for_status()
        return response.json()

    def ls_labels(self, p: Project) -> dict[int, str]:
        """Label Studio's truth: each task's label from its newest (highest id) annotation
        that chose one and was not skipped."""
        newest: dict[int, tuple[int, str]] = {}
        for task in ls.fetch_tasks(self.client, p.id):
            for ann in task["annotations"]:
                label = None if ann.get("was_cancelled") else ls.choice_of(ann["result"], FROM_NAME)
                if label is not None and (
                    task["id"] not in newest or ann["id"] > newest[task["id"]][0]
                ):
                    newest[int(task["id"])] = (int(ann["id"]), label)
        return {t: label for t, (_, label) in newest.items()}

    def ls_predictions(self, p: Project) -> dict[int, list[tuple[str, float | None]]]:
        """Task -> [(model_version, score)] of every prediction Label Studio holds."""
        out: dict[int, list[tuple[str, float | None]]] = {}
        for pred in self.ls_get("predictions", project=p.id):
            out.setdefault(int(pred["task"]), []).append(
                (pred.get("model_version"), pred.get("score"))
            )
        return out

    def queue_in_label_studio(self, p: Project) -> bool:
        """Every task the backend believes it pushed holds a prediction of our version."""
        pushed = self.store.pushed(p.id)
        preds = self.ls_predictions(p)
        return bool(pushed) and all(
            any(v == MODEL_VERSION for v, _ in preds.get(t, [])) for t in pushed
        )

    def stale_predictions(self, p: Project, labelled: set[int] | None = None) -> dict[int, list]:
        """Unlabelled tasks holding a prediction of our version that is not in our queue:
        Label Studio would serve them as if they were wanted."""
        labelled = set(self.ls_labels(p)) if labelled is None else labelled
        pushed = self.store.pushed(p.id)
        return {
            t: preds
            for t, preds in self.ls_predictions(p).items()
            if t not in pushed and t not in labelled and any(v == MODEL_VERSION for v, _ in preds)
        }

    # --- the backend's state ---
    def status(self, p: Project) -> dict[str, str]:
        return self.store.status(p.id)

    def retrained_after(self, p: Project, t: float, labels: int | None = None) -> bool:
        """A retrain finished after unix time ``t`` (on ``labels`` labels, if given)."""
        status = self.status(p)
        if float(status.get("last_retrain_at") or 0) <= t:
            return False
        return labels is None or status.get("labels_seen") == str(labels)

    def labels_match(self, p: Project, truth: dict[int, str]) -> bool:
        return self.store.labels(p.id) == truth

    def job_running(self, p: Project) -> bool:
        """The project's job lock is held, or RQ has a job started."""
        r = self.store.r
        if r.exists(self.store.key(p.id, "lock")):
            return True
        return any(r.zcard(k) for k in r.scan_iter("rq:wip:*"))

    def describe(self, p: Project, truth: dict[int, str] | None = None) -> str:
        """The backend's state for a failure message, beside Label Studio's."""
        lines = []
        try:
            labels = self.store.labels(p.id)
            lines.append(f"backend status: {self.status(p)}")
            lines.append(
                f"pending events: {len(self.store.pending_events(p.id))}, set aside: "
                f"{self.store.set_aside_events(p.id)}"
            )
            if truth is not None:
                diff = {
                    t: (labels.get(t), truth.get(t))
                    for t in set(labels) | set(truth)
                    if labels.get(t) != truth.get(t)
                }
                lines.append(f"labels differing (backend, Label Studio): {diff}")
            lines.append(f"pushed: {len(self.store.pushed(p.id))} tasks")
        except Exception as e:  # noqa: BLE001 - a diagnostic must not hide the real failure
            lines.append(f"(backend state unreadable: {e!r})")
        for name in ("serve", "worker"):
            proc = self.backend.procs[name]
            state = (
                "not started"
                if proc is None
                else ("running" if proc.poll() is None else f"exited with {proc.returncode}")
            )
            lines.append(
                f"--- {self.backend.logs[name]} ({name} {state}; last lines outside tracebacks) ---"
            )
            lines.extend(self.backend.log_summary(name, 25))
        return "\n".join(lines)

    def wait(
        self,
        check: Callable[[], Any],
        timeout: float,
        what: str,
        p: Project | None = None,
        truth: dict[int, str] | None = None,
        every: float = 0.5,
    ) -> float:
        """Poll ``check`` (errors of a part that is down count as "not yet") until it holds;
        returns the unix time it held. A TimeoutError names what never came and, given
        ``p``, the backend's state and log tails."""

        def safe() -> Any:
            died = self.backend.died()
            if died:  # no point waiting: say so now, with the logs
                why = f"while waiting for {what}: backend processes exited: {died}"
                raise AssertionError(f"{why}\n{self.describe(p, truth)}" if p else why)
            try:
                return check()
            except TRANSIENT:
                return False

        try:
            wait_for(safe, timeout, what, every)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.describe(p, truth)}" if p else str(e)) from None
        return time.time()

    def converged(self, p: Project, truth: dict[int, str], after: float) -> bool:
        """The backend holds Label Studio's labels, has no event pending, and a retrain on all
        of them finished after ``after``."""
        return (
            self.labels_match(p, truth)
            and not self.store.pending_events(p.id)
            and self.retrained_after(p, after, len(truth))
        )


def alternative_label(label: str) -> str:
    """A different choice of the label config, to model an annotator changing their mind."""
    return "Other" if label != "Other" else "Company"


# --- the faults: each returns its Recovery, or raises TimeoutError past ``bound`` -------------


def catch_a_job(st: Stack, p: Project, attempts: int = 6, timeout: float = 15.0) -> bool:
    """Annotate until a job is seen running for the project (polled every 5 ms)."""
    for _ in range(attempts):
        st.label_next(p)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if st.job_running(p):
                return True
            time.sleep(0.005)
    return False


def fault_worker_kill(st: Stack, p: Project, bound: float) -> Recovery:
    """kill -9 the worker while a job runs, annotate twice, restart it; no webhook is sent
    for what the killed job was doing."""
    if not catch_a_job(st, p):
        raise AssertionError("never saw a job running for the project")
    st.backend.kill_worker()
    st.label_next(p)
    st.label_next(p)
    t_change = time.time()
    st.backend.start_worker()
    t_end = time.time()
    truth = st.ls_labels(p)
    done = st.wait(
        lambda: st.converged(p, truth, t_change),
        bound,
        "labels equal to Label Studio's, no event pending and a retrain after the "
        "last annotation, after a kill -9 of the worker",
        p=p,
        truth=truth,
    )
    return Recovery("worker kill -9", done - t_end, done - t_change)


def fault_label_studio_restart(
    st: Stack, p: Project, bound: float, outage: float = 5.0
) -> tuple[Recovery, float]:
    """Stop Label Studio right after an annotation, before the job can push (the worker is
    held with SIGSTOP from before the annotation until Label Studio is down), leave it down
    ``outage`` seconds, start it again on the same port and data dir.

    Returns the recovery (from Label Studio answering again) and the restart's start time."""
    st.backend.pause_worker()
    try:
        st.label_next(p)
        t_change = time.time()
        st.studio.stop()
    finally:
        st.backend.resume_worker()
    time.sleep(outage)  # the worker meets the outage
    t_restart = time.time()
    restart_label_studio(st.studio)
    t_end = time.time()
    truth = st.ls_labels(p)
    done = st.wait(
        lambda: st.converged(p, truth, t_restart) and st.queue_in_label_studio(p),
        bound,
        "a retrain after the annotation pushed into the restarted Label Studio",
        p=p,
        truth=truth,
    )
    return Recovery("Label Studio restart", done - t_end, done - t_change), t_restart


def fault_redis_restart(
    st: Stack, p: Project, bound: float, outage: float = 3.0, during_job: bool = False
) -> Recovery:
    """Stop Redis (SIGTERM), annotate while it is down (the webhook is lost), start it again
    after ``outage`` s: without AOF it comes back empty, with AOF it keeps its data. With
    ``during_job``, Redis stops while a job of the project runs."""
    if during_job and not catch_a_job(st, p):
        raise AssertionError("never saw a job running for the project")
    st.redis.stop()
    st.label_next(p)
    t_change = time.time()
    time.sleep(outage)
    st.redis.start()
    t_end = time.time()
    truth = st.ls_labels(p)

    def recovered() -> bool:
        cfg = st.store.config(p.id)
        return (
            cfg is not None
            and list(cfg.targets) == p.targets
            and (cfg.extra or {}).get("targets") == p.targets
            and st.converged(p, truth, t_end)
            and bool(st.store.pushed(p.id))
        )

    kind = "with AOF" if st.redis.appendonly else "without AOF (data lost)"
    kind += f", {outage:g} s down" + (", stopped during a job" if during_job else "")
    done = st.wait(
        recovered,
        bound,
        f"labels, targets and a fresh queue after a Redis restart {kind}",
        p=p,
        truth=truth,
    )
    return Recovery(f"Redis restart {kind}", done - t_end, done - t_change)


def head_of_queue(st: Stack, p: Project, n: int) -> list[int]:
    """The ``n`` unlabelled tasks with the lowest pushed scores: those Label Studio serves
    next. (``.pushed`` also holds labelled tasks: their predictions stay in Label Studio.)"""
    pushed = st.store.pushed(p.id)
    labelled = set(st.ls_labels(p))
    return sorted((t for t in pushed if t not in labelled), key=lambda t: (pushed[t], t))[:n]


def fault_head_deleted(st: Stack, p: Project, bound: float, n: int = 3) -> tuple[Recovery, list]:
    """Delete the ``n`` tasks at the head of the queue in Label Studio, then annotate another
    task: the next retrain must succeed and forget them. Returns the recovery and the
    deleted task ids."""
    head = head_of_queue(st, p, n)
    error_at = st.status(p).get("last_error_at")
    for task in head:
        st.delete_task(p, task)
    st.label_next(p)
    t_end = p.annotated_at
    truth = st.ls_labels(p)
    gone = set(head)

    def recovered() -> bool:
        status = st.status(p)
        if status.get("last_error_at") != error_at:
            why = f"the retrain after deleting tasks {head} failed: {status.get('last_error')}"
            raise AssertionError(f"{why}\n{st.describe(p, truth)}")
        return (
            st.converged(p, truth, t_end)
            and not gone & st.store.pool_ids(p.id)
            and not gone & set(st.store.pushed(p.id))
        )

    done = st.wait(
        recovered, bound, f"a retrain without the deleted tasks {head}", p=p, truth=truth
    )
    return Recovery(f"{n} tasks deleted at the head", done - t_end, done - t_end), head


def fault_task_deleted_while_web_down(st: Stack, p: Project, bound: float) -> tuple[Recovery, int]:
    """Delete the head task while the web process is stopped (TASKS_DELETED is lost)."""
    st.backend.stop_serve()
    (task,) = head_of_queue(st, p, 1)
    st.delete_task(p, task)
    t_change = time.time()
    st.backend.start_serve()
    t_end = time.time()

    def pruned() -> bool:
        return task not in st.store.pool_ids(p.id) and task not in st.store.pushed(p.id)

    done = st.wait(
        pruned,
        bound,
        f"reconciliation to prune task {task}, deleted while the web process was down",
        p=p,
    )
    return Recovery("task deleted, webhook lost", max(0.0, done - t_end), done - t_change), task


def fault_labelled_task_deleted(st: Stack, p: Project, bound: float) -> tuple[Recovery, int]:
    """Delete a task that holds one of our annotations (Label Studio deletes the annotation
    with it and sends only TASKS_DELETED): its label must leave the backend's labels."""
    task = next(t for a, t in sorted(p.annotations.items()) if t not in p.deleted_tasks)
    st.delete_task(p, task)
    t_end = time.time()
    truth = st.ls_labels(p)

    def forgotten() -> bool:
        return st.labels_match(p, truth) and task not in st.store.pool_ids(p.id)

    done = st.wait(
        forgotten, bound, f"the label of deleted task {task} to leave the backend", p=p, truth=truth
    )
    return Recovery("labelled task deleted", done - t_end, done - t_end), task


def fault_lost_webhooks(st: Stack, p: Project, bound: float) -> Recovery:
    """With the web process stopped: 2 new annotations, one earlier annotation changed and
    another deleted; then the web process starts again. Needs 2 annotations made before."""
    earlier = sorted(p.annotations)[-2:]
    if len(earlier) < 2:
        raise ValueError("fault_lost_webhooks needs 2 annotations made before the fault")
    st.backend.stop_serve()
    st.label_next(p)
    st.label_next(p)
    changed, removed = earlier
    st.update_annotation(p, changed, alternative_label(p.truth[p.annotations[changed]]))
    st.delete_annotation(p, removed)
    t_change = time.time()
    st.backend.start_serve()
    t_end = time.time()
    truth = st.ls_labels(p)
    done = st.wait(
        lambda: st.labels_match(p, truth) and not st.store.pending_events(p.id),
        bound,
        "labels equal to Label Studio's after webhooks were lost",
        p=p,
        truth=truth,
    )
    return Recovery("lost webhooks", max(0.0, done - t_end), done - t_change)


def baseline_annotation_to_push(st: Stack, p: Project, bound: float) -> float:
    """Normal operation: seconds from one annotation to its retrain pushed to Label Studio."""
    st.label_next(p)
    t0 = p.annotated_at
    truth = st.ls_labels(p)
    done = st.wait(
        lambda: st.converged(p, truth, t0) and st.queue_in_label_studio(p),
        bound,
        "the retrain after an annotation",
        p=p,
        truth=truth,
        every=0.1,
    )
    return done - t0
