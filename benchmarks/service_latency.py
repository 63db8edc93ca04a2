"""Service latency of the backend with a real Label Studio (issue 3, "Targets").

Everything runs on this machine: a throw-away Label Studio (tests/ls_harness.py), Redis
(DB 12, flushed at start and end), `rarelabel serve` and `rarelabel worker` subprocesses.

    python3 benchmarks/service_latency.py                      # 20k tasks, 30 labels, 500 webhooks
    python3 benchmarks/service_latency.py --tasks 2000 --annotate 5 --webhooks 50   # smoke run

What it measures, in this order:
1. Setup: Label Studio's import of the tasks (dbpedia14, the 5 targets at ~0.5% each), the
   backend's first contact (worker log "synced ... in X s") and its first push. Vectors are
   copied from the SQLite embedding cache into the backend's Redis cache first, so the worker
   does not spend ~8 minutes embedding 20k texts (a missing vector is simply embedded).
2. Annotation -> next task: after 5 seed positives per target, an annotator loop. t0 = just
   before creating the annotation for the task just served; wait until the worker has applied
   it and pushed (status `labels_seen` = expected and `last_retrain_at` > t0); t1 = when the
   following GET /api/projects/{id}/next is answered. Latency = t1 - t0 (the ~1 s human pause
   between labels is not counted). Also checks that /next served the head of the pushed queue.
3. Webhook answer time: N valid ANNOTATION_CREATED webhooks POSTed sequentially to /webhook,
   each followed by a GET /health (the baseline, same moment, same load). It runs last: its
   fake annotations keep the worker busy retraining and pushing, as a burst of real ones would.

Figures go to stdout (a table) and to --out (JSON); the backend's logs next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import labelstudio as ls  # noqa: E402
from backend.store import RedisVectorCache, Store, connect  # noqa: E402
from benchmarks.data_dir import DBPEDIA14  # noqa: E402
from benchmarks.harness import DBPEDIA_TARGETS as TARGETS  # noqa: E402
from benchmarks.harness import csv_rows, log  # noqa: E402
from model.embedding import DEFAULT_MODEL, SQLiteCache, cache_key, default_cache_path  # noqa: E402
from model.prioritiser import prototype_text  # noqa: E402
from tests.ls_harness import free_port, start_label_studio, wait_for  # noqa: E402

DATA = DBPEDIA14  # $RARELABEL_DATA_DIR/dbpedia14/dbpedia14.csv.gz
PREVALENCE = 0.005
N_SEEDS = 5  # seed positives per target
REDIS_URL = "redis://127.0.0.1:6379/12"
FROM_NAME, TO_NAME = "label", "text"  # label_config.xml
FAKE_ANNOTATION_BASE = 10_000_000  # ids of the synthetic webhooks' annotations
RETRAIN_RE = re.compile(
    r"project (\d+): retrained on (\d+) labels in ([\d.]+)s, wrote (\d+) predictions, "
    r"removed (\d+)"
)
SYNC_RE = re.compile(
    r"project (\d+): synced (\d+) tasks \((\d+) newly embedded\), (\d+) labels in ([\d.]+)s"
)


# ---------------------------------------------------------------- small helpers


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git_state() -> dict[str, Any]:
    """The code measured: commit and the files that differ from it (others may be editing)."""

    def git(*a: str) -> str:
        out = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": git("status", "--short")}


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summary(values: list[float], qs: tuple[int, ...] = (50, 90, 99)) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(values)}
    for q in qs:
        out[f"p{q}"] = pct(values, q)
    out["max"] = max(values) if values else None
    out["mean"] = statistics.fmean(values) if values else None
    return out


def metric(text: str, name: str, labels: dict[str, str]) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def log_slice(path: Path, start: int, end: int | None = None) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(max(0, end - start))
    return data.decode(errors="replace")


def retrains_in(text: str, pid: int) -> list[dict[str, float]]:
    return [
        {"labels": int(m[2]), "fit_s": float(m[3]), "written": int(m[4]), "removed": int(m[5])}
        for m in RETRAIN_RE.finditer(text)
        if int(m[1]) == pid
    ]


# ---------------------------------------------------------------- data


def build_dataset(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text): each target at PREVALENCE of n, other labels filling the rest; no
    duplicate texts; fixed seed."""
    by_label: dict[str, list[str]] = {}
    seen: set[str] = set()
    for row in csv_rows(DATA):
        text = row["text"]
        if text.strip() and text not in seen:
            seen.add(text)
            by_label.setdefault(row["label"], []).append(text)
    rng = np.random.default_rng(seed)
    per_target = max(N_SEEDS + 1, round(PREVALENCE * n))
    picked: list[tuple[str, str]] = []
    for t in TARGETS:
        rows = by_label[t]
        picked += [(t, rows[i]) for i in rng.choice(len(rows), per_target, replace=False)]
    others = [(lab, x) for lab in sorted(by_label) if lab not in TARGETS for x in by_label[lab]]
    need = n - len(picked)
    if need > len(others):
        raise SystemExit(f"--tasks {n}: only {len(others)} non-target texts available")
    picked += [others[i] for i in rng.choice(len(others), need, replace=False)]
    return [picked[i] for i in rng.permutation(len(picked))]


def copy_vectors(r, texts: list[str]) -> tuple[int, int]:
    """SQLite embedding cache -> the backend's Redis cache; returns (copied, missing)."""
    keys = list(dict.fromkeys(cache_key(DEFAULT_MODEL, t) for t in texts))
    found = SQLiteCache(default_cache_path()).get_many(keys)
    cache = RedisVectorCache(r)
    items = list(found.items())
    for start in range(0, len(items), 2000):
        cache.put_many(dict(items[start : start + 2000]))
    return len(found), len(keys) - len(found)


# ---------------------------------------------------------------- the stack


class Stack:
    """Label Studio + `rarelabel serve` + `rarelabel worker`; stop() always cleans up."""

    def __init__(self, tmp: Path, out_dir: Path, queue_size: int) -> None:
        self.tmp, self.out_dir, self.queue_size = tmp, out_dir, queue_size
        self.studio = None
        self.procs: list[tuple[str, subprocess.Popen[bytes], Any]] = []
        self.url = ""
        self.worker_log = out_dir / "worker.log"
        self.serve_log = out_dir / "serve.log"
        self._log_pos = 0  # how far check_alive has read the worker log

    def start(self) -> None:
        t = time.perf_counter()
        self.studio = start_label_studio(self.tmp)
        self.ls_start_s = time.perf_counter() - t
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "LABEL_STUDIO_URL": self.studio.url,
            "LABEL_STUDIO_API_KEY": self.studio.token,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "RARELABEL_QUEUE_SIZE": str(self.queue_size),
        }
        for var in (
            "BASIC_AUTH_USER",
            "BASIC_AUTH_PASS",
            "RARE_TARGETS",
            "RARELABEL_EMBEDDING_MODEL",
            "RARELABEL_MODEL_VERSION",
        ):
            env.pop(var, None)
        for name, cmd, path in [
            (
                "serve",
                ["rarelabel", "serve", "--host", "127.0.0.1", "--port", str(port)],
                self.serve_log,
            ),
            ("worker", ["rarelabel", "worker"], self.worker_log),
        ]:
            f = open(path, "wb")  # noqa: SIM115 - closed in stop()
            proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
            self.procs.append((name, proc, f))
            log(f"started {name} (pid {proc.pid}), log {path}")
        self.url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            for name, proc, _ in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"rarelabel {name} exited with {proc.returncode}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, "the backend's /health")

    def check_alive(self) -> None:
        """Fail fast if a process died or the worker logged an error (a failed job would
        otherwise leave the benchmark waiting for a ranking that never comes)."""
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"rarelabel {name} exited with {proc.returncode}")
        with open(self.worker_log, "rb") as f:
            f.seek(self._log_pos)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1  # only whole lines
        self._log_pos += complete
        for line in chunk[:complete].decode(errors="replace").splitlines():
            if " ERROR " in line:
                raise RuntimeError(f"the worker logged an error (see {self.worker_log}): {line}")

    def stop(self) -> None:
        for name, proc, f in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop, killing it")
                    proc.kill()
                    proc.wait(10)
            f.close()
        self.procs = []
        if self.studio is not None:
            try:
                self.studio.stop()
            finally:
                if self.studio.log_path.exists():
                    shutil.copy(self.studio.log_path, self.out_dir / "label-studio.log")
            self.studio = None


# ---------------------------------------------------------------- phases


def setup_project(
    stack: Stack, client, store: Store, rows: list[tuple[str, str]], res: dict, timeout: float
) -> tuple[int, dict[int, str], dict[int, str]]:
    """Create + import, warm the Redis vector cache, connect, wait for the first ranking."""
    project = client.projects.create(
        title="service latency", label_config=(ROOT / "label_config.xml").read_text()
    )
    pid = int(project.id)
    t = time.perf_counter()
    resp = client.projects.import_tasks(
        pid,
        request=[{"text": text} for _, text in rows],
        return_task_ids=True,
        request_options={"timeout": 900},
    )
    res["setup"]["ls_import_s"] = round(time.perf_counter() - t, 3)
    res["setup"]["ls_import_server_s"] = round(float(resp.duration or 0), 3)
    task_ids = getattr(resp, "task_ids", None)
    if not task_ids or len(task_ids) != len(rows):
        raise RuntimeError(f"import returned {len(task_ids or [])} task ids for {len(rows)} rows")
    truth = {int(tid): lab for tid, (lab, _) in zip(task_ids, rows, strict=True)}
    text_of = {int(tid): text for tid, (_, text) in zip(task_ids, rows, strict=True)}
    log(f"imported {len(rows)} tasks into project {pid} in {res['setup']['ls_import_s']} s")

    t = time.perf_counter()
    protos = [prototype_text(x) for x in TARGETS]
    copied, missing = copy_vectors(store.r, [text for _, text in rows] + protos)
    res["setup"].update(
        vectors_copied=copied,
        vectors_missing=missing,
        vectors_copy_s=round(time.perf_counter() - t, 3),
    )
    log(f"copied {copied} vectors SQLite -> Redis ({missing} missing, the worker embeds them)")

    offset = stack.worker_log.stat().st_size
    t = time.perf_counter()
    ls.connect_backend(client, pid, stack.url, extra_params={"targets": TARGETS})
    res["setup"]["connect_call_s"] = round(time.perf_counter() - t, 3)

    def ranked() -> dict | None:
        """The first status with the whole pool ranked: polled fast, because the next retrain
        (Label Studio's PROJECT_UPDATED after the backend configures the project) overwrites
        the status within a second."""
        st = store.status(pid)
        if int(float(st.get("pool_size", -1))) == len(rows) and "last_retrain_at" in st:
            return st
        stack.check_alive()
        return None

    status = wait_for(ranked, timeout, "the first ranking of the pool", every=0.05)
    m = httpx.get(f"{stack.url}/metrics", timeout=10).text
    if metric(m, "rarelabel_pool_size", {"project": str(pid)}) != len(rows):
        raise RuntimeError(f"/metrics disagrees with the status hash:\n{m}")
    res["setup"]["connect_to_first_ranking_s"] = round(time.perf_counter() - t, 3)
    text = log_slice(stack.worker_log, offset)
    sync = [m for m in SYNC_RE.finditer(text) if int(m[1]) == pid]
    if sync:
        m = sync[0]
        res["setup"]["first_sync"] = {
            "tasks": int(m[2]),
            "newly_embedded": int(m[3]),
            "labels": int(m[4]),
            "seconds": float(m[5]),
        }
    first = retrains_in(text, pid)
    res["setup"]["first_push"] = {
        "retrain_s": float(status.get("last_retrain_seconds", "nan")),
        "push_s": float(status.get("last_push_seconds", "nan")),
        "predictions_written": int(float(status.get("last_predictions_written", "0"))),
        "removed": first[0]["removed"] if first else None,
    }
    time.sleep(2.0)  # the follow-up retrain (PROJECT_UPDATED), for the record
    res["setup"]["retrains_logged"] = retrains_in(log_slice(stack.worker_log, offset), pid)
    log(
        f"first ranking after {res['setup']['connect_to_first_ranking_s']} s: "
        f"sync {res['setup'].get('first_sync')}, push {res['setup']['first_push']}"
    )
    return pid, truth, text_of


def queue_head(store: Store, pid: int, labelled: set[int]) -> int | None:
    """The task Label Studio should serve: lowest pushed score among unlabelled tasks."""
    pushed = {t: s for t, s in store.pushed(pid).items() if t not in labelled}
    return min(pushed, key=lambda t: (pushed[t], t)) if pushed else None


def annotate(
    stack: Stack, client, store: Store, pid: int, truth: dict[int, str], args, res: dict
) -> None:
    """Seed positives, then the annotator loop that measures annotation -> next task."""
    rng = np.random.default_rng(args.seed + 1)
    labelled: set[int] = set()
    t_seed = time.time()
    for target in TARGETS:
        pool = sorted(t for t, lab in truth.items() if lab == target)
        for tid in rng.choice(pool, N_SEEDS, replace=False):
            ls.create_annotation(client, int(tid), target, FROM_NAME, TO_NAME)
            labelled.add(int(tid))
    n_labels = len(labelled)

    def applied(expected: int, since: float) -> dict | None:
        st = store.status(pid)
        if (
            int(float(st.get("labels_seen", -1))) >= expected
            and float(st.get("last_retrain_at", 0)) > since
        ):
            return st
        return None

    t = time.perf_counter()
    wait_for(lambda: applied(n_labels, t_seed), 300, "the seed labels to be applied", 0.2)
    res["annotate"]["seeds"] = {"labels": n_labels, "applied_s": round(time.perf_counter() - t, 3)}
    log(f"{n_labels} seed labels applied")

    offset = stack.worker_log.stat().st_size
    t = time.perf_counter()
    served = ls.next_task(client, pid)
    head = queue_head(store, pid, labelled)
    res["annotate"]["first_next"] = {
        "seconds": round(time.perf_counter() - t, 3),
        "task": served and int(served["id"]),
        "head": head,
    }
    per_label: list[dict[str, Any]] = []
    for i in range(args.annotate):
        if served is None:
            log("Label Studio has no task left to serve; stopping the loop")
            break
        time.sleep(args.pause)  # the annotator reads the text: not counted
        tid = int(served["id"])
        expected = n_labels + (0 if tid in labelled else 1)
        t0_wall, t0 = time.time(), time.perf_counter()
        ls.create_annotation(client, tid, truth[tid], FROM_NAME, TO_NAME)
        t_created = time.perf_counter()
        labelled.add(tid)
        n_labels = len(labelled)
        try:
            st = wait_for(
                lambda e=expected, s=t0_wall: applied(e, s),
                args.label_timeout,
                f"label {i + 1} to be applied",
                every=0.02,
            )
        except TimeoutError as e:
            log(f"WARNING: {e}")
            st = None
        t_applied = time.perf_counter()
        head = queue_head(store, pid, labelled)
        served = ls.next_task(client, pid)
        t1 = time.perf_counter()
        got = served and int(served["id"])
        row = {
            "task": tid,
            "label": truth[tid],
            "latency_s": round(t1 - t0, 4) if st else None,
            "create_s": round(t_created - t0, 4),
            "wait_applied_s": round(t_applied - t_created, 4),
            "next_s": round(t1 - t_applied, 4),
            "retrain_s": st and float(st["last_retrain_seconds"]),
            "push_s": st and float(st["last_push_seconds"]),
            "predictions_written": st and int(float(st["last_predictions_written"])),
            "head": head,
            "served": got,
            "served_head": got is not None and got == head,
        }
        per_label.append(row)
        log(
            f"label {i + 1:>3}/{args.annotate} {truth[tid]:<22} latency "
            f"{row['latency_s']} s (create {row['create_s']}, wait {row['wait_applied_s']}, "
            f"next {row['next_s']}), retrain {row['retrain_s']} push {row['push_s']} "
            f"wrote {row['predictions_written']}, served head: {row['served_head']}"
        )
    res["annotate"]["per_label"] = per_label
    res["annotate"]["retrains_logged"] = retrains_in(log_slice(stack.worker_log, offset), pid)


def webhooks(stack: Stack, store: Store, pid: int, truth, text_of, args, res: dict) -> None:
    """N valid ANNOTATION_CREATED webhooks, each followed by a GET /health (baseline)."""
    rng = np.random.default_rng(args.seed + 2)
    labelled = set(store.labels(pid))
    candidates = sorted(t for t in truth if t not in labelled)
    tasks = rng.choice(candidates, args.webhooks, replace=len(candidates) < args.webhooks)
    offset = stack.worker_log.stat().st_size
    hook_ms: list[float] = []
    health_ms: list[float] = []
    bad = 0
    t_start = time.perf_counter()
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for i, tid in enumerate(int(t) for t in tasks):
            payload = {
                "action": "ANNOTATION_CREATED",
                "project": {"id": pid},
                "annotation": {
                    "id": FAKE_ANNOTATION_BASE + i,
                    "task": tid,
                    "result": ls.choices_result(truth[tid], FROM_NAME, TO_NAME),
                    "was_cancelled": False,
                },
                "task": {"id": tid, "data": {"text": text_of[tid]}},
            }
            t = time.perf_counter()
            resp = http.post("/webhook", json=payload)
            hook_ms.append((time.perf_counter() - t) * 1000)
            bad += resp.status_code != 200
            t = time.perf_counter()
            resp = http.get("/health")
            health_ms.append((time.perf_counter() - t) * 1000)
            bad += resp.status_code != 200
    res["webhook"]["send_s"] = round(time.perf_counter() - t_start, 3)
    res["webhook"]["non_200"] = bad
    res["webhook"]["webhook_ms"] = summary(hook_ms)
    res["webhook"]["health_ms"] = summary(health_ms)
    log(
        f"{args.webhooks} webhooks: p50 {pct(hook_ms, 50):.2f} ms p99 {pct(hook_ms, 99):.2f} ms "
        f"max {max(hook_ms):.2f} ms; /health p50 {pct(health_ms, 50):.2f} ms"
    )

    def drained() -> bool:
        stack.check_alive()
        m = httpx.get(f"{stack.url}/metrics", timeout=10).text
        ev = metric(m, "rarelabel_queue_depth", {"kind": "events"})
        jobs = metric(m, "rarelabel_queue_depth", {"kind": "jobs"})
        st = store.status(pid)
        return (
            ev == 0
            and jobs == 0
            and int(float(st.get("labels_seen", 0))) >= len(labelled) + len(set(tasks.tolist()))
        )

    t = time.perf_counter()
    try:
        wait_for(drained, args.drain_timeout, "the worker to absorb the webhooks", every=0.5)
        res["webhook"]["drain_after_send_s"] = round(time.perf_counter() - t, 3)
    except TimeoutError as e:
        log(f"WARNING: {e}")
        res["webhook"]["drain_after_send_s"] = None
    time.sleep(0.5)  # let the last log line land
    res["webhook"]["retrains_logged"] = retrains_in(log_slice(stack.worker_log, offset), pid)


# ---------------------------------------------------------------- report


def fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def finish(res: dict, args) -> None:
    """Derived figures and the table."""
    rows = res["annotate"].get("per_label", [])
    lat = [r["latency_s"] for r in rows if r["latency_s"] is not None]
    written = [r["predictions_written"] for r in rows if r["predictions_written"] is not None]
    retrain = [r["retrain_s"] for r in rows if r["retrain_s"] is not None]
    push = [r["push_s"] for r in rows if r["push_s"] is not None]
    qs = (50, 90)
    res["annotate"]["summary"] = {
        "latency_s": summary(lat, qs),
        "create_s": summary([r["create_s"] for r in rows], qs),
        "wait_applied_s": summary([r["wait_applied_s"] for r in rows], qs),
        "next_s": summary([r["next_s"] for r in rows], qs),
        "other_s": summary(
            [
                r["wait_applied_s"] - r["retrain_s"] - r["push_s"]
                for r in rows
                if r["retrain_s"] is not None
            ],
            qs,
        ),
        "retrain_s": summary(retrain, qs),
        "push_s": summary(push, qs),
        "predictions_written": summary(written, qs),
        "timeouts": sum(r["latency_s"] is None for r in rows),
        "served_head": sum(r["served_head"] for r in rows),
        "labels": len(rows),
        "targets_found": sum(r["label"] in TARGETS for r in rows),
    }
    s, w, a = res["setup"], res.get("webhook", {}), res["annotate"]["summary"]
    L: list[str] = []

    def line(name: str, value: str) -> None:
        L.append(f"  {name:<46}{value}")

    def q3(name: str, d: dict, keys: tuple[str, str, str], unit: str) -> None:
        line(name, "".join(f"{fmt(d[k], unit):>10}" for k in keys))

    L.append("")
    L.append(
        f"Service latency: {args.tasks} tasks (5 targets at {PREVALENCE:.1%} each), queue size "
        f"{args.queue_size}, {os.cpu_count()} cores, load average {res['load_start']} at start, "
        f"{res.get('load_end')} at end; code at {res['git']['commit']}"
        + (" + uncommitted changes" if res["git"]["dirty"] else "")
    )
    L.append("")
    L.append("Setup")
    line("Label Studio start (fresh DB, migrations)", fmt(s.get("ls_start_s"), " s", 1))
    line(
        f"Label Studio import of {args.tasks} tasks",
        f"{fmt(s.get('ls_import_s'), ' s', 1)} "
        f"(server {fmt(s.get('ls_import_server_s'), ' s', 1)})",
    )
    line(
        "vectors SQLite cache -> Redis cache",
        f"{s.get('vectors_copied')} copied, {s.get('vectors_missing')} missing, "
        f"{fmt(s.get('vectors_copy_s'), ' s', 1)}",
    )
    sync = s.get("first_sync") or {}
    line(
        "first-contact sync (worker log)",
        f"{fmt(sync.get('seconds'), ' s', 1)} ({sync.get('tasks')} tasks, "
        f"{sync.get('newly_embedded')} new to the pool)",
    )
    fp = s.get("first_push") or {}
    line(
        "first retrain / first push",
        f"{fmt(fp.get('retrain_s'), ' s')} / {fmt(fp.get('push_s'), ' s')}, "
        f"{fp.get('predictions_written')} predictions written",
    )
    line(
        "connect backend -> first ranking pushed", fmt(s.get("connect_to_first_ranking_s"), " s", 1)
    )
    L.append("")
    L.append(
        f"Annotation -> next GET /next reflecting the retrained ranking ({a['labels']} labels "
        f"after {res['annotate']['seeds']['labels']} seed positives; 1 s pause not counted)"
    )
    line("", "".join(f"{k:>10}" for k in ("p50", "p90", "max")))
    keys = ("p50", "p90", "max")
    q3("latency t1 - t0   [target p50 <= 2 s]", a["latency_s"], keys, " s")
    q3("  = create annotation (LS + its webhook)", a["create_s"], keys, " s")
    q3("  + wait until worker applied and pushed", a["wait_applied_s"], keys, " s")
    q3("  + GET /next", a["next_s"], keys, " s")
    q3("worker retrain (fit + rescore), per label", a["retrain_s"], keys, " s")
    q3("worker push to Label Studio, per label", a["push_s"], keys, " s")
    q3("wait - retrain - push (queueing, applying)", a["other_s"], keys, " s")
    d = a["predictions_written"]
    line(
        f"predictions written per retrain [<= {args.queue_size}]",
        f"median {fmt(d['p50'], '', 0)}, max {fmt(d['max'], '', 0)} (queue size {args.queue_size})",
    )
    removed = [x["removed"] for x in res["annotate"].get("retrains_logged", [])]
    if removed:
        line(
            "predictions removed per retrain (worker log)",
            f"median {statistics.median(removed):.0f}, max {max(removed)} "
            f"({len(removed)} retrains logged)",
        )
    line("/next served the head of the pushed queue", f"{a['served_head']}/{a['labels']}")
    line("labels not applied within --label-timeout", str(a["timeouts"]))
    line("rare targets among the served tasks", f"{a['targets_found']}/{a['labels']}")
    if w.get("webhook_ms"):
        L.append("")
        L.append(
            f"Webhook answer ({args.webhooks} valid ANNOTATION_CREATED, sequential, each followed "
            "by GET /health; worker busy)"
        )
        keys = ("p50", "p99", "max")
        line("", "".join(f"{k:>10}" for k in keys))
        q3("POST /webhook   [target p99 <= 100 ms]", w["webhook_ms"], keys, " ms")
        q3("GET /health (baseline)", w["health_ms"], keys, " ms")
        hw, hh = w["webhook_ms"], w["health_ms"]
        line("ratio webhook / health", "".join(f"{fmt(hw[k] / hh[k], 'x'):>10}" for k in keys))
        rl = w.get("retrains_logged", [])
        line("non-200 answers", str(w["non_200"]))
        line(
            "worker absorbing the burst",
            f"{len(rl)} retrains for {args.webhooks} events; "
            f"sent in {fmt(w.get('send_s'), ' s', 1)}, "
            f"drained {fmt(w.get('drain_after_send_s'), ' s', 1)} after the last one",
        )
    L.append("")
    L.append(f"wall time {res['wall_s']:.0f} s")
    res["table"] = "\n".join(L)
    print(res["table"], flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--annotate", type=int, default=30, help="labels timed after the seeds")
    p.add_argument("--webhooks", type=int, default=500)
    p.add_argument("--queue-size", type=int, default=100, help="RARELABEL_QUEUE_SIZE")
    p.add_argument("--pause", type=float, default=1.0, help="annotator pause between labels (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ready-timeout", type=float, default=1800, help="first ranking (s)")
    p.add_argument("--label-timeout", type=float, default=300, help="one label applied (s)")
    p.add_argument("--drain-timeout", type=float, default=600, help="webhook burst absorbed (s)")
    p.add_argument("--out", default="out/service/latency.json")
    p.add_argument("--keep-tmp", action="store_true", help="keep Label Studio's data dir")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_wall = time.perf_counter()
    res: dict[str, Any] = {
        "args": vars(args),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "load_start": load_avg(),
        "git": git_state(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "setup": {},
        "annotate": {},
        "webhook": {},
    }
    log(
        f"load average {res['load_start']} on {os.cpu_count()} cores; code at "
        f"{res['git']['commit']}" + (" (working tree modified)" if res["git"]["dirty"] else "")
    )
    rows = build_dataset(args.tasks, args.seed)
    r = connect(REDIS_URL)
    r.flushdb()
    store = Store(r)
    tmp = Path(tempfile.mkdtemp(prefix="rarelabel-latency-"))
    stack = Stack(tmp, out.parent, args.queue_size)
    error = None
    try:
        stack.start()
        res["setup"]["ls_start_s"] = round(stack.ls_start_s, 1)
        client = ls.make_client(stack.studio.url, stack.studio.token)
        pid, truth, text_of = setup_project(stack, client, store, rows, res, args.ready_timeout)
        annotate(stack, client, store, pid, truth, args, res)
        if args.webhooks:
            webhooks(stack, store, pid, truth, text_of, args, res)
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        res["error"] = error
        raise
    finally:
        res["load_end"] = load_avg()
        stack.stop()
        r.flushdb()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        res["wall_s"] = round(time.perf_counter() - t_wall, 1)
        if res["annotate"].get("seeds"):
            finish(res, args)
        out.write_text(json.dumps(res, indent=2, default=str) + "\n")
        log(
            f"wrote {out}; logs {stack.serve_log}, {stack.worker_log}, "
            f"{out.parent / 'label-studio.log'}" + (f"; error: {error}" if error else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
