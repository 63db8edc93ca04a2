"""A k-nearest-neighbour posterior over the human labels, to blend with the linear ranker.

A hyperplane fitted on a few positives ranks by one direction; a rare class that forms
several small clumps in the embedding is better served by asking near the positives found
so far. Issue 16 probed a blend of the two on dbpedia14 (recall@50 0.80 against tropel's
0.69); `RankerConfig.knn_blend` measures it in the loop (benchmarks/heldout.py, `knn`).
"""

from __future__ import annotations

import numpy as np

from model.rankers import project, sigmoid

K = 10  # neighbours per row
TEMPERATURE = 0.05  # of the similarity weights: the nearest labelled rows speak loudest


def nearest_labelled(
    X: np.ndarray, labelled: np.ndarray, k: int, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Per pool row, its k' = min(k, labelled) most similar labelled rows (by dot product, the
    cosine of unit rows) and those similarities; a labelled row is its own neighbour."""
    k = min(k, len(labelled))
    rows = np.empty((len(X), k), dtype=np.int64)
    sims = np.empty((len(X), k), dtype=np.float32)
    L = np.asarray(X[labelled], dtype=np.float32).T
    for s in range(0, len(X), chunk):
        S = project(X[s : s + chunk], L)
        top = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else np.argsort(-S)
        rows[s : s + chunk] = labelled[top]
        sims[s : s + chunk] = np.take_along_axis(S, top, axis=1)
    return rows, sims


def knn_posterior(
    neighbours: np.ndarray, similarity: np.ndarray, positive: np.ndarray
) -> np.ndarray:
    """Per row, the share of positives among its neighbours, each weighted by
    exp(similarity / TEMPERATURE): a row beside one positive and among looser negatives
    scores near 1, a row whose nearest labelled rows are negatives near 0. With few
    positives among many negatives, an unweighted vote of k could never say more than
    (positives near) / k."""
    w = np.exp((similarity - similarity.max(axis=1, keepdims=True)) / TEMPERATURE)
    return (w * positive[neighbours]).sum(axis=1) / w.sum(axis=1)


def blend(margin: np.ndarray, posterior: np.ndarray, weight: float) -> np.ndarray:
    """The linear margin and the posterior mixed as probabilities, returned as a margin."""
    p = (1 - weight) * sigmoid(margin) + weight * posterior
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)
