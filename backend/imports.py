"""How many imported tasks look rare: by the trained rankers, else by outlier rarity."""

from __future__ import annotations

import logging

import numpy as np

from backend.settings import ProjectConfig
from backend.store import Store
from backend.warm import project_state
from model.screening import OutlierScreen, summarise, summarise_probabilities

log = logging.getLogger("rarelabel.worker")
MIN_SCREEN_POOL = 5  # an outlier screen needs a pool to compare with


def screen_import(store: Store, cfg: ProjectConfig, vectors: dict[int, np.ndarray]) -> dict:
    """Count the likely-rare tasks of an import, record the counts in the status."""
    if not vectors:
        return {}
    p, tasks, E = cfg.project_id, list(vectors), np.stack(list(vectors.values()))
    state = project_state(store, cfg)
    model = store.model(p)
    X = state.features(store, tasks, E)
    # rankers trained on other columns (a worker restart, a changed setting) cannot score X
    if model is not None and model.any_linear and model.width == X.shape[1]:
        linear = np.array(model.stages) == "linear"
        proba = model.probabilities(X)
        summary = summarise_probabilities(proba, targets=model.targets, columns=linear)
        summary.pop("by_target", None)
        how = "rankers"
    else:
        if state.screen is None:
            pool = state.refresh(store)
            if len(pool.ids) < MIN_SCREEN_POOL:
                log.info("project %s: %d tasks are too few to screen", p, len(pool.ids))
                return {}
            screen = OutlierScreen()  # fitted on a sample: no float32 copy of a large pool
            state.screen = screen.fit(state.semantic(pool.X[screen.fit_sample(len(pool.ids))]))
        summary, how = summarise(state.screen.score(E)), "outlier screen"
    store.set_status(
        p,
        last_import_tasks=summary["n"],
        last_import_likely_rare=summary["likely_rare"],
        last_import_likely_common=summary["likely_common"],
    )
    log.info(
        "project %s: import of %d tasks screened by the %s: %d likely rare, %d likely common",
        p,
        summary["n"],
        how,
        summary["likely_rare"],
        summary["likely_common"],
    )
    return summary
