"""The pool's own word statistics, appended to the sentence embedding.

A frozen MiniLM embedding blurs the words that separate a rare class from its neighbours
(a company from the vehicles it builds, a musician from their albums). Latent semantic
analysis (TF-IDF of words and word pairs, then a truncated SVD) fitted on the pool's texts
restores them at the cost of one fit per pool, not per label: the cheap stand-in for the
paper's "update the features less often". benchmarks/simulate_dbpedia.py measures it
(rows `+bandit`, the loop without it, and `+lexical`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class LexicalFeatures:
    """`fit` on the pool's texts, `transform` any text into `dims` unit-length columns."""

    dims: int = 384
    max_docs: int = 50_000  # fit on a sample of a larger pool; transforming stays linear
    random_state: int = 0

    def fit(self, texts: Sequence[str]) -> LexicalFeatures:
        self._fit(list(texts))
        return self

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        """`fit(texts).transform(texts)` with the TF-IDF of the texts computed once."""
        texts = list(texts)
        T = self._fit(texts)
        if T is None or self.n_fitted_ != len(texts):  # no words, or fitted on a sample
            return self.transform(texts)
        return self._unit_rows(self.svd_.transform(T))

    def _fit(self, texts: list[str]):
        """Fit; return the TF-IDF matrix of the texts fitted on (None without a model)."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if self.dims < 1:
            raise ValueError(f"dims must be >= 1, got {self.dims}")
        if len(texts) > self.max_docs:
            rng = np.random.default_rng(self.random_state)
            texts = [texts[i] for i in rng.choice(len(texts), self.max_docs, replace=False)]
        self.n_fitted_ = len(texts)
        small = len(texts) < 50  # too few documents to drop words seen once
        self.tfidf_ = TfidfVectorizer(
            sublinear_tf=True,
            ngram_range=(1, 2),
            min_df=1 if small else 2,
            max_df=1.0 if small else 0.5,
            dtype=np.float32,
        )
        try:
            T = self.tfidf_.fit_transform(texts)
        except ValueError:  # no word left (empty or stop-word-only texts): no lexical signal
            self.svd_ = None
            return None
        k = min(self.dims, T.shape[0] - 1, T.shape[1] - 1)
        self.svd_ = TruncatedSVD(k, random_state=self.random_state).fit(T) if k >= 1 else None
        return T if self.svd_ is not None else None

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dims) float32; zero-padded when the pool allowed fewer components, and a zero
        row for a text with no word the pool knows."""
        if getattr(self, "svd_", None) is None or len(texts) == 0:
            return np.zeros((len(texts), self.dims), dtype=np.float32)
        return self._unit_rows(self.svd_.transform(self.tfidf_.transform(list(texts))))

    def _unit_rows(self, L: np.ndarray) -> np.ndarray:
        out = np.zeros((len(L), self.dims), dtype=np.float32)
        L = L.astype(np.float32)
        norms = np.linalg.norm(L, axis=1, keepdims=True)
        out[:, : L.shape[1]] = np.divide(L, norms, out=np.zeros_like(L), where=norms > 0)
        return out


def with_lexical(
    X: np.ndarray, L: np.ndarray | None, dtype=np.float32, chunk: int = 8192
) -> np.ndarray:
    """[x, l] / √2: both halves weigh the same in a dot product, and the row stays unit
    length where both are. `L=None` leaves the embedding as it is. Written chunk by chunk
    into an array of `dtype` (float16 for a compact pool): at a million rows, no float32
    temporaries of the whole result."""
    if L is None:
        return np.asarray(X, dtype=dtype)
    if len(L) != len(X):
        raise ValueError(f"{len(X)} embeddings but {len(L)} lexical rows")
    d, root2 = X.shape[1], np.float32(np.sqrt(2))
    out = np.empty((len(X), d + L.shape[1]), dtype=dtype)
    for s in range(0, len(X), chunk):
        out[s : s + chunk, :d] = np.asarray(X[s : s + chunk], dtype=np.float32) / root2
        out[s : s + chunk, d:] = np.asarray(L[s : s + chunk], dtype=np.float32) / root2
    return out


def embedding_part(X: np.ndarray, dims: int) -> np.ndarray:
    """The embedding back out of `with_lexical`'s rows (`dims` lexical columns at the end)."""
    return X if dims <= 0 else X[:, :-dims] * np.float32(np.sqrt(2))


def pad_lexical(V: np.ndarray, dims: int) -> np.ndarray:
    """Vectors with `dims` zero lexical columns: a prototype, which has no word statistics,
    in the pool's space, ranking by its embedding alone."""
    V = np.asarray(V, dtype=np.float32)
    return np.hstack([V, np.zeros((len(V), dims), dtype=np.float32)]) if dims > 0 else V


def pad_prototypes(prototypes: dict[str, np.ndarray], dims: int) -> dict[str, np.ndarray]:
    """Each class prototype with `dims` zero lexical columns (see `pad_lexical`)."""
    return {t: pad_lexical(v[None], dims)[0] for t, v in prototypes.items()}


def pool_features(
    X: np.ndarray, texts: Sequence[str], dims: int, random_state: int = 0
) -> tuple[np.ndarray, LexicalFeatures | None]:
    """The pool's vectors with lexical columns fitted on its texts (`dims=0`: embedding only)."""
    if dims <= 0:
        return np.asarray(X, dtype=np.float32), None
    lexical = LexicalFeatures(dims, random_state=random_state)
    return with_lexical(X, lexical.fit_transform(texts)), lexical
