"""The paper's slow step (Mullapudi et al. 2021, step 6): learn features from the labels.

The linear rankers are only as good as the features they rank on. Every so many labels the
paper fine-tunes its feature extractor on the human labels and pseudo-negatives, with
*background splitting*: beside the rare classes, the network must also tell apart the
pre-trained model's own classes, which keeps the features from collapsing onto the few
positives. Here the extractor stays frozen (MiniLM, and re-embedding a pool on 2 cores takes
minutes) and a small network on top of it learns instead:

    h(x) = relu(x W + b)        heads: one logistic per rare class, and a softmax over
                                k-means clusters of the pool (the background classes)

The rankers then rank on [x, h(x)]: the frozen columns stay, so an update can add a
direction but never lose one. Measured (docs/heldout.md, "The paper's feature update"): no
gain beyond noise on dbpedia14 or BANKING77 at 300 labels, so it is off by default
(`RankerConfig.feature_update_every`) and not in the service; `benchmarks/feature_update.py`
times one update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureUpdate:
    """`hidden`: width of h. `clusters`: background classes (k-means of the pool).
    `background_weight`: weight of the background head's loss against the rare classes'.
    `epochs` over the labelled rows; each epoch also sees `background_rows` pool rows."""

    hidden: int = 128
    clusters: int = 32
    background_weight: float = 1.0
    epochs: int = 60
    background_rows: int = 2048
    lr: float = 3e-3
    weight_decay: float = 1e-4
    random_state: int = 0

    def fit(
        self,
        X: np.ndarray,
        positives: Mapping[str, np.ndarray],
        negatives: Mapping[str, np.ndarray],
        clusters: np.ndarray | None = None,
    ) -> FeatureUpdate:
        """`positives[t]`, `negatives[t]`: pool rows of each rare class's positives and of its
        negatives (human and pseudo). `clusters`: each row's background class, when the
        caller keeps them (`background_classes`); computed here otherwise."""
        import torch

        targets = [t for t in positives if len(positives[t]) and len(negatives.get(t, ()))]
        if not targets:
            raise ValueError("a feature update needs a class with positives and negatives")
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        if clusters is None:
            clusters = background_classes(X, self.clusters, self.random_state)
        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        ct = torch.from_numpy(np.asarray(clusters, dtype=np.int64))
        body = torch.nn.Linear(X.shape[1], self.hidden)
        heads = torch.nn.Linear(self.hidden, len(targets))
        background = torch.nn.Linear(self.hidden, int(clusters.max()) + 1)
        params = [*body.parameters(), *heads.parameters(), *background.parameters()]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        # the rare classes' rows: each class balanced (positives weigh as all its negatives)
        rows, y, w = [], [], []
        for j, t in enumerate(targets):
            pos, neg = np.asarray(positives[t]), np.asarray(negatives[t])
            for r, label, weight in ((pos, 1.0, 0.5 / len(pos)), (neg, 0.0, 0.5 / len(neg))):
                rows.append(r)
                y.append(np.column_stack([np.full(len(r), j), np.full(len(r), label)]))
                w.append(np.full(len(r), weight))
        rows_t = torch.from_numpy(np.concatenate(rows).astype(np.int64))
        yj = torch.from_numpy(np.concatenate(y)[:, 0].astype(np.int64))
        yv = torch.from_numpy(np.concatenate(y)[:, 1].astype(np.float32))
        wt = torch.from_numpy(np.concatenate(w).astype(np.float32)) / len(targets)
        for _ in range(self.epochs):
            opt.zero_grad()
            logits = heads(torch.relu(body(Xt[rows_t])))
            picked = logits.gather(1, yj[:, None])[:, 0]
            rare = torch.nn.functional.binary_cross_entropy_with_logits(
                picked, yv, weight=wt, reduction="sum"
            )
            bg = torch.from_numpy(rng.choice(len(X), min(len(X), self.background_rows)))
            split = torch.nn.functional.cross_entropy(background(torch.relu(body(Xt[bg]))), ct[bg])
            (rare + self.background_weight * split).backward()
            opt.step()
        self.W_ = body.weight.detach().numpy().T.copy()
        self.b_ = body.bias.detach().numpy().copy()
        h = np.maximum(0.0, X[: min(len(X), 4096)] @ self.W_ + self.b_)
        # h's columns scaled to the frozen columns' typical norm, so neither swamps the other
        self.scale_ = float(
            np.linalg.norm(X[: len(h)], axis=1).mean()
            / max(np.linalg.norm(h, axis=1).mean(), 1e-12)
        )
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """[x, h(x)]: the frozen columns, then the learnt ones."""
        h = np.maximum(0.0, X @ self.W_ + self.b_) * self.scale_
        return np.hstack([X, h.astype(X.dtype, copy=False)])


def background_classes(X: np.ndarray, k: int, random_state: int = 0) -> np.ndarray:
    """The pool's k-means clusters: the background classes the network must tell apart."""
    from sklearn.cluster import MiniBatchKMeans

    k = max(2, min(k, len(X) // 10))
    km = MiniBatchKMeans(k, random_state=random_state, n_init=3, batch_size=2048)
    return km.fit_predict(np.asarray(X, dtype=np.float32))
