"""Which view of the pool a project ranks on, chosen from its own labels (issue 16, part 3).

The pool's word statistics (model.features) find long documents' rare items sooner and cost
a few picks on short intents, where the embedding alone already separates the classes. No
global setting is right for both, so each project runs the default loop twice, on two views
of the same rows: "words" (the embedding and the lexical columns) and "embedding" (its
leading columns alone), both fitted on every label. Their queues are merged by team-draft
interleaving (Radlinski, Kurup and Joachims 2008): a task among both views' next few is
shared, otherwise one view's next task goes in, and that view owns it. A label on an owned
task is one pick of that view, a hit if the task is in any rare class. The view that fills a
contested slot is drawn by Thompson sampling on the hit rates, so the better view fills more
of them as its lead shows, and a shared task, which either view would have served, costs
nothing. Measured in docs/heldout.md: it is off by default (the `view_choice` setting).

The picks are counted from what was asked and what the labels said (`ViewCredit.count`), so
the worker rebuilds them from its store after a crash, as it does the class calibration.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from model.labels import Label, LabelState, has
from model.prioritiser import Pool, Prioritiser, Queue, RankerConfig

if TYPE_CHECKING:
    from model.screening import PoolRarity
    from model.seals import PoolIndex

VIEWS = ("words", "embedding")
SHARED = -1  # the owner of a task both views asked for
AGREE_DEPTH = 5  # a task among both views' next five is shared, not contested


@dataclass
class ViewCredit:
    """Per view, its picks on contested slots and how many were rare: a Beta(1 + hits,
    1 + misses) posterior of its hit rate."""

    hits: np.ndarray = field(default_factory=lambda: np.zeros(len(VIEWS), dtype=np.int64))
    picks: np.ndarray = field(default_factory=lambda: np.zeros(len(VIEWS), dtype=np.int64))

    @classmethod
    def count(cls, outcomes: Iterable[tuple[int, bool]]) -> ViewCredit:
        """From (owner, hit) per labelled task; shared tasks (`SHARED`) count for neither."""
        credit = cls()
        for owner, hit in outcomes:
            credit.add(owner, hit)
        return credit

    def add(self, owner: int, hit: bool) -> ViewCredit:
        if owner != SHARED:
            self.picks[owner] += 1
            self.hits[owner] += bool(hit)
        return self

    def draw(self, rng: np.random.Generator) -> int:
        """The view that fills the next contested slot: the larger of one draw from each
        posterior (Thompson sampling)."""
        return int(np.argmax(rng.beta(1 + self.hits, 1 + self.picks - self.hits)))

    def p_first_better(self, draws: int = 4000, seed: int = 0) -> float:
        """The posterior probability that the first view's hit rate is the higher: what the
        status page and the benchmark report (a fixed seed: the same counts, one answer)."""
        rng = np.random.default_rng(seed)
        h, n = self.hits, self.picks
        a, b = (rng.beta(1 + h[v], 1 + n[v] - h[v], draws) for v in (0, 1))
        return float(np.mean(a > b))


def outcomes(
    owners: dict[Hashable, int], labels: dict[Hashable, Label], targets: Sequence[str]
) -> Iterator[tuple[int, bool]]:
    """(owner, hit) of every labelled task a view put in the queue: a hit if its label
    names any rare class. What `ViewCredit.count` takes, from what the worker stores."""
    for task, owner in owners.items():
        if task in labels:
            yield owner, any(has(labels[task], t) for t in targets)


def view_configs(config: RankerConfig) -> tuple[RankerConfig, RankerConfig]:
    """The two views' configurations. The embedding view sees the embedding as
    `model.features.with_lexical` scales it, by 1/√2; twice the C fits the same model as
    C on the unit embedding (the loop without lexical columns), since scaling features by s
    is scaling C by s²."""
    return config, replace(config, C=2 * config.C, lexical_dims=0)


class ViewChoice:
    """Two prioritisers on two views of one pool, asked through one merged queue."""

    def __init__(
        self,
        targets: list[str],
        config: RankerConfig,
        prototypes: dict[str, np.ndarray] | None,
        embedding_columns: int,
    ) -> None:
        words, embedding = view_configs(config)
        self.views = (
            Prioritiser(targets, words, prototypes),
            Prioritiser(targets, embedding, prototypes, columns=embedding_columns),
        )
        self.rng = np.random.default_rng([config.random_state, 2])
        self.credit = ViewCredit()

    def fit(
        self,
        pool: Pool,
        state: LabelState,
        rarity: np.ndarray | PoolRarity | None = None,
        index: PoolIndex | None = None,
    ) -> ViewChoice:
        for prio in self.views:
            prio.fit(pool, state, rarity, index)
        return self

    def queue(self, n: int) -> tuple[Queue, np.ndarray]:
        """The merged queue of `n` tasks and each one's owner (a view's index, or SHARED)."""
        ahead = n + AGREE_DEPTH - 1  # enough of each for the last slot's look ahead
        return interleave([p.queue(ahead) for p in self.views], n, self.credit, self.rng)


def interleave(
    queues: Sequence[Queue],
    n: int,
    credit: ViewCredit,
    rng: np.random.Generator,
    depth: int = AGREE_DEPTH,
) -> tuple[Queue, np.ndarray]:
    """Team-draft interleaving of two queues, slot by slot. A task both views hold among
    their next `depth` is shared (the one they rank highest together): either would serve
    it soon, so it tells nothing about them and costs neither. Otherwise the view `credit`
    draws puts in its next task, and owns it. Each task keeps the class, rank and logit of
    the queue it came from (the first view's, when shared)."""
    taken: set[int] = set()
    picks: list[tuple[int, int]] = []  # (queue, position)
    owners: list[int] = []
    nxt = [0, 0]

    def upcoming(v: int) -> list[int]:
        """Positions of the view's next `depth` tasks not yet taken."""
        while nxt[v] < len(queues[v]) and int(queues[v].rows[nxt[v]]) in taken:
            nxt[v] += 1
        out, i = [], nxt[v]
        while len(out) < depth and i < len(queues[v]):
            if int(queues[v].rows[i]) not in taken:
                out.append(i)
            i += 1
        return out

    while len(picks) < n:
        ahead = [upcoming(0), upcoming(1)]
        left = [v for v in (0, 1) if ahead[v]]
        if not left:
            break
        rank_in_second = {int(queues[1].rows[i]): k for k, i in enumerate(ahead[1])}
        both = [(k + rank_in_second[int(queues[0].rows[i])], i) for k, i in enumerate(ahead[0])
                if int(queues[0].rows[i]) in rank_in_second]  # fmt: skip
        if both:
            v, owner, at = 0, SHARED, min(both)[1]
        else:
            v = owner = credit.draw(rng) if len(left) == 2 else left[0]
            at = ahead[v][0]  # one queue ran out: the other fills the rest, as its own
        picks.append((v, at))
        owners.append(owner)
        taken.add(int(queues[v].rows[at]))
    rows = np.array([queues[v].rows[i] for v, i in picks], dtype=np.int64)
    merged = Queue(
        rows,
        np.array([queues[v].ranks[i] for v, i in picks], dtype=np.int64),
        tuple(queues[v].targets[i] for v, i in picks),
        np.array([queues[v].logits[i] for v, i in picks], dtype=np.float64),
    )
    return merged, np.array(owners, dtype=np.int64)
