"""The audit sample in the service: now and then a random task at the head of the queue.

The estimates (model.estimate) can check their calibration, and the stopping rule may fire,
only on labels the ranker did not choose. At the rate a manager sets (`audit_rate`), a
retrain draws one unlabelled task and serves it first, recording its draw probability,
every class's logit and which half of the mixture drew it (`draw_audit`: by default half
by the ranker's probability, half uniformly, so every task can be drawn). The uniform
draws are the sample that verifies a recall without trusting the ranker
(model.recall_test); `audit_uniform_share` 1 with `audit_rate` 1 makes every label one:
the second phase, in Label Studio. A drawn task stays first until someone labels it, or it
leaves the pool; only then may the next be drawn. Whether a retrain draws depends on the
project and its label count alone, so a retrain repeated at the same count decides the
same way.
"""

from __future__ import annotations

import numpy as np

from backend.settings import ProjectConfig
from backend.store import Audit, Store
from model.estimate import draw_audit
from model.labels import Label
from model.prioritiser import Pool, Prioritiser


def audit_head(
    store: Store,
    cfg: ProjectConfig,
    pool: Pool,
    labels: dict[int, Label],
    audits: dict[int, Audit],
    prio: Prioritiser,
    scores: np.ndarray,
) -> list[int]:
    """The audit task to serve first (none, or one), drawn now (and recorded in the store)
    if one is due.

    `audits`: the draws so far, as `store.audits` returns them. `scores`: the fitted
    rankers' (n, classes) logits over the pool's rows."""
    p = cfg.project_id
    waiting = [t for t in audits if t not in labels and t in pool.row]
    if waiting or cfg.audit_rate <= 0:
        return waiting[:1]
    rng = np.random.default_rng([p, len(labels)])
    if rng.random() >= cfg.audit_rate:
        return []
    unlabelled = np.ones(len(pool.ids), dtype=bool)
    unlabelled[[pool.row[t] for t in labels if t in pool.row]] = False
    rows = np.flatnonzero(unlabelled)
    if len(rows) == 0:
        return []
    draw = draw_audit(prio.probabilities(scores[rows]).max(axis=1), rng, cfg.audit_uniform_share)
    row = int(rows[draw.index])
    task = int(pool.ids[row])
    logits = {t: float(scores[row, j]) for j, t in enumerate(cfg.targets)}
    store.record_audit(p, task, Audit(draw.q, logits, draw.uniform, len(rows), len(pool.ids)))
    return [task]
