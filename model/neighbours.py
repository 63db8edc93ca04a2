"""A nearest-labelled-neighbour correction of a class's probabilities (active search).

A linear model draws one boundary per class; a person's label also says something about
the items right next to it. Active search (Garnett et al. 2012; Jiang et al. 2017) scores
an item by the labels of its nearest labelled neighbours. Here that evidence is blended
with the linear model's probability as a prior worth `gamma` neighbours:

    p(x) = (gamma * p_lin(x) + sum_j w_j y_j) / (gamma + sum_j w_j)

over the `k` labelled items most similar to x, with w_j = exp((cos(x, x_j) - 1) / tau):
a near duplicate counts fully, an item at cosine 0.7 barely (tau = 0.1).
"""

from __future__ import annotations

import numpy as np


def neighbour_posterior(
    X_cand: np.ndarray,
    X_lab: np.ndarray,
    y_lab: np.ndarray,
    prior: np.ndarray,
    k: int = 10,
    tau: float = 0.1,
    gamma: float = 1.0,
) -> np.ndarray:
    """Blend `prior` (p_lin of each candidate) with its k nearest labelled neighbours' labels.

    `y_lab` is 1 for a positive of the class and 0 otherwise. Costs one (m, l) product.
    """
    if len(X_lab) == 0 or len(X_cand) == 0:
        return prior
    sims = X_cand @ X_lab.T
    k = min(k, len(X_lab))
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, nearest, axis=1)
    w = np.exp((s - 1.0) / tau)
    votes = (w * y_lab[nearest]).sum(axis=1)
    return (gamma * prior + votes) / (gamma + w.sum(axis=1))
