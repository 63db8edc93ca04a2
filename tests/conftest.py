"""Shared fixtures for the model tests: a small real pool from dbpedia14, embedded once.

The rows come from tests/data/dbpedia14_sample.csv.gz, inside the repository.

Embedding is slow on this machine, so the whole session embeds one pool (~660 short texts)
into a session-scoped SQLite cache; the CLI tests point RARELABEL_CACHE_DIR at the same
directory, so a `rarelabel simulate` subprocess finds every vector there.
"""

from __future__ import annotations

import os

# Before anything imports sentence_transformers / huggingface_hub: never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The int8 export of the embedding model is made once per machine, not once per test's
# RARELABEL_CACHE_DIR; subprocesses inherit this.
os.environ.setdefault(
    "RARELABEL_MODEL_DIR", os.path.join(__import__("tempfile").gettempdir(), "rarelabel-models")
)

import csv  # noqa: E402
import gzip  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.data_paths import DBPEDIA_SAMPLE  # noqa: E402

# The real pool: two of the seed's rare targets at 2% each (12 of 600), plus a held-out set.
REAL_TARGETS = ("Artist", "EducationalInstitution")
REAL_OTHERS, REAL_PER_TARGET = 576, 12
HELD_OUT_OTHERS, HELD_OUT_PER_TARGET = 40, 10
MAX_TEXT_CHARS = 200  # short texts embed faster; they are still real dbpedia abstracts


def _dbpedia_path() -> Path:
    """The dbpedia14 sample in tests/data, or the file RARELABEL_TEST_DBPEDIA names."""
    path = Path(os.environ.get("RARELABEL_TEST_DBPEDIA") or DBPEDIA_SAMPLE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the tests' dbpedia14 rows are missing")
    return path


@dataclass(frozen=True)
class RealPool:
    """A small real pool, its held-out set and their MiniLM vectors."""

    targets: tuple[str, ...]
    ids: list[str]
    texts: list[str]
    labels: np.ndarray
    X: np.ndarray
    test_ids: list[str]
    test_texts: list[str]
    test_labels: np.ndarray
    X_test: np.ndarray
    prototypes: dict[str, np.ndarray]
    cache_dir: Path  # holds embeddings.sqlite with every vector above

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / "embeddings.sqlite"


@pytest.fixture(scope="session")
def dbpedia_rows() -> list[tuple[str, str, str]]:
    """(id, label, text) of every row of the dbpedia14 sample (tests/data/README.md)."""
    csv.field_size_limit(sys.maxsize)
    with gzip.open(_dbpedia_path(), "rt", encoding="utf-8", newline="") as f:
        return [(r["id"], r["label"], r["text"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="session")
def real_pool(dbpedia_rows, tmp_path_factory) -> RealPool:
    """600 dbpedia texts (2 targets at 2%) + 60 held-out texts, embedded once per session."""
    from model.embedding import DEFAULT_MODEL, Embedder, SQLiteCache
    from model.prioritiser import prototype_text

    rng = np.random.default_rng(20240601)
    seen: set[str] = set()
    by_label: dict[str, list[tuple[str, str, str]]] = {}
    for row in dbpedia_rows:
        text = row[2]
        if text.strip() and len(text) <= MAX_TEXT_CHARS and text not in seen:
            seen.add(text)
            by_label.setdefault(row[1], []).append(row)
    others = [r for lab, rows in sorted(by_label.items()) if lab not in REAL_TARGETS for r in rows]
    pick = rng.choice(len(others), REAL_OTHERS + HELD_OUT_OTHERS, replace=False)
    pool_rows = [others[i] for i in pick[:REAL_OTHERS]]
    test_rows = [others[i] for i in pick[REAL_OTHERS:]]
    for t in REAL_TARGETS:
        rows = by_label[t]
        pick = rng.choice(len(rows), REAL_PER_TARGET + HELD_OUT_PER_TARGET, replace=False)
        pool_rows += [rows[i] for i in pick[:REAL_PER_TARGET]]
        test_rows += [rows[i] for i in pick[REAL_PER_TARGET:]]
    pool_rows = [pool_rows[i] for i in rng.permutation(len(pool_rows))]

    cache_dir = tmp_path_factory.mktemp("rarelabel-cache")
    embedder = Embedder(model=DEFAULT_MODEL, cache=SQLiteCache(cache_dir / "embeddings.sqlite"))
    proto_texts = [prototype_text(t) for t in REAL_TARGETS]
    texts = [r[2] for r in pool_rows]
    test_texts = [r[2] for r in test_rows]
    everything = embedder.encode(texts + test_texts + proto_texts)  # the only model call
    n, m = len(texts), len(test_texts)
    return RealPool(
        targets=REAL_TARGETS,
        ids=[r[0] for r in pool_rows],
        texts=texts,
        labels=np.array([r[1] for r in pool_rows]),
        X=everything[:n],
        test_ids=[r[0] for r in test_rows],
        test_texts=test_texts,
        test_labels=np.array([r[1] for r in test_rows]),
        X_test=everything[n : n + m],
        prototypes=dict(zip(REAL_TARGETS, everything[n + m :], strict=True)),
        cache_dir=cache_dir,
    )


@pytest.fixture(scope="session")
def subprocess_env(real_pool) -> dict[str, str]:
    """Environment for child processes: offline, the session's cache, the default model."""
    env = dict(os.environ)
    env.pop("RARELABEL_EMBEDDING_MODEL", None)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="Agg",
        RARELABEL_CACHE_DIR=str(real_pool.cache_dir),
    )
    return env
