"""Make tests/data/dbpedia14_sample.csv.gz, the tests' small copy of dbpedia14 (see README.md).

    python tests/data/make_sample.py [SOURCE] [--out OUT]

SOURCE defaults to ../shared/data/dbpedia14/dbpedia14.csv.gz beside the repository. From each
class it keeps a fixed-seed random FRACTION of the rows whose text is non-empty and at most
MAX_TEXT_CHARS long, so the classes keep their relative sizes; the rows are written verbatim
and in the source's order (ascending id). Same source, same bytes (gzip mtime 0).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "dbpedia14" / "dbpedia14.csv.gz"
DEFAULT_OUT = Path(__file__).resolve().parent / "dbpedia14_sample.csv.gz"
SEED = 20240601
FRACTION = 0.3
MAX_TEXT_CHARS = 300
COLUMNS = ["id", "label", "text"]


def sample(rows: list[dict[str, str]], seed: int = SEED) -> list[dict[str, str]]:
    """Per label, round(FRACTION * eligible rows) of its eligible rows; source order kept."""
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r["text"].strip() and len(r["text"]) <= MAX_TEXT_CHARS:
            by_label.setdefault(r["label"], []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        keep += [idx[j] for j in rng.choice(len(idx), round(FRACTION * len(idx)), replace=False)]
    return [rows[i] for i in sorted(keep)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if not args.source.is_file():
        ap.error(f"{args.source}: no such file (give the path of dbpedia14.csv.gz)")
    csv.field_size_limit(sys.maxsize)
    with gzip.open(args.source, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            ap.error(f"{args.source}: columns {reader.fieldnames}, expected {COLUMNS}")
        rows = list(reader)
    kept = sample(rows)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(kept)
    args.out.write_bytes(gzip.compress(buf.getvalue().encode("utf-8"), 9, mtime=0))
    counts: dict[str, int] = {}
    for r in kept:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    print(f"{args.out}: {len(kept)} of {len(rows)} rows, {args.out.stat().st_size} bytes")
    for label, n in sorted(counts.items()):
        print(f"  {label:24s} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
