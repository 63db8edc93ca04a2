"""`rarelabel`: the service (serve, worker) and the offline tools (simulate)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _simulate(args: argparse.Namespace) -> None:
    from model.prioritiser import RankerConfig
    from model.simulate import format_table, simulate_csv, write_outputs

    config = RankerConfig(
        f_a=args.f_a, strategy=args.strategy, C=args.C, random_state=args.random_state
    )
    rep = simulate_csv(
        args.data, args.target, args.budget,
        text_column=args.text_column, label_column=args.label_column,
        prevalence=args.prevalence, initial=args.initial_positives,
        random_state=args.random_state, test=args.test, config=config,
    )  # fmt: skip
    write_outputs(rep, Path(args.out))
    print(format_table(rep))
    print(f"wrote {args.out}/curve.json and {args.out}/curve.png")


def _redis_or_exit():
    from backend.settings import redis_url
    from backend.store import connect

    r = connect(redis_url())
    try:
        r.ping()
    except Exception as e:  # noqa: BLE001 - any failure to reach Redis is reported the same way
        raise SystemExit(
            f"rarelabel: Redis is not reachable at {redis_url()} ({e}). The backend keeps its "
            "state and jobs in Redis: start one (redis-server) or set REDIS_URL."
        ) from None
    return r


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    _redis_or_exit()
    uvicorn.run("backend.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="info")  # fmt: skip


def _worker(args: argparse.Namespace) -> None:
    """A non-forking RQ worker: the embedding model and warm rankers stay loaded between jobs."""
    from rq import SimpleWorker

    from backend.jobs import QUEUE

    r = _redis_or_exit()
    SimpleWorker([QUEUE], connection=r).work(with_scheduler=False, burst=args.burst)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rarelabel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="replay a labelled CSV with an oracle annotator")
    s.add_argument("data", help="CSV or CSV.gz with a text and a label column")
    s.add_argument("--text-column", default="text")
    s.add_argument("--label-column", default="label")
    s.add_argument("--target", action="append", required=True, help="a rare label (repeatable)")
    s.add_argument("--prevalence", type=float, default=None, help="share of the pool per target")
    s.add_argument("--budget", type=int, default=300)
    s.add_argument("--initial-positives", type=int, default=5)
    s.add_argument("--random-state", type=int, default=0)
    s.add_argument("--test", default=None, help="held-out CSV for the final classifiers' F1")
    s.add_argument("--strategy", default="positive", help="positive, adaptive or margin")
    s.add_argument("--f-a", dest="f_a", type=float, default=100.0)
    s.add_argument("--C", type=float, default=10.0)
    s.add_argument("--out", default="out/simulate")
    s.set_defaults(func=_simulate)

    s = sub.add_parser("serve", help="the ML backend web app (Label Studio connects to it)")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=9090)
    s.add_argument("--workers", type=int, default=1, help="web processes")
    s.set_defaults(func=_serve)

    s = sub.add_parser("worker", help="a job worker: applies events, retrains, pushes scores")
    s.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    s.set_defaults(func=_worker)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from model.data import DataError

    try:
        args.func(args)
    except (DataError, ValueError, KeyError, OSError) as e:
        print(f"rarelabel {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
