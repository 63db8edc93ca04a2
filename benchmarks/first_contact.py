"""From "Connect model" to the first ranking, with a real Label Studio and `rarelabel serve`
alone (the embedded default), on dbpedia14 texts.

    python benchmarks/first_contact.py --tasks 3000
    python benchmarks/first_contact.py --tasks 20000 --busy 2   # two busy processes beside it

It times, from the moment the ML backend is connected: the first ranking pushed (and the pool
it covered), the first 100 tasks Label Studio serves coming from that queue (its `/next` holds
a current-version prediction), and the whole pool embedded. `--busy N` starts N processes
spinning on the CPU for the whole run, as a loaded machine would have.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from rq import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import labelstudio as ls  # noqa: E402
from backend.store import Store, connect  # noqa: E402
from benchmarks.data_dir import DBPEDIA14  # noqa: E402
from benchmarks.harness import csv_rows, write_json  # noqa: E402
from model.embedding import Embedder, model_dir  # noqa: E402
from tests.ls_harness import start_label_studio, wait_for  # noqa: E402
from tests.serve_harness import start_serve  # noqa: E402


def spin() -> None:
    while True:
        pass


def texts(n: int) -> list[str]:
    return [r["text"] for r in csv_rows(DBPEDIA14) if r["text"].strip()][:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--busy", type=int, default=0, help="CPU-bound processes beside it")
    p.add_argument("--workers", type=int, help="RARELABEL_EMBEDDED_WORKERS (default: per core)")
    p.add_argument("--settle", type=float, default=10, help="s for the worker to load its model")
    p.add_argument("--out", default="out/first_contact.json")
    args = p.parse_args()
    Embedder().encode(["made once per machine"])  # the int8 export, into model_dir()
    busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        studio = start_label_studio(tmp)
        procs = []
        env = {"RARELABEL_CACHE_DIR": str(tmp / "cache"), "REDIS_URL": None}
        # a backend that has run before has its int8 export: made once, outside the timing
        env["RARELABEL_MODEL_DIR"] = str(model_dir())
        env.update(LABEL_STUDIO_URL=studio.url, LABEL_STUDIO_API_KEY=studio.token)
        if args.workers:
            env["RARELABEL_EMBEDDED_WORKERS"] = str(args.workers)
        try:
            client = ls.make_client(studio.url, studio.token)
            project = client.projects.create(
                title="first contact", label_config=(ROOT / "label_config.xml").read_text()
            )
            pid = int(project.id)
            client.projects.import_tasks(pid, request=[{"text": t} for t in texts(args.tasks)])
            proc, url = start_serve(env, tmp / "serve.log")
            procs.append(proc)
            store = Store(connect(f"unix://{tmp}/cache/store/redis.sock?db=0"))
            # a backend that has been running: its worker listens and its model is loaded
            n_workers = args.workers or len(os.sched_getaffinity(0))
            wait_for(lambda: Worker.count(connection=store.r) >= n_workers, 60, "the workers")
            time.sleep(args.settle)
            for b in busy:
                b.start()
            t0 = time.monotonic()
            ls.connect_backend(client, pid, url, extra_params={"targets": ["Artist"]})

            def ranked() -> int | None:
                st = store.status(pid)
                return int(st["pool_size"]) if "last_retrain_at" in st else None

            first_pool = wait_for(ranked, 1800, "the first ranking", every=0.1)
            first = time.monotonic() - t0

            def served() -> bool:  # Label Studio's next task is one of the pushed queue's
                task = ls.next_task(client, pid)
                return task is not None and int(task["id"]) in store.pushed(pid)

            wait_for(served, 600, "Label Studio serving from the queue", every=0.2)
            serving = time.monotonic() - t0
            wait_for(
                lambda: store.backlog_size(pid) == 0 and ranked() == args.tasks,
                7200,
                "the whole pool",
                every=1,
            )
            whole = time.monotonic() - t0
        finally:
            for b in busy:
                b.terminate()
            for proc in procs:
                proc.terminate()
                proc.wait(30)
            studio.stop()
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            if (tmp / "serve.log").exists():  # the backend's log, beside the figures
                Path(args.out).with_suffix(".log").write_bytes((tmp / "serve.log").read_bytes())
    row = {
        "tasks": args.tasks,
        "busy": args.busy,
        "workers": n_workers,
        "first_ranking_s": round(first, 1),
        "first_ranking_pool": first_pool,
        "label_studio_serving_s": round(serving, 1),
        "whole_pool_s": round(whole, 1),
    }
    print(
        "| tasks | busy | workers | first ranking | on tasks | LS serves the queue | whole pool |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.tasks} | {args.busy} | {row['workers']} | {row['first_ranking_s']} s | "
        f"{first_pool} | "
        f"{row['label_studio_serving_s']} s | {row['whole_pool_s']} s |"
    )
    write_json(Path(args.out), row)


if __name__ == "__main__":
    main()
