"""The pool's word statistics beside the embedding (model/features.py), on real dbpedia texts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from model.features import (
    LexicalFeatures,
    embedding_part,
    pad_lexical,
    pool_features,
    with_lexical,
)


def test_rows_are_unit_length_with_the_promised_width(real_pool):
    L = LexicalFeatures(dims=64).fit(real_pool.texts).transform(real_pool.texts)
    assert L.shape == (len(real_pool.texts), 64) and L.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(L, axis=1), 1.0, atol=1e-5)


def test_a_text_of_unknown_words_gets_a_zero_row(real_pool):
    lexical = LexicalFeatures(dims=32).fit(real_pool.texts)
    L = lexical.transform(["qwxzv brrrmf", real_pool.texts[0]])
    assert not L[0].any()
    assert np.linalg.norm(L[1]) == pytest.approx(1.0, abs=1e-5)


def test_a_small_pool_is_zero_padded_and_a_wordless_one_gives_zeros(real_pool):
    L = LexicalFeatures(dims=64).fit(real_pool.texts[:10]).transform(real_pool.texts[:10])
    assert L.shape == (10, 64)
    assert L[:, :9].any() and not L[:, 9:].any()  # at most n_docs - 1 components
    empty = LexicalFeatures(dims=8).fit(["the", "a", ""])
    assert not empty.transform(["the village"]).any()


def test_fit_transform_equals_fit_then_transform(real_pool):
    """Also on a sampled fit (max_docs) and a wordless pool, where the shortcut must not apply."""
    for kwargs, texts in (
        ({"dims": 32}, real_pool.texts),
        ({"dims": 32, "max_docs": 60}, real_pool.texts),
        ({"dims": 8}, ["the", "a", ""]),
    ):
        once = LexicalFeatures(**kwargs).fit_transform(texts)
        twice = LexicalFeatures(**kwargs).fit(texts).transform(texts)
        np.testing.assert_allclose(once, twice, atol=1e-5)


def test_a_fit_is_deterministic(real_pool):
    a = LexicalFeatures(dims=32).fit(real_pool.texts).transform(real_pool.texts[:50])
    b = LexicalFeatures(dims=32).fit(real_pool.texts).transform(real_pool.texts[:50])
    np.testing.assert_array_equal(a, b)


def test_lexical_columns_carry_the_class(real_pool):
    """Alone, the word statistics separate a rare target from the rest far above chance."""
    L = LexicalFeatures(dims=64).fit(real_pool.texts).transform(real_pool.texts)
    y = real_pool.labels == "EducationalInstitution"
    model = LogisticRegression(C=10, class_weight="balanced", max_iter=500)
    scores = cross_val_score(model, L, y, cv=3, scoring="average_precision")
    assert scores.mean() > 0.5  # chance is the prevalence, 0.02


def test_with_lexical_keeps_unit_rows_and_gives_the_embedding_back(real_pool):
    X = real_pool.X[:20]
    L = LexicalFeatures(dims=16).fit(real_pool.texts).transform(real_pool.texts[:20])
    Z = with_lexical(X, L)
    assert Z.shape == (20, X.shape[1] + 16)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedding_part(Z, 16), X, atol=1e-6)
    with pytest.raises(ValueError, match="lexical rows"):
        with_lexical(X, L[:5])
    # written in chunks into the pool's dtype: the same rows, whatever the chunk
    whole = (np.hstack([X, L]) / np.float32(np.sqrt(2))).astype(np.float32)
    np.testing.assert_array_equal(with_lexical(X, L, chunk=3), whole)
    compact = with_lexical(X, L, np.float16, chunk=7)
    assert compact.dtype == np.float16
    np.testing.assert_array_equal(compact, whole.astype(np.float16))


def test_pool_features_off_is_the_embedding_and_prototypes_pad_with_zeros(real_pool):
    X, lexical = pool_features(real_pool.X, real_pool.texts, dims=0)
    assert lexical is None and np.array_equal(X, real_pool.X)
    X, lexical = pool_features(real_pool.X, real_pool.texts, dims=16)
    assert isinstance(lexical, LexicalFeatures) and X.shape[1] == real_pool.X.shape[1] + 16
    proto = pad_lexical(real_pool.X[:1], 16)
    assert proto.shape == (1, X.shape[1]) and not proto[0, -16:].any()
    # a zero-padded prototype scores the pool as its embedding does, scaled by 1/√2
    expected = real_pool.X @ real_pool.X[0] / np.sqrt(2)
    np.testing.assert_allclose(X @ proto[0], expected, atol=1e-5)
