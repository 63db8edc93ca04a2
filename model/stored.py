"""The rankers as the worker saves them: enough for any process to score a vector.

One shape, written by the worker after each retrain and read by `/predict` and the import
screen, so a web process never needs the worker's objects (nor the embedding model, for a
task the pool already holds).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from model.rankers import class_probabilities


@dataclass(frozen=True)
class StoredModel:
    model_version: str
    targets: list[str]
    W: list[list[float]]  # one row of weights per target
    b: list[float]
    stages: list[str]  # "linear" or "cosine" per target

    @classmethod
    def from_prioritiser(cls, prio, model_version: str) -> StoredModel:
        rankers = [prio.rankers_[t] for t in prio.targets]
        return cls(
            model_version=model_version,
            targets=list(prio.targets),
            W=[r.weights[0].tolist() for r in rankers],
            b=[float(r.weights[1]) for r in rankers],
            stages=[r.stage for r in rankers],
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredModel:
        return cls(**json.loads(raw))

    @property
    def width(self) -> int:
        """The columns a vector needs: the embedding, plus any lexical columns."""
        return len(self.W[0]) if self.W else 0

    @property
    def any_linear(self) -> bool:
        return "linear" in self.stages

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """(n, k) per-class probabilities on one scale, whatever each class's stage."""
        W, b = np.asarray(self.W, np.float32), np.asarray(self.b, np.float32)
        linear = np.array(self.stages) == "linear"
        return class_probabilities(np.atleast_2d(X) @ W.T + b, linear)
