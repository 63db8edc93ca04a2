"""`rarelabel`: the service (serve, worker) and the offline tools (simulate)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _simulate(args: argparse.Namespace) -> None:
    from backend.reports import progress_bars, pyplot, simulation_table, write_simulation
    from model.prioritiser import RankerConfig
    from model.simulate import simulate_csv

    given = {k: getattr(args, k) for k in ("f_a", "strategy", "C") if getattr(args, k) is not None}
    if args.view_choice:
        given["view_choice"] = True
    config = RankerConfig(**given, random_state=args.random_state)
    pyplot()
    rep = simulate_csv(
        args.data,
        args.target,
        args.budget,
        text_column=args.text_column,
        label_column=args.label_column,
        prevalence=args.prevalence,
        initial=args.initial_positives,
        random_state=args.random_state,
        test=args.test,
        config=config,
        audit_rate=args.audit_rate,
        progress=progress_bars(args.budget),
    )
    write_simulation(rep, Path(args.out))
    print(simulation_table(rep))
    print(f"wrote {args.out}/curve.json, {args.out}/curve.png and {args.out}/estimate.png")


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
    """With REDIS_URL: the web app alone (workers run beside it, on any machine). Without:
    the whole backend, with an embedded store and its own worker (backend.embedded)."""
    import uvicorn

    from backend.settings import setting

    if setting("redis_url") is None:
        from backend.embedded import EmbeddedStoreError, start

        try:
            start()
        except EmbeddedStoreError as e:
            raise SystemExit(f"rarelabel serve: {e}") from None
    _redis_or_exit()
    uvicorn.run(
        "backend.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
    )


def _worker(args: argparse.Namespace) -> None:
    """A non-forking RQ worker (the embedding model and warm state stay loaded between jobs)
    with RQ's scheduler (delayed retries) and the sweeping thread (backend.sweep).

    RQ's worker waits out a Redis outage while idle but quits on some errors after one (a
    restarted Redis has lost the worker's registration); it is started again, so one
    `rarelabel worker` lives through any outage."""
    import threading
    import time

    from redis.exceptions import RedisError
    from rq import SimpleWorker

    from backend.queueing import QUEUES
    from backend.settings import setting
    from backend.sweep import run_sweeps

    if setting("redis_url") is None:
        raise SystemExit(
            "rarelabel worker: set REDIS_URL to the Redis the web app uses "
            "(`rarelabel serve` without REDIS_URL runs its own worker)"
        )
    r = _redis_or_exit()
    stop = threading.Event()
    from backend.embedder import embedder

    # load the model now, not on the first contact's clock (seconds on 2 cores)
    threading.Thread(target=embedder().warm_up, daemon=True, name="warm-up").start()
    if not args.burst:
        threading.Thread(target=run_sweeps, args=(stop,), daemon=True, name="sweep").start()
    try:
        while True:
            worker = None
            try:
                worker = SimpleWorker(QUEUES, connection=r)  # registers: needs Redis too
                worker.work(with_scheduler=True, burst=args.burst)
            except RedisError as e:
                logging.getLogger("rarelabel.worker").warning("Redis lost (%s); restarting", e)
            if args.burst or (worker is not None and worker._stop_requested):
                return
            time.sleep(2)
    finally:
        stop.set()


def _retain(args: argparse.Namespace) -> None:
    from backend.reports import retention_table
    from model.retention import retain_file

    rep = retain_file(
        args.export,
        args.out,
        args.ratio,
        default=args.default,
        random_state=args.random_state,
        label_column=args.label_column,
        text_column=args.text_column,
        adaptive=args.adaptive,
    )
    if rep.adaptive_cap is not None:
        print(f"adaptive: every label capped at {rep.adaptive_cap} rows (share <= {args.adaptive})")
    print(retention_table(rep))
    if rep.skipped:
        print(f"skipped {rep.skipped} unlabelled {'tasks' if rep.kind != 'csv' else 'rows'}")
    print(f"wrote {args.out} ({sum(rep.after.values())} rows)")


def _screen(args: argparse.Namespace) -> None:
    from backend.reports import pyplot, screen_table, write_screen
    from model.data import DataError
    from model.screening import screen_csv

    try:
        threshold, seed = float(args.threshold), int(args.random_state)
    except ValueError:
        raise DataError(
            f"--threshold must be a number and --random-state an integer, got "
            f"{args.threshold!r} and {args.random_state!r}"
        ) from None
    pyplot()
    rep = screen_csv(
        args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        method=args.method,
        threshold=threshold,
        random_state=seed,
    )
    write_screen(rep, Path(args.out))
    print(screen_table(rep))
    print(f"wrote {args.out}/screen.csv and {args.out}/rarity_hist.png")


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
    # the ranker's own defaults (model.prioritiser.RankerConfig) where not given
    s.add_argument("--strategy", help="positive, adaptive, margin or information_density")
    s.add_argument("--f-a", dest="f_a", type=float, help="pseudo-negatives per label")
    s.add_argument("--C", type=float, help="inverse regularisation of the linear model")
    s.add_argument(
        "--view-choice",
        action="store_true",
        help="rank on the embedding with and without the lexical columns, the labels choosing",
    )
    s.add_argument(
        "--audit-rate",
        type=float,
        default=0.0,
        help="share of labels drawn at random for the estimate (e.g. 0.05)",
    )
    s.add_argument("--out", default="out/simulate")
    s.set_defaults(func=_simulate)

    s = sub.add_parser("retain", help="per-label retention ratios: build a training set")
    s.add_argument("export", help="Label Studio JSON export, or CSV/CSV.gz with a label column")
    s.add_argument(
        "--ratio",
        action="append",
        metavar="LABEL=FRACTION",
        help="keep this fraction of LABEL's rows (repeatable)",
    )
    s.add_argument("--default", default=None, help="fraction for labels not named (1.0)")
    s.add_argument(
        "--adaptive",
        default=None,
        metavar="SHARE",
        help="compute the fractions: no label above SHARE of the kept rows",
    )
    s.add_argument("--random-state", default="0")
    s.add_argument("--label-column", default="label")
    s.add_argument("--text-column", default="text")
    s.add_argument("--out", required=True, help="output file (same format; .gz compresses)")
    s.set_defaults(func=_retain)

    s = sub.add_parser("screen", help="score a CSV's texts by unusualness (outlier screen)")
    s.add_argument("data", help="CSV or CSV.gz with a text column")
    s.add_argument("--text-column", default="text")
    s.add_argument("--label-column", default=None, help="optional: per-label table (evaluation)")
    s.add_argument("--method", default="autoencoder", help="autoencoder, lof or iforest")
    s.add_argument(
        "--threshold", default="0.9", help="flag rarity above it (0.9: rarer than 90%% of the pool)"
    )
    s.add_argument("--random-state", default="0")
    s.add_argument("--out", default="out/screen")
    s.set_defaults(func=_screen)

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
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)  # "Loading model..."
    from model.data import DataError

    try:
        args.func(args)
    except (DataError, ValueError, KeyError, OSError) as e:
        print(f"rarelabel {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
