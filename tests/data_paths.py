"""Where the tests' data lives: files inside the repository, nothing beside it."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# 7,781 short dbpedia14 rows, all 14 classes (tests/data/README.md: source, licence, sampling).
DBPEDIA_SAMPLE = DATA_DIR / "dbpedia14_sample.csv.gz"
