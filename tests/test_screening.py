"""Screening: outlier rarity, its summaries, and the `rarelabel screen` command.

Synthetic vectors throughout. The CLI runs as a subprocess whose embedding cache
(RARELABEL_CACHE_DIR) is filled beforehand with planted vectors under the keys the default
model would use, so no process loads the embedding model.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.data import DataError
from model.embedding import DEFAULT_MODEL, SQLiteCache, cache_key
from model.screening import (
    METHODS,
    OutlierScreen,
    PoolRarity,
    blend_prior,
    flag_by_probability,
    percentile_rank,
    screen,
    summarise,
    summarise_probabilities,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 384


def unit(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def planted(n_bulk: int = 600, n_far: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors: a bulk of four broad clusters plus one tight cluster far from all."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, DIM))
    bulk = centres[rng.integers(0, 4, n_bulk)] + 0.8 * rng.normal(size=(n_bulk, DIM))
    far = -centres.sum(axis=0) * 3 + 0.3 * rng.normal(size=(n_far, DIM))
    X = unit(np.vstack([bulk, far]))
    return X, np.r_[np.zeros(n_bulk, bool), np.ones(n_far, bool)]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return planted()


@pytest.mark.parametrize("method", METHODS)
def test_planted_far_cluster_is_rarer_than_the_bulk(data, method):
    X, is_far = data
    rarity = OutlierScreen(method, random_state=0, n_estimators=50).fit_score(X)
    assert rarity.shape == (len(X),)
    assert rarity.min() >= 0 and rarity.max() <= 1
    assert rarity[is_far].mean() > 0.9 > rarity[~is_far].mean()
    assert rarity[is_far].min() > np.median(rarity[~is_far])
    # new rows against the fitted screen: a far row is rarer than a bulk row
    fresh, fresh_far = planted(n_bulk=50, n_far=5, seed=0)
    new = OutlierScreen(method, n_estimators=50).fit(X[~is_far]).score(fresh)
    assert new.min() >= 0 and new.max() <= 1
    assert new[fresh_far].min() > np.median(new[~fresh_far])


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_for_a_seed_and_subsampled_fit(data, method):
    X, _ = data
    a = OutlierScreen(method, random_state=3, max_fit_rows=300, n_estimators=50).fit_score(X)
    b = OutlierScreen(method, random_state=3, max_fit_rows=300, n_estimators=50).fit_score(X)
    np.testing.assert_array_equal(a, b)
    s = OutlierScreen(method, random_state=3, max_fit_rows=300, n_estimators=50).fit(X)
    assert len(s.fit_rows_) == 300
    np.testing.assert_array_equal(s.score(X[:20]), s.score(X[:20]))


@pytest.mark.parametrize("method", ["lof", "iforest"])
def test_pool_rarity_scores_a_row_when_it_is_read_and_equals_fit_score(data, method):
    X, _ = data
    full = OutlierScreen(method, random_state=3, max_fit_rows=300, n_estimators=50).fit_score(X)
    screen = OutlierScreen(method, random_state=3, max_fit_rows=300, n_estimators=50)
    scored = []
    score = screen.score
    screen.score = lambda rows: scored.append(len(rows)) or score(rows)
    stored = np.hstack([X / np.sqrt(2), np.zeros((len(X), 4), np.float32)])  # as lexical rows
    rarity = PoolRarity(screen, stored, lambda rows: rows[:, :DIM] * np.sqrt(2))
    assert np.isnan(rarity.values).sum() == len(X) - 300 and scored == []  # the fit only
    fitted = rarity.fit_rows
    rows = np.array([fitted[0], 400, fitted[0], 610, 611])
    np.testing.assert_allclose(rarity[rows], full[rows], atol=1e-9)
    unfitted = np.isin(np.unique(rows), fitted, invert=True).sum()
    assert unfitted >= 1
    assert scored == ([unfitted] if unfitted else [])
    rarity[rows]  # read again: nothing new to score
    assert len(scored) == (1 if unfitted else 0)
    np.testing.assert_allclose(rarity[:], full, atol=1e-9)
    assert not np.isnan(rarity.values).any()


def test_rarity_is_a_percentile_of_the_reference(data):
    X, _ = data
    rarity = OutlierScreen("iforest").fit_score(X)
    # on the fitted rows themselves the rarity is close to uniform: ~10% above 0.9
    assert abs(np.mean(rarity > 0.9) - 0.1) < 0.02
    assert abs(rarity.mean() - 0.5) < 0.02
    np.testing.assert_allclose(
        percentile_rank(np.array([3.0, 1.0, 2.0, 2.0])), [0.875, 0.125, 0.5, 0.5]
    )


def test_summaries_add_up():
    rarity = np.array([0.0, 0.5, 0.9, 0.91, 1.0])
    s = summarise(rarity, threshold=0.9)
    assert s == {"n": 5, "likely_rare": 2, "likely_common": 3}
    assert summarise(rarity, threshold=0.0)["likely_rare"] == 4
    proba = np.array([[0.1, 0.2], [0.6, 0.1], [0.4, 0.51], [0.5, 0.5]])
    np.testing.assert_array_equal(flag_by_probability(proba), [False, True, True, False])
    s = summarise_probabilities(proba, targets=["a", "b"])
    assert s == {"n": 4, "likely_rare": 2, "likely_common": 2, "by_target": {"a": 1, "b": 1}}
    assert summarise_probabilities(np.zeros((3, 0)))["likely_rare"] == 0
    # only the columns that count (e.g. linear-stage classes): column a is ignored
    only_b = np.array([False, True])
    np.testing.assert_array_equal(flag_by_probability(proba, columns=only_b), [0, 0, 1, 0])
    s = summarise_probabilities(proba, targets=["a", "b"], columns=only_b)
    assert s["likely_rare"] == 1 and s["by_target"] == {"a": 0, "b": 1}


def test_screen_and_blend(data):
    X, is_far = data
    rarity, summary, model = screen(X, "iforest", threshold=0.95)
    assert summary["n"] == len(X) and summary["likely_rare"] + summary["likely_common"] == len(X)
    assert isinstance(model, OutlierScreen)
    proto = X @ X[~is_far][0]
    np.testing.assert_allclose(blend_prior(proto, rarity, 1.0), rarity)
    np.testing.assert_allclose(blend_prior(proto, rarity, 0.0), percentile_rank(proto))
    mixed = blend_prior(proto, rarity, 0.3)
    assert mixed.min() >= 0 and mixed.max() <= 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda X: OutlierScreen("svm").fit(X), "unknown screening method"),
        (lambda X: OutlierScreen().fit(X[:0]), "empty pool"),
        (lambda X: OutlierScreen().fit(X[:1]), "at least 2 rows"),
        (lambda X: OutlierScreen().fit(np.full((3, 4), np.nan)), "NaN"),
        (lambda X: OutlierScreen().fit(X).score(X[:, :10]), "dimensions"),
        (lambda X: summarise(np.zeros(3), threshold=1.5), "threshold"),
        (lambda X: blend_prior(np.zeros(3), np.zeros(3), weight=2), "weight"),
    ],
)
def test_bad_input_is_a_data_error(data, call, message):
    with pytest.raises(DataError, match=message):
        call(data[0][:50])


# ---------------------------------------------------------------- the command line


def write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module", autouse=True)
def cli_started(tmp_path_factory):
    """Every `rarelabel screen` process of this module, started before the module's first
    test so that they run while the in-process tests do (each start costs seconds here)."""
    d = tmp_path_factory.mktemp("screen")
    X, is_far = planted(n_bulk=80, n_far=6, seed=1)
    texts = [f"{'odd' if far else 'plain'} text number {i}" for i, far in enumerate(is_far)]
    labels = ["Rare" if far else ("A" if i % 2 else "B") for i, far in enumerate(is_far)]
    cache = SQLiteCache(d / "cache" / "embeddings.sqlite")
    cache.put_many({cache_key(DEFAULT_MODEL, t): x for t, x in zip(texts, X, strict=True)})
    header = ["id", "label", "text"]
    rows = [(f"t{i}", lab, t) for i, (lab, t) in enumerate(zip(labels, texts, strict=True))]
    good = write_csv(d / "pool.csv", header, rows)
    files = {
        "empty_text": write_csv(d / "empty_text.csv", header, [*rows[:5], ("x", "A", "  ")]),
        "empty_pool": write_csv(d / "empty_pool.csv", header, []),
        "one_row": write_csv(d / "one_row.csv", header, rows[:1]),
    }
    env = {k: v for k, v in os.environ.items() if k != "RARELABEL_EMBEDDING_MODEL"}
    env.update(
        RARELABEL_CACHE_DIR=str(d / "cache"),
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )
    runs = {
        "iforest": [good, "--label-column", "label", "--out", d / "out-iforest"],
        "missing_column": [good, "--text-column", "body", "--out", d / "x"],
        "missing_label_column": [good, "--label-column", "class", "--out", d / "x"],
        "empty_text": [files["empty_text"], "--out", d / "x"],
        "empty_pool": [files["empty_pool"], "--out", d / "x"],
        "one_row": [files["one_row"], "--out", d / "x"],
        "unknown_method": [good, "--method", "svm", "--out", d / "x"],
        "bad_threshold": [good, "--threshold", "1.5", "--out", d / "x"],
        "threshold_not_a_number": [good, "--threshold", "high", "--out", d / "x"],
        "no_file": [d / "nope.csv", "--out", d / "x"],
    }

    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "screen", *map(str, args)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in runs.items()
    }
    yield d, procs, is_far, good, env
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.fixture(scope="module")
def cli(cli_started):
    """(dir, {name: CompletedProcess}, is_far, good CSV, env) once every process is done."""
    d, procs, is_far, good, env = cli_started
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=180)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return d, done, is_far, good, env


def test_cli_in_process_lof(cli, capsys, monkeypatch):
    """The same command through `main()` (no interpreter start): LOF, another threshold."""
    from backend.cli import main

    d, _, is_far, good, env = cli
    monkeypatch.setenv("RARELABEL_CACHE_DIR", env["RARELABEL_CACHE_DIR"])
    monkeypatch.delenv("RARELABEL_EMBEDDING_MODEL", raising=False)
    out = d / "out-lof"
    argv = ["screen", str(good), "--method", "lof", "--threshold", "0.8", "--out", str(out)]
    assert main(argv) == 0
    assert "with lof" in capsys.readouterr().out
    with open(out / "screen.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0].keys() == {"id", "rarity", "flagged"}  # no label column asked for
    rarity = np.array([float(r["rarity"]) for r in rows])
    np.testing.assert_array_equal([r["flagged"] == "1" for r in rows], rarity > 0.8)
    assert rarity[is_far].mean() > rarity[~is_far].mean()
    assert (out / "rarity_hist.png").stat().st_size > 1000


def test_cli_writes_table_csv_and_histogram(cli):
    d, done, is_far, _, _ = cli
    proc = done["iforest"]
    assert proc.returncode == 0, proc.stderr
    assert "likely rare" in proc.stdout and "likely common" in proc.stdout
    out = d / "out-iforest"
    with open(out / "screen.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(is_far)
    assert rows[0].keys() == {"id", "rarity", "flagged", "label"}
    assert [r["id"] for r in rows[:2]] == ["t0", "t1"]
    rarity = np.array([float(r["rarity"]) for r in rows])
    flagged = np.array([r["flagged"] == "1" for r in rows])
    np.testing.assert_array_equal(flagged, rarity > 0.9)
    assert rarity[is_far].mean() > rarity[~is_far].mean()
    assert (out / "rarity_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # with labels: a per-label table, the planted class on top and marked as small
    table = proc.stdout.splitlines()
    first = table[table.index(next(x for x in table if x.startswith("label"))) + 1]
    assert first.startswith("Rare") and "small class" in first


BAD = [
    "missing_column",
    "missing_label_column",
    "empty_text",
    "empty_pool",
    "one_row",
    "unknown_method",
    "bad_threshold",
    "threshold_not_a_number",
    "no_file",
]


@pytest.mark.parametrize("name", BAD)
def test_cli_bad_input_one_line_error(cli, name):
    proc = cli[1][name]
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rarelabel screen: error:")
    assert "Traceback" not in proc.stderr
