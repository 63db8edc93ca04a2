"""The web app under load and under garbage, as a real `rarelabel serve` process on Redis.

    python benchmarks/http_robustness.py                 # 1,000 webhooks in 10 s; 10,000 fuzzed
    python benchmarks/http_robustness.py --fuzz 2000     # a shorter fuzz

1. Webhooks: N valid ANNOTATION_CREATED webhooks paced over T seconds, each followed by a
   GET /health (the baseline, same moment, same load); p50/p99 of both and their ratio.
   No worker runs: the events are recorded and jobs queued, which is all /webhook does.
2. Fuzz: bodies drawn by hypothesis from tests/test_fuzz.py's strategies (declared shapes
   with fields replaced by any JSON, arbitrary JSON, bytes), POSTed to every endpoint; counts
   the answers by status class. The target is no 5xx.

Redis DB 12 is flushed at start and end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.store import connect  # noqa: E402
from benchmarks.harness import write_json  # noqa: E402
from tests.serve_harness import start_serve  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"


def webhook(i: int) -> dict:
    result = [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["Artist"]},
        }
    ]
    return {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 1},
        "annotation": {"id": i, "task": i, "result": result, "updated_at": "2026-12-01T10:00:00Z"},
        "task": {"id": i, "data": {"text": f"text {i}"}},
    }


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def burst(http: httpx.Client, url: str, n: int, seconds: float) -> dict:
    hook, health, statuses = [], [], Counter()
    start = time.perf_counter()
    for i in range(n):
        wait = start + i * seconds / n - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        t0 = time.perf_counter()
        r = http.post(f"{url}/webhook", json=webhook(i))
        hook.append(time.perf_counter() - t0)
        statuses[r.status_code] += 1
        t0 = time.perf_counter()
        http.get(f"{url}/health")
        health.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    row = {"n": n, "elapsed_s": round(elapsed, 2), "statuses": dict(statuses)}
    for name, xs in (("webhook", hook), ("health", health)):
        row[f"{name}_p50_ms"] = round(1000 * statistics.median(xs), 2)
        row[f"{name}_p99_ms"] = round(1000 * pct(xs, 99), 2)
    row["p99_ratio"] = round(row["webhook_p99_ms"] / row["health_p99_ms"], 2)
    return row


def fuzz(http: httpx.Client, url: str, n: int) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.test_fuzz import BODIES, any_json

    counts: Counter = Counter()
    worst: list[str] = []
    per_path = max(1, n // len(BODIES))

    def run(path: str, shaped) -> None:
        bodies = shaped.map(lambda b: json.dumps(b).encode())
        bodies |= any_json.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64)

        @settings(
            max_examples=per_path,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(bodies)
        def send(content: bytes) -> None:
            r = http.post(url + path, content=content, headers={"content-type": "application/json"})
            counts[f"{r.status_code // 100}xx"] += 1
            if r.status_code >= 500 and len(worst) < 5:
                worst.append(f"{path} {content[:200]!r} -> {r.status_code} {r.text[:200]}")

        send()

    for path, shaped in BODIES.items():
        run(path, shaped)
    return {"requests": sum(counts.values()), "by_class": dict(counts), "5xx_examples": worst}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--webhooks", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fuzz", type=int, default=10000)
    p.add_argument("--out", default="out/http_robustness.json")
    args = p.parse_args()
    r = connect(REDIS_URL)
    r.flushdb()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"REDIS_URL": REDIS_URL, "BASIC_AUTH_USER": None}
        proc, url = start_serve(env, Path(tmp) / "serve.log")
        try:
            with httpx.Client(timeout=10) as http:
                result = {"burst": burst(http, url, args.webhooks, args.seconds)}
                recorded = connect(REDIS_URL).llen("rl:1:events")
                result["burst"]["events_recorded"] = recorded
                t0 = time.perf_counter()
                result["fuzz"] = fuzz(http, url, args.fuzz)
                result["fuzz"]["seconds"] = round(time.perf_counter() - t0, 1)
        finally:
            proc.terminate()
            proc.wait(20)
            r.flushdb()
    b, f = result["burst"], result["fuzz"]
    print(
        f"webhooks: {b['n']} in {b['elapsed_s']} s, statuses {b['statuses']}, "
        f"{b['events_recorded']} events recorded"
    )
    print("| | p50 ms | p99 ms |\n|---|---|---|")
    print(f"| /webhook | {b['webhook_p50_ms']} | {b['webhook_p99_ms']} |")
    print(f"| /health (same run) | {b['health_p50_ms']} | {b['health_p99_ms']} |")
    print(f"p99 ratio webhook / health: {b['p99_ratio']}")
    print(f"fuzz: {f['requests']} requests in {f['seconds']} s, by status class {f['by_class']}")
    for line in f["5xx_examples"]:
        print("  5xx:", line)
    write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
