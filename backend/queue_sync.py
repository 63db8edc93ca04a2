"""The fewest prediction writes that make Label Studio's order equal the new queue.

Label Studio serves the lowest prediction score first. After a retrain the queue is mostly
the old one with a few moves, so rewriting every score (each rewrite deletes and imports a
prediction) would waste seconds. Instead, keep the longest run of already-pushed tasks whose
stored scores still increase along the new queue, and give the others scores between their
kept neighbours. Old predictions outside the new queue are deleted only when their score
would put them ahead of a queued task.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

MIN_GAP = 1e-9  # below this, interpolated scores are renumbered from scratch


@dataclass
class PushPlan:
    writes: dict[int, float]  # task -> new score
    deletes: list[int]  # tasks whose old prediction must go
    scores: dict[int, float]  # every task's score in Label Studio after the plan


def longest_increasing(values: list[float]) -> list[int]:
    """Positions of one longest strictly increasing subsequence (patience sorting)."""
    tails: list[float] = []
    tail_pos: list[int] = []
    parent = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_pos.append(i)
        else:
            tails[k], tail_pos[k] = v, i
        parent[i] = tail_pos[k - 1] if k else -1
    out, i = [], tail_pos[-1] if tail_pos else -1
    while i != -1:
        out.append(i)
        i = parent[i]
    return out[::-1]


def plan_push(pushed: dict[int, float], queue: list[int], labelled: set[int]) -> PushPlan:
    """Scores in (0, 1) for `queue` (most wanted first), reusing as many pushed ones as possible."""
    old = [(pos, pushed[t]) for pos, t in enumerate(queue) if t in pushed]
    keep = {old[i][0] for i in longest_increasing([s for _, s in old])}
    scores: dict[int, float] = {queue[p]: pushed[queue[p]] for p in keep}
    anchors = [-1, *sorted(keep), len(queue)]
    for lo_pos, hi_pos in zip(anchors, anchors[1:], strict=False):
        gap = list(range(lo_pos + 1, hi_pos))
        if not gap:
            continue
        lo = scores[queue[lo_pos]] if lo_pos >= 0 else 0.0
        hi = scores[queue[hi_pos]] if hi_pos < len(queue) else 1.0
        if (hi - lo) / (len(gap) + 1) < MIN_GAP:
            return _renumber(pushed, queue, labelled)
        for j, p in enumerate(gap, start=1):
            scores[queue[p]] = lo + (hi - lo) * j / (len(gap) + 1)
    return _finish(pushed, queue, labelled, scores)


def _renumber(pushed: dict[int, float], queue: list[int], labelled: set[int]) -> PushPlan:
    scores = {t: (i + 1) / (len(queue) + 1) for i, t in enumerate(queue)}
    return _finish(pushed, queue, labelled, scores)


def _finish(pushed, queue, labelled, scores) -> PushPlan:
    writes = {t: s for t, s in scores.items() if pushed.get(t) != s}
    last = max(scores.values(), default=0.0)
    deletes = [t for t, s in pushed.items() if t not in scores and t not in labelled and s <= last]
    after = {t: s for t, s in pushed.items() if t not in scores and t not in labelled and s > last}
    after.update(scores)
    return PushPlan(writes, sorted(deletes), after)
