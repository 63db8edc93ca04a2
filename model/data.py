"""Reading labelled text files and building simulated rare-class pools.

Errors here are `DataError`: the command line prints them as one line and exits non-zero.
"""

from __future__ import annotations

import csv
import gzip
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input a user can fix: the message names the problem."""


@dataclass
class Dataset:
    texts: list[str]
    labels: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: np.ndarray) -> Dataset:
        return Dataset(
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows],
            [self.ids[i] for i in rows],
        )


def _open(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8", newline="")
        if path.suffix == ".gz"
        else open(path, encoding="utf-8", newline="")
    )


def read_csv(
    path: str | Path, text_column: str = "text", label_column: str | None = "label"
) -> Dataset:
    """Read a CSV (optionally .gz); every text must be a non-empty string."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    csv.field_size_limit(sys.maxsize)
    try:
        with _open(path) as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for col in (text_column, label_column):
                if col is not None and col not in columns:
                    raise DataError(f"{path}: no column {col!r} (columns: {', '.join(columns)})")
            rows = list(reader)
    except (UnicodeDecodeError, gzip.BadGzipFile, csv.Error, OSError) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    texts, labels, ids = [], [], []
    for n, row in enumerate(rows, start=2):
        text = row.get(text_column)
        if text is None or not text.strip():
            raise DataError(f"{path}:{n}: empty text in column {text_column!r}")
        texts.append(text)
        labels.append((row.get(label_column) or "").strip() if label_column else "")
        ids.append(row.get("id") or str(n - 2))
    return Dataset(texts, labels, ids)


def check_targets(data: Dataset, targets: list[str]) -> None:
    known = sorted(set(data.labels))
    for t in targets:
        if t not in known:
            raise DataError(f"unknown target {t!r}; labels in the file: {', '.join(known)}")


def build_pool(
    data: Dataset, targets: list[str], prevalence: float | None, rng: np.random.Generator
) -> np.ndarray:
    """Rows of a pool in which each target makes up `prevalence` of the whole.

    Every row of the other labels is kept, and just enough rows of each target; without
    a prevalence the file is used as it is. The rows come back shuffled.
    """
    check_targets(data, targets)
    labels = np.array(data.labels)
    if prevalence is None:
        return rng.permutation(len(data))
    if not 0 < prevalence < 1 or prevalence * len(targets) >= 1:
        raise DataError(f"prevalence must be in (0, 1/{len(targets)}), got {prevalence}")
    is_target = np.isin(labels, targets)
    others = np.flatnonzero(~is_target)
    per_target = int(round(prevalence * len(others) / (1 - prevalence * len(targets))))
    chosen = [others]
    for t in targets:
        rows = np.flatnonzero(labels == t)
        if len(rows) < per_target:
            raise DataError(f"target {t!r} has {len(rows)} rows; prevalence needs {per_target}")
        chosen.append(rng.choice(rows, size=max(per_target, 1), replace=False))
    return rng.permutation(np.concatenate(chosen))
