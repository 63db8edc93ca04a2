"""What the benchmarks share, so each script holds only what it measures: the dbpedia14
pools (read, embedded through the shared cache, split, built per random state), the paired
sign test, table cells, the results file and a timestamped log line."""

from __future__ import annotations

import csv
import gzip
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.data import Dataset, build_pool, read_csv  # noqa: E402
from model.embedding import Embedder, SQLiteCache, default_cache_path  # noqa: E402
from model.prioritiser import embed_prototypes  # noqa: E402
from model.simulate import initial_positives  # noqa: E402

DBPEDIA_TARGETS = ["Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder"]
INITIAL = 5  # initial positives per target
SPLIT_SEED = 20240601  # the pool-source / test split, fixed once for every run
TEST_FRACTION = 0.2
TEST_SEED_OFFSET = 10_000  # the same-prevalence test set of random state s uses s + this


@dataclass
class Bench:
    """Everything a run needs; built once in the parent, inherited by forked workers."""

    data: Dataset
    X: np.ndarray  # (n, d) embeddings of every row of the file
    labels: np.ndarray
    source: np.ndarray  # rows of the pool-source part (80%)
    test: np.ndarray  # rows of the held-out test part (20%)
    prototypes: dict[str, np.ndarray]
    budget: int
    targets: list[str] = field(default_factory=lambda: list(DBPEDIA_TARGETS))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """(source rows, test rows): `fraction` of every label goes to the test part."""
    rng = np.random.default_rng(seed)
    source, test = [], []
    for label in sorted(set(labels.tolist())):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(fraction * len(rows)))
        test.append(rows[:n_test])
        source.append(rows[n_test:])
    return np.sort(np.concatenate(source)), np.sort(np.concatenate(test))


def shared_embedder() -> Embedder:
    """The project's embedder on the benchmarks' shared SQLite cache."""
    return Embedder(cache=SQLiteCache(default_cache_path()))


def embed(
    texts: list[str], chunk: int = 2000, with_embedder: Embedder | None = None
) -> tuple[Embedder, np.ndarray]:
    """Every text through the shared SQLite cache, chunk by chunk under one progress bar;
    `with_embedder` reuses one whose model is loaded already."""
    embedder = with_embedder or shared_embedder()
    parts = []
    with tqdm(total=len(texts), desc="embedding (cached)", unit="text") as bar:
        for start in range(0, len(texts), chunk):
            parts.append(embedder.encode(texts[start : start + chunk]))
            bar.update(len(parts[-1]))
    return embedder, np.concatenate(parts)


def load(path: Path, budget: int, limit: int | None) -> Bench:
    t0 = time.perf_counter()
    data = read_csv(path, "text", "label")
    if limit:
        data = data.subset(np.arange(min(limit, len(data))))
    labels = np.array(data.labels)
    embedder, X = embed(data.texts)
    source, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    prototypes = embed_prototypes(embedder, DBPEDIA_TARGETS)
    print(
        f"{path.name}: {len(data)} rows, {len(set(labels.tolist()))} labels, embedded "
        f"{X.shape} in {time.perf_counter() - t0:.1f} s; split {len(source)} pool-source / "
        f"{len(test)} test (seed {SPLIT_SEED}, stratified)",
        flush=True,
    )
    return Bench(data, X, labels, source, test, prototypes, budget)


def pool_for(b: Bench, prevalence: float, seed: int, targets: list[str]):
    """Pool rows (global), initial positives (pool rows) and the same-prevalence test rows."""
    rng = np.random.default_rng(seed)
    local = build_pool(b.data.subset(b.source), targets, prevalence, rng)
    rows = b.source[local]
    seeds = initial_positives(b.labels[rows], targets, INITIAL, rng)
    test_rng = np.random.default_rng(seed + TEST_SEED_OFFSET)
    test_local = build_pool(b.data.subset(b.test), targets, prevalence, test_rng)
    return rows, seeds, b.test[test_local]


def sign_test(more: int, fewer: int) -> float:
    """Two-sided sign test: how likely a split at least this uneven is between two variants
    that are equally good, over pools where one found more and the other fewer (ties
    dropped). Runs a find or two apart are told apart by this, not by their means."""
    n, k = more + fewer, min(more, fewer)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def fmt(x: float | None, spec: str = ".2f") -> str:
    """A table cell: `-` for a value not measured."""
    return "-" if x is None else f"{x:{spec}}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, obj, indent: int = 2, **kwargs) -> Path:
    """The results file, its folder made first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, **kwargs))
    return path


def csv_rows(path: Path):
    """The rows of a CSV.gz as dicts (dbpedia14's abstracts run past csv's field limit)."""
    csv.field_size_limit(sys.maxsize)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def read_labelled(path: Path, label_column: str = "label", single_label: bool = False) -> Dataset:
    """A labelled file's rows; with `single_label`, only the rows with exactly one label of a
    `;`-separated column (Reuters' single-topic view of its natural skew)."""
    data = read_csv(path, "text", label_column)
    if single_label:
        data = data.subset(
            np.array([i for i, lab in enumerate(data.labels) if lab and ";" not in lab])
        )
    return data
