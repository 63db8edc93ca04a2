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
    s.add_argument("--strategy", default="until_dry")
    s.add_argument("--f-a", dest="f_a", type=float, default=100.0)
    s.add_argument("--C", type=float, default=10.0)
    s.add_argument("--out", default="out/simulate")
    s.set_defaults(func=_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from model.data import DataError

    try:
        args.func(args)
    except (DataError, ValueError, KeyError) as e:
        print(f"rarelabel {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
