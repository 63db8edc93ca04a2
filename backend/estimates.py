"""Per class, after each retrain: how many rare items the pool probably holds, and whether
labelling more still pays (model.estimate holds the method and its assumptions).

The history is each labelled task in the order it was labelled, with the class's logit
when that class's ranker asked for it (backend.store's `asked`); a task another class asked
for, or labelled unasked, counts as found but not in the calibration. An audit task
(backend.audit) carries every class's logit at its draw, its draw probability and whether
it belongs to the uniform sample.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from backend.store import Audit
from model.estimate import TARGET_RECALL, Estimate, Pick, estimate
from model.labels import Label, has
from model.prioritiser import Pool


def class_estimates(
    targets: list[str],
    pool: Pool,
    labels: dict[int, Label],
    asked: dict[int, tuple[str, float | None]],
    scores: np.ndarray,
    audits: dict[int, Audit] | None = None,
    target_recall: float = TARGET_RECALL,
) -> dict[str, Estimate]:
    """`scores`: the fitted rankers' (n, classes) logits over the pool's rows. `audits`:
    task -> its draw, as backend.store keeps them."""
    audits = audits or {}
    in_pool = [(t, label) for t, label in labels.items() if t in pool.row]
    unlabelled = np.ones(len(pool.ids), dtype=bool)
    unlabelled[[pool.row[t] for t, _ in in_pool]] = False
    out = {}
    for j, target in enumerate(targets):
        history = []
        for task, label in in_pool:
            positive = has(label, target)
            if task in audits:
                a = audits[task]
                logit = a.logits.get(target)
                history.append(Pick(positive, logit, True, a.q, a.uniform, a.population, a.pool))
                continue
            by, logit = asked.get(task, (None, None))
            history.append(Pick(positive, score=logit if by == target else None))
        out[target] = estimate(history, scores[unlabelled, j], target_recall=target_recall)
    return out


def as_json(estimates: dict[str, Estimate]) -> dict[str, dict]:
    """Rounded for the status hash and the curve; None stays None ("unknown")."""

    def rounded(v):
        return round(v, 3) if isinstance(v, float) else v

    return {t: {k: rounded(v) for k, v in asdict(e).items()} for t, e in estimates.items()}
