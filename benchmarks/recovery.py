"""Recovery times: how long the backend takes to converge to Label Studio's state after a fault.

Everything runs on this machine through tests/stack.py: one throw-away Label Studio, and per
stack a private Redis, `rarelabel serve` and `rarelabel worker`, on a project of 300 short
dbpedia14 texts (Athlete at 4%). The faults are those of tests/test_faults.py:

- worker kill -9: while a job runs; 2 annotations; the worker starts again
- Label Studio restart: stopped right after an annotation (before the push), down 5 s
- Redis restart with AOF (data kept) / without AOF (all data lost); an annotation made while
  Redis is down (its webhook is lost); and with AOF, down 10 s from the middle of a job
- lost webhooks: web process stopped; 2 annotations, 1 updated, 1 deleted; web started again
- tasks deleted at the head: the 3 unlabelled tasks wanted first deleted, then one annotation
- labelled task deleted: a task holding an annotation is deleted (Label Studio sends only
  TASKS_DELETED); its label must leave the backend

For each, the seconds from the fault's end (the broken part is back; for the deletion, the
annotation after it) to convergence (the backend's labels equal Label Studio's, no event
pending, a retrain on all of them finished; after a Redis loss also the targets and a fresh
queue), over --repeats runs, as a median beside the baseline measured in the same run: the
seconds from one annotation to its retrain pushed into Label Studio in normal operation.

    python3 benchmarks/recovery.py                  # the backend's default intervals
    python3 benchmarks/recovery.py --fast --repeats 1    # the tests' intervals (2/10/10 s)

The intervals are the worker's RARELABEL_SWEEP_SECONDS, RARELABEL_RECONCILE_SECONDS and
RARELABEL_LOCK_SECONDS; those not set by a flag keep the backend's defaults (read from
backend/settings.py: reconciliation 60 s, lock 30 s, the sweep 15 s at the time of writing). Each
fault may take 4 times the longest interval (at least 120 s, or --bound) before it counts as
not converged. Figures go to stdout (a table) and to --out (JSON); the logs of every stack stay
in the temporary directory printed at the start (removed at the end unless --keep-tmp).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import fmt as cell  # noqa: E402
from benchmarks.harness import log, write_json  # noqa: E402
from tests.ls_harness import start_label_studio  # noqa: E402
from tests.stack import (  # noqa: E402
    FAST_INTERVALS,
    Project,
    Recovery,
    Stack,
    baseline_annotation_to_push,
    dataset,
    fault_head_deleted,
    fault_label_studio_restart,
    fault_labelled_task_deleted,
    fault_lost_webhooks,
    fault_redis_restart,
    fault_worker_kill,
)

INTERVAL_KEYS = ["RARELABEL_SWEEP_SECONDS", "RARELABEL_RECONCILE_SECONDS", "RARELABEL_LOCK_SECONDS"]
# redis-during-job last in a run: when it kills the worker, the worker started again
# reconciles at once, which would flatter the faults measured right after it.
FAULTS = [
    "worker-kill",
    "ls-restart",
    "redis-aof",
    "lost-webhooks",
    "head-deleted",
    "labelled-deleted",
    "redis-during-job",
    "redis-no-aof",
]


def backend_defaults() -> dict[str, float]:
    """The intervals the backend uses when none is set (read from backend/settings.py)."""
    try:
        from backend import sweep
        from backend.settings import lock_seconds

        saved = {k: os.environ.pop(k) for k in INTERVAL_KEYS if k in os.environ}
        try:
            values = [sweep.sweep_seconds(), sweep.reconcile_seconds(), lock_seconds()]
        finally:
            os.environ.update(saved)
    except (ImportError, AttributeError):  # a backend without them: the documented defaults
        values = [60.0, 60.0, 30.0]
    return dict(zip(INTERVAL_KEYS, values, strict=True))


def run_fault(name: str, st: Stack, p: Project, bound: float) -> Recovery:
    if name == "worker-kill":
        return fault_worker_kill(st, p, bound)
    if name == "ls-restart":
        return fault_label_studio_restart(st, p, bound)[0]
    if name in ("redis-aof", "redis-no-aof"):
        return fault_redis_restart(st, p, bound)
    if name == "redis-during-job":
        return fault_redis_restart(st, p, bound, outage=10.0, during_job=True)
    if name == "lost-webhooks":
        return fault_lost_webhooks(st, p, bound)
    if name == "head-deleted":
        return fault_head_deleted(st, p, bound)[0]
    if name == "labelled-deleted":
        return fault_labelled_task_deleted(st, p, bound)[0]
    raise ValueError(f"unknown fault {name!r}")


def revive(st: Stack) -> None:
    """Start again what died (a failed recovery must not spoil the following runs)."""
    for name, code in st.backend.died().items():
        log(f"  {name} had exited with code {code}: starting it again")
        if name == "serve":
            st.backend.start_serve()
        else:
            st.backend.start_worker()


def measure(
    st: Stack, p: Project, faults: list[str], repeats: int, bound: float, results: dict
) -> None:
    """Per repeat: one baseline annotation, then each fault; a fault that does not converge
    within ``bound`` (or whose backend process dies) is recorded as failed and the run goes
    on with the dead process started again."""
    for run in range(repeats):
        try:
            seconds = baseline_annotation_to_push(st, p, bound)
            results["baseline"].append(seconds)
            log(f"run {run + 1}: baseline annotation -> push {seconds:.2f} s")
        except (TimeoutError, AssertionError) as e:
            log(f"run {run + 1}: baseline did not converge: {str(e).splitlines()[0]}")
            revive(st)
        for name in faults:
            try:
                recovery = run_fault(name, st, p, bound)
            except (TimeoutError, AssertionError) as e:
                log(f"run {run + 1}: {name} did not converge: {str(e).splitlines()[0]}")
                results[name].append(None)
                revive(st)
                continue
            results[name].append((recovery.seconds, recovery.since_change))
            log(f"run {run + 1}: {recovery}")


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None) -> str:
    return cell(value, ".1f")


def table(results: dict, faults: list[str]) -> str:
    base = median(results["baseline"])
    lines = [
        f"{'fault':<22} {'runs':>4} {'failed':>6} {'median s':>9} {'min':>6} {'max':>6} "
        f"{'since change':>12} {'baseline s':>10}"
    ]
    for name in faults:
        ok = [r for r in results[name] if r is not None]
        ends = [r[0] for r in ok]
        changes = [r[1] for r in ok]
        failed = len(results[name]) - len(ok)
        lines.append(
            f"{name:<22} {len(results[name]):>4} {failed:>6} {fmt(median(ends)):>9} "
            f"{fmt(min(ends) if ends else None):>6} {fmt(max(ends) if ends else None):>6} "
            f"{fmt(median(changes)):>12} {fmt(base):>10}"
        )
    lines.append(
        f"baseline: annotation -> its retrain pushed, median of {len(results['baseline'])}: "
        f"{fmt(base)} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated: {FAULTS}")
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--fast", action="store_true", help="the tests' intervals (2/10/10 s)")
    ap.add_argument("--sweep-seconds", default=None, help="RARELABEL_SWEEP_SECONDS")
    ap.add_argument("--reconcile-seconds", default=None, help="RARELABEL_RECONCILE_SECONDS")
    ap.add_argument("--lock-seconds", default=None, help="RARELABEL_LOCK_SECONDS")
    ap.add_argument(
        "--bound", type=float, default=None, help="seconds a fault may take (4 intervals, >= 120)"
    )
    ap.add_argument("--out", default="out/recovery/recovery.json")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the logs and data dirs")
    args = ap.parse_args(argv)

    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        ap.error(f"unknown faults {sorted(unknown)}; choose among {FAULTS}")
    intervals = dict(FAST_INTERVALS) if args.fast else {}
    for flag, key in [
        (args.sweep_seconds, "RARELABEL_SWEEP_SECONDS"),
        (args.reconcile_seconds, "RARELABEL_RECONCILE_SECONDS"),
        (args.lock_seconds, "RARELABEL_LOCK_SECONDS"),
    ]:
        if flag is not None:
            intervals[key] = str(flag)
    effective = {**backend_defaults(), **{k: float(v) for k, v in intervals.items()}}
    bound = args.bound or max(120.0, 4 * max(effective.values()))
    shown = ", ".join(
        f"{k.removeprefix('RARELABEL_').lower()} {v:g}" + ("" if k in intervals else " (default)")
        for k, v in effective.items()
    )
    rows = dataset(n_tasks=args.tasks, n_target=max(1, round(0.04 * args.tasks)))

    tmp = Path(tempfile.mkdtemp(prefix="rarelabel-recovery-"))
    log(f"intervals {shown}; bound {bound:.0f} s; {args.repeats} repeats; logs in {tmp}")
    results: dict[str, list] = {"baseline": [], **{f: [] for f in faults}}
    started = time.time()
    studio = start_label_studio(tmp / "label-studio")
    try:
        # one stack with AOF for every fault but the data loss, then one without AOF for it
        groups: list[tuple[str, bool, list[str]]] = [
            ("aof", True, [f for f in faults if f != "redis-no-aof"]),
            ("no-aof", False, [f for f in faults if f == "redis-no-aof"]),
        ]
        for label, aof, group in groups:
            if not group:
                continue
            with Stack(studio, tmp / label, aof=aof, intervals=intervals) as st:
                p = st.create_project(f"recovery {label}", rows)
                for _ in range(3):  # seeds: lost-webhooks changes earlier annotations
                    st.label_next(p)
                measure(st, p, group, args.repeats, bound, results)
    finally:
        studio.stop()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(table(results, faults))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "intervals": effective,
        "intervals_set": intervals,
        "bound_seconds": bound,
        "repeats": args.repeats,
        "tasks": args.tasks,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_seconds": round(time.time() - started, 1),
        "baseline_seconds": results["baseline"],
        "faults": {
            f: [None if r is None else {"seconds": r[0], "since_change": r[1]} for r in results[f]]
            for f in faults
        },
    }
    write_json(out, report)
    log(f"wrote {out}")
    return 0 if all(r is not None for f in faults for r in results[f]) else 1


if __name__ == "__main__":
    sys.exit(main())
