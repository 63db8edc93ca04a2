"""Who is a positive or a negative, per target class.

Only the human label of each task is stored; per-class positive and negative sets are
derived from it, so relabelling or deleting a task can never leave it in two sets. An
annotation of class A is a positive for A and a negative for every other target; a
multi-label annotation (a frozenset of classes) is a positive for each class it names and a
negative only for the targets it does not name.
The machine's pseudo-negatives are the prioritiser's, drawn anew at each fit, which reads
this state and never writes it. `asked_by` remembers which class asked for a task, and
`asked_score` its logit then, so each class's recent picks calibrate its choice
(model.class_choice).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

TaskId = Hashable
Label = str | frozenset[str]  # one class, or the classes of a multi-label annotation


def has(label: Label, target: str) -> bool:
    """Whether a task with this label is a positive for `target`."""
    return target in label if isinstance(label, frozenset) else label == target


@dataclass
class LabelState:
    targets: list[str]
    labels: dict[TaskId, Label] = field(default_factory=dict)
    asked_by: dict[TaskId, str] = field(default_factory=dict)  # in the order asked
    asked_score: dict[TaskId, float] = field(default_factory=dict)  # the asker's logit then

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("at least one target class is needed")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"duplicate target classes: {self.targets}")

    def set_label(self, task: TaskId, label: Label) -> None:
        self.labels[task] = label

    def positives(self, target: str) -> set[TaskId]:
        self._check(target)
        return {t for t, lab in self.labels.items() if has(lab, target)}

    def negatives(self, target: str) -> set[TaskId]:
        self._check(target)
        return {t for t, lab in self.labels.items() if not has(lab, target)}

    def record_query(self, task: TaskId, target: str, score: float | None = None) -> None:
        """`score`: the asking class's logit for the task when it asked (its calibration)."""
        self._check(target)
        self.asked_by.pop(task, None)
        self.asked_by[task] = target
        if score is None:
            self.asked_score.pop(task, None)
        else:
            self.asked_score[task] = float(score)

    def recent_asks(self, target: str, window: int) -> tuple[np.ndarray, np.ndarray]:
        """(logits when asked, hits) of the last `window` labelled queries of this class that
        carry a logit."""
        asked = [
            t
            for t, c in self.asked_by.items()
            if c == target and t in self.labels and t in self.asked_score
        ][-window:]
        logits = np.array([self.asked_score[t] for t in asked], dtype=np.float64)
        return logits, np.array([has(self.labels[t], target) for t in asked], dtype=np.float64)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            t: {"positives": len(self.positives(t)), "negatives": len(self.negatives(t))}
            for t in self.targets
        }

    def _check(self, target: str) -> None:
        if target not in self.targets:
            raise KeyError(f"unknown target class {target!r}; targets are {self.targets}")
