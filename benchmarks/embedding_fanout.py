"""Embedding a large import on N workers: the real RQ path, 1 worker against 2.

A project's backlog of dbpedia14 texts (nothing embedded, as after a big import) is fanned
out by `backend.embedder.fan_out` into chunk jobs on the embedding queue; real RQ workers
(`rq worker`, the job `backend.embedder.embed_chunk`) take them from a private Redis (the
embedded store's binary). Timed from the fan-out to an empty backlog, vector cache flushed
before each run, 1 and 2 workers alternated.

Each worker is limited to one thread (OMP_NUM_THREADS=1): on this 2-core machine that is
how "one worker per machine" can be measured at all, since one worker with two threads
already uses both cores (that row is printed too, for reference).

    python benchmarks/embedding_fanout.py                  # 20,000 texts, 2 repeats (~25 min)
    python benchmarks/embedding_fanout.py --tasks 4000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.embedded import start_store  # noqa: E402
from backend.embedder import embed_tasks, fan_out  # noqa: E402
from backend.queueing import EMBED_QUEUE  # noqa: E402
from backend.settings import resolve  # noqa: E402
from backend.store import Store, connect  # noqa: E402
from benchmarks.data_dir import DBPEDIA14  # noqa: E402
from model.data import read_csv  # noqa: E402

LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
PROJECT = 1


def start_workers(url: str, n: int, threads: int) -> list[subprocess.Popen]:
    env = {**os.environ, "REDIS_URL": url, "OMP_NUM_THREADS": str(threads)}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "rq.cli", "worker", "-w", "rq.worker.SimpleWorker"]
    cmd += ["--url", url, "-q", EMBED_QUEUE]
    return [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(n)
    ]


def one_run(url: str, texts: list[str], workers: int, threads: int) -> float:
    """Seconds from the fan-out to the last vector in the pool."""
    store = Store(connect(url))
    store.r.flushdb()  # no vector cached: every text is embedded
    cfg = resolve(PROJECT, LABEL_CONFIG, {"targets": ["Artist"]})
    store.save_config(cfg)
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)]
    embed_tasks(store, cfg, tasks, at_most=0)
    procs = start_workers(url, workers, threads)
    try:
        t0 = time.perf_counter()
        fan_out(store, PROJECT)
        while store.backlog_size(PROJECT):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(procs[0].stderr.read().decode()[-2000:])
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        assert store.pool_size(PROJECT) == len(texts), "a task was lost"
        return elapsed
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    texts = list(dict.fromkeys(read_csv(DBPEDIA14, "text", "label").texts))[: args.tasks]
    shapes = {"1 worker x 1 thread": (1, 1), "2 workers x 1 thread": (2, 1)}
    shapes["1 worker x 2 threads"] = (1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_store(Path(tmp))
        try:
            times: dict[str, list[float]] = {k: [] for k in shapes}
            for r in range(args.repeats):
                for name, (workers, threads) in shapes.items():
                    times[name].append(one_run(url, texts, workers, threads))
                    print(f"  repeat {r + 1}, {name}: {times[name][-1]:.1f} s", flush=True)
        finally:
            server.terminate()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{len(texts)} dbpedia14 texts, fan-out to empty backlog, median of {args.repeats}:")
    for name, t in med.items():
        print(f"  {name:<22}{t:8.1f} s{len(texts) / t:8.0f} texts/s")
    one, two = med["1 worker x 1 thread"], med["2 workers x 1 thread"]
    print(f"  speed-up, 2 workers over 1: {one / two:.2f}x")


if __name__ == "__main__":
    main()
