"""`rarelabel simulate`: the replay on real dbpedia texts, its outputs, and its bad-input errors.

The CLI runs as a subprocess with RARELABEL_CACHE_DIR pointing at the session's cache, which
already holds every text used here, so no child process loads the embedding model.
"""

from __future__ import annotations

import csv
import gzip
import json
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from backend.reports import simulation_table
from benchmarks.harness import sign_test
from model.data import DataError, Dataset, build_pool, read_csv
from model.labels import LabelState
from model.prioritiser import Pool, Prioritiser, RankerConfig
from model.simulate import f1_per_target, recall_at, report, run

BUDGET = 30
PREVALENCE = 0.02
INITIAL = 5


def write_csv(path: Path, header: list[str], rows) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def rarelabel(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["rarelabel", "simulate", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def cached_vectors(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM vec").fetchone()[0]


@pytest.fixture(scope="module")
def csv_files(real_pool, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("simulate-data")
    rp = real_pool
    pool_rows = zip(rp.ids, rp.labels.tolist(), rp.texts, strict=True)
    test_rows = zip(rp.test_ids, rp.test_labels.tolist(), rp.test_texts, strict=True)
    header = ["id", "label", "text"]
    return {
        "pool": write_csv(d / "pool.csv.gz", header, pool_rows),
        "test": write_csv(d / "test.csv", header, test_rows),
    }


@pytest.fixture(scope="module")
def cli_runs(real_pool, csv_files, bad_cases, subprocess_env, tmp_path_factory):
    """Every `rarelabel simulate` process of this module, started together.

    Each start costs seconds here (imports), so the good run and the bad-input runs overlap.
    Returns the good run's process, its output directory, and the cache size before / after.
    """
    out = tmp_path_factory.mktemp("simulate-out") / "result"
    before = cached_vectors(real_pool.cache_path)
    targets = [a for t in real_pool.targets for a in ("--target", t)]
    good = [csv_files["pool"], *targets, "--prevalence", PREVALENCE, "--budget", BUDGET,
            "--initial-positives", INITIAL, "--random-state", 3, "--test", csv_files["test"],
            "--out", out]  # fmt: skip
    with ThreadPoolExecutor(max_workers=4) as ex:
        good_run = ex.submit(rarelabel, good, subprocess_env, out.parent)
        bad = {
            name: ex.submit(rarelabel, bad_cases[name][0], subprocess_env, out.parent)
            for name in SUBPROCESS_CASES
        }
        proc = good_run.result()
        bad_procs = {name: f.result() for name, f in bad.items()}
    after = cached_vectors(real_pool.cache_path)
    return (proc, out, before, after), bad_procs


@pytest.fixture(scope="module")
def simulated(cli_runs):
    return cli_runs[0]


@pytest.fixture(scope="module")
def bad_runs(cli_runs) -> dict[str, subprocess.CompletedProcess]:
    return cli_runs[1]


def test_simulate_exits_cleanly_and_embeds_nothing_new(simulated):
    proc, _, before, after = simulated
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert after == before  # every text came from the cache another process wrote


def test_curve_json_has_the_promised_shape(simulated, real_pool):
    proc, out, _, _ = simulated
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = json.loads((out / "curve.json").read_text())
    # the pool: every other row, and n_t rows per target with n_t / (others + k n_t) = prevalence
    others = int(np.sum(~np.isin(real_pool.labels, real_pool.targets)))
    k = len(real_pool.targets)
    per_target = round(PREVALENCE * others / (1 - k * PREVALENCE))
    assert curve["positives"] == k * (per_target - INITIAL)
    assert set(curve["found"]) == {"system", "random", "tropel"}
    for method, found in curve["found"].items():
        assert len(found) == BUDGET, method
        steps = np.diff([0, *found])
        assert set(steps.tolist()) <= {0, 1}, method  # non-decreasing, one label at a time
        assert found[-1] <= curve["positives"]
    # the loop beats labelling at random on this pool (random expects < 1 find in 30)
    assert curve["found"]["system"][-1] >= 5
    assert curve["found"]["system"][-1] > curve["found"]["random"][-1]
    assert set(curve["f1"]) == set(real_pool.targets)
    assert all(0.0 <= v <= 1.0 for v in curve["f1"].values())


def test_curve_png_is_written(simulated):
    _, out, _, _ = simulated
    for name in ("curve.png", "estimate.png"):
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert len(png) > 5000, name


def assert_estimate_series(series: dict, n: int) -> int:
    """Each series is aligned with the labels, and where known finite with low <= total <=
    high, low never below the items already found; returns how many entries are known."""
    assert set(series) == {"total", "low", "high"}
    assert all(len(v) == n for v in series.values())
    known = 0
    for total, low, high in zip(series["total"], series["low"], series["high"], strict=True):
        if total is None:
            assert low is None and high is None
            continue
        known += 1
        assert all(np.isfinite(v) for v in (total, low, high))
        assert 0 <= low <= total <= high
    return known


def test_curve_json_has_the_estimate_aligned_with_the_labels(simulated, real_pool):
    proc, out, _, _ = simulated
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = json.loads((out / "curve.json").read_text())
    n = len(curve["found"]["system"])
    known = assert_estimate_series(curve["estimate"], n)
    assert known >= n // 2  # after a few finds the estimate is known
    found = curve["found"]["system"]
    for i in range(n):  # low counts the finds besides the seeds: never fewer than found
        if curve["estimate"]["low"][i] is not None:
            assert curve["estimate"]["low"][i] >= found[i] - 1e-9
    by_target = curve["estimate_by_target"]
    assert set(by_target) == set(real_pool.targets)
    for series in by_target.values():
        assert_estimate_series(series, n)
    assert sum(curve["positives_by_target"].values()) == curve["positives"]
    for i in range(n):  # the sum of the classes
        parts = [by_target[t]["total"][i] for t in real_pool.targets]
        if None not in parts:
            assert curve["estimate"]["total"][i] == pytest.approx(sum(parts))
    assert "stopped_at" in curve
    assert curve["stopped_at"] is None or 1 <= curve["stopped_at"] <= n


def test_table_and_held_out_f1_are_printed(simulated, real_pool):
    proc, out, _, _ = simulated
    curve = json.loads((out / "curve.json").read_text())
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    assert f"found@{BUDGET}" in header and "recall" in header
    for method in ("system", "tropel", "random"):
        row = next(line for line in lines if line.startswith(method)).split()
        found = curve["found"][method][-1]
        assert int(row[1]) == found
        assert float(row[2]) == pytest.approx(found / min(BUDGET, curve["positives"]), abs=0.006)
    f1_line = next(line for line in lines if "F1" in line)
    for t in real_pool.targets:
        assert t in f1_line
    mean = np.mean(list(curve["f1"].values()))
    assert f"mean {mean:.2f}" in f1_line


# --- bad input: one line on stderr, naming the problem, non-zero exit, no traceback ------------


@pytest.fixture(scope="module")
def bad_cases(real_pool, csv_files, tmp_path_factory) -> dict[str, tuple[list, str]]:
    """name -> (command-line arguments after `simulate`, a word the error must contain)."""
    d = tmp_path_factory.mktemp("bad-input")
    rp = real_pool
    good = [(rp.ids[i], rp.labels[i], rp.texts[i]) for i in range(40)]
    header = ["id", "label", "text"]
    empty = write_csv(d / "empty.csv", header, [*good[:10], ("x1", "Artist", ""), *good[10:]])
    blank = write_csv(d / "blank.csv", header, [*good, ("x2", "Artist", "   ")])
    held_out = write_csv(d / "heldout.csv", ["id", "label", "body"], good)
    (d / "garbage.csv.gz").write_bytes(b"this is not gzip data at all")
    pool = csv_files["pool"]
    two = ["--target", rp.targets[0], "--target", rp.targets[1]]
    out = ["--out", d / "out"]
    cases = {
        "missing text column": ([pool, *two, "--text-column", "abstract"], "abstract"),
        "missing label column": ([pool, *two, "--label-column", "category"], "category"),
        "unknown target": ([pool, "--target", "Spaceship"], "Spaceship"),
        "prevalence 0": ([pool, *two, "--prevalence", "0"], "prevalence"),
        "prevalence 1.5": ([pool, *two, "--prevalence", "1.5"], "prevalence"),
        "prevalence negative": ([pool, *two, "--prevalence", "-0.1"], "prevalence"),
        "prevalence beyond the rows": ([pool, *two, "--prevalence", "0.3"], "prevalence"),
        "empty text": ([empty, "--target", "Artist"], "empty"),
        "blank text": ([blank, "--target", "Artist"], "empty"),
        "no such file": ([d / "nowhere.csv", "--target", "Artist"], "nowhere.csv"),
        "not a csv": ([d / "garbage.csv.gz", "--target", "Artist"], "garbage.csv.gz"),
        "test file without the column": ([pool, *two, "--test", held_out], "'text'"),
        "budget 0": ([pool, *two, "--budget", "0"], "budget"),
        "too few target rows for seeds": ([pool, *two, "--initial-positives", "50"], "50"),
    }
    return {name: ([*map(str, args), *map(str, out)], word) for name, (args, word) in cases.items()}


# The list, run as real processes (concurrently: each start costs seconds here).
SUBPROCESS_CASES = [
    "missing text column",
    "unknown target",
    "prevalence 0",
    "prevalence 1.5",
    "empty text",
    "no such file",
]
IN_PROCESS_CASES = [
    *SUBPROCESS_CASES,
    "missing label column",
    "prevalence negative",
    "prevalence beyond the rows",
    "blank text",
    "not a csv",
    "test file without the column",
    "budget 0",
    "too few target rows for seeds",
]


def assert_one_line_error(returncode: int, stdout: str, stderr: str, word: str) -> None:
    assert returncode != 0
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert word.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_is_one_line_naming_the_problem(bad_runs, bad_cases, case):
    proc = bad_runs[case]
    args, word = bad_cases[case]
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, word)
    assert not (Path(args[-1]) / "curve.json").exists()


@pytest.mark.parametrize("case", IN_PROCESS_CASES)
def test_bad_input_through_main_is_one_line_naming_the_problem(bad_cases, case, capsys):
    from backend.cli import main

    args, word = bad_cases[case]
    code = main(["simulate", *args])  # an uncaught exception would fail this test
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, word)
    assert not (Path(args[-1]) / "curve.json").exists()


def test_a_budget_larger_than_the_pool_ends_when_the_pool_is_labelled():
    X, labels = clusters(n_other=10, n_rare=4)
    seeds = {0: "A", 5: "B"}
    for method in ("random", "system", "tropel"):
        res = run(X, labels, ["A", "B"], seeds, len(X) + 10, method, prototypes={})
        assert len(res.found) == len(X) - len(seeds)
        assert res.found[-1] == 4 + 4 - len(seeds)  # everything got labelled


# --- the pieces, in process, on synthetic data ---------------------------------------------------


def synthetic_dataset(n_other: int = 1000, n_target: int = 100) -> Dataset:
    labels = ["other"] * n_other + ["A"] * n_target + ["B"] * n_target
    return Dataset(
        [f"text {i}" for i in range(len(labels))], labels, [str(i) for i in range(len(labels))]
    )


@pytest.mark.parametrize("prevalence", [0.005, 0.01, 0.05])
def test_build_pool_gives_each_target_the_asked_share(prevalence):
    data = synthetic_dataset()
    rows = build_pool(data, ["A", "B"], prevalence, np.random.default_rng(0))
    labels = np.array(data.labels)[rows]
    assert len(set(rows.tolist())) == len(rows)
    assert np.sum(labels == "other") == 1000  # every other row kept
    for t in ("A", "B"):
        n_t = np.sum(labels == t)
        assert n_t >= 1
        assert abs(n_t - prevalence * len(rows)) <= 1.0
    assert not np.all(np.diff(rows) > 0)  # shuffled


def test_build_pool_without_prevalence_is_the_whole_file_shuffled():
    data = synthetic_dataset(50, 5)
    rows = build_pool(data, ["A"], None, np.random.default_rng(0))
    assert sorted(rows.tolist()) == list(range(len(data)))


@pytest.mark.parametrize("prevalence", [0.0, 1.0, -0.5, 0.5, 0.2])
def test_build_pool_refuses_impossible_prevalences(prevalence):
    with pytest.raises(DataError, match="prevalence"):
        build_pool(synthetic_dataset(), ["A", "B"], prevalence, np.random.default_rng(0))


def test_read_csv_reads_gzip_and_numbers_rows_without_ids(tmp_path):
    path = write_csv(tmp_path / "d.csv.gz", ["text", "label"], [("alpha", " A "), ("beta", "B")])
    data = read_csv(path)
    assert data.texts == ["alpha", "beta"]
    assert data.labels == ["A", "B"]
    assert data.ids == ["0", "1"]


def test_recall_at():
    found = [0, 1, 1, 2, 3]
    assert recall_at(found, 10, 2) == pytest.approx(1 / 2)
    assert recall_at(found, 4, 5) == pytest.approx(3 / 4)  # min(k, positives)
    assert recall_at(found, 10, 6) is None  # the run was shorter
    assert recall_at(found, 0, 3) is None


def clusters(seed: int = 0, n_other: int = 400, n_rare: int = 20, dim: int = 16, centres=0):
    """Two tight rare clusters in a diffuse background; `centres` seeds the cluster centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1000 + centres).normal(size=(3, dim))
    X = np.vstack(
        [
            centres[0] + 0.4 * rng.normal(size=(n_rare, dim)),
            centres[1] + 0.4 * rng.normal(size=(n_rare, dim)),
            centres[2] + 2.0 * rng.normal(size=(n_other, dim)),
        ]
    )
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    labels = np.array(["A"] * n_rare + ["B"] * n_rare + ["other"] * n_other)
    return X, labels


def test_run_counts_finds_one_label_at_a_time_and_beats_random():
    X, labels = clusters(n_other=200, n_rare=10)
    seeds = {0: "A", 1: "A", 10: "B", 11: "B"}
    protos = {"A": X[0], "B": X[10]}
    budget = 25
    results = {
        m: run(X, labels, ["A", "B"], seeds, budget, m, prototypes=protos)
        for m in ("system", "tropel", "random")
    }
    positives = 20 - len(seeds)
    for method, res in results.items():
        assert res.method == method
        assert len(res.found) == budget
        assert set(np.diff([0, *res.found]).tolist()) <= {0, 1}
        assert res.found[-1] <= positives
    assert results["system"].found[-1] >= 0.8 * positives
    assert results["system"].found[-1] > results["random"].found[-1]
    state = results["system"].state
    assert len(state.labels) == len(seeds) + budget
    rep = report(list(results.values()), positives, budget, ["A", "B"])
    table = simulation_table(rep)
    for method in results:
        assert any(line.startswith(method) for line in table.splitlines())
    assert f"found@{budget}" in table


def test_estimates_change_nothing_and_an_audit_rate_draws_audit_picks():
    X, labels = clusters(n_other=300, n_rare=15)
    seeds = {0: "A", 1: "A", 15: "B", 16: "B"}
    protos = {"A": X[0], "B": X[15]}
    targets, budget = ["A", "B"], 40
    plain = run(X, labels, targets, seeds, budget, prototypes=protos)
    counted = run(X, labels, targets, seeds, budget, prototypes=protos, estimates=True)
    assert counted.found == plain.found
    assert list(counted.state.labels) == list(plain.state.labels)  # the same picks, in order
    assert plain.estimates is None and not any(plain.audit)
    assert len(counted.estimates) == budget and set(counted.estimates[0]) == set(targets)

    audited = run(
        X, labels, targets, seeds, budget, prototypes=protos, estimates=True, audit_rate=0.3
    )
    assert len(audited.audit) == len(audited.found) == len(audited.estimates) == budget
    assert 4 <= sum(audited.audit) <= 20  # about 0.3 of 40
    asked = set(audited.state.asked_by)  # audit picks are not the classes' asks
    rows = list(audited.state.labels)[len(seeds) :]
    assert all((row in asked) != audit for row, audit in zip(rows, audited.audit, strict=True))
    last = audited.estimates[-1]
    for t in targets:
        assert last[t].found == sum(labels[r] == t for r in audited.state.labels)
    with pytest.raises(ValueError, match="audit_rate"):
        run(X, labels, targets, seeds, budget, prototypes=protos, audit_rate=1.0)


def test_a_seals_run_indexes_only_the_columns_it_is_told():
    """As in the service, SEALS finds neighbours by the embedding (the leading columns)."""
    X, labels = clusters(n_other=200, n_rare=10)
    seeds = {0: "A", 1: "A", 10: "B", 11: "B"}
    protos = {"A": X[0], "B": X[10]}
    cfg = RankerConfig(seals_k=10, seals_sample=50, lexical_dims=0, seals_above=1)
    res = run(X, labels, ["A", "B"], seeds, 10, "system", cfg, protos, index_columns=4)
    assert res.prioritiser.seals_.candidates.index.dim == 4 and len(res.found) == 10
    assert res.prioritiser.seals_.own_index is None


@pytest.mark.parametrize("more, fewer", [(8, 6), (12, 2), (0, 5), (16, 0), (7, 7), (1, 0)])
def test_sign_test_is_scipys_two_sided_binomial_test(more, fewer):
    from scipy.stats import binomtest

    expected = binomtest(more, more + fewer, 0.5).pvalue
    assert sign_test(more, fewer) == pytest.approx(expected, rel=1e-12)
    assert sign_test(fewer, more) == sign_test(more, fewer)
    assert sign_test(0, 0) == 1.0


def test_f1_per_target_matches_a_direct_count():
    from sklearn.metrics import f1_score

    X, labels = clusters(seed=1)
    pool = Pool(list(range(len(X))), X)
    state = LabelState(["A", "B"])
    for i in (0, 1, 2, 20, 21, 22, 50, 60, 70):
        state.set_label(i, str(labels[i]))
    prio = Prioritiser(["A", "B"], RankerConfig(f_a=10)).fit(pool, state)
    X_test, y_test = clusters(seed=2)  # new points around the same centres
    f1 = f1_per_target(prio, X_test, y_test)
    scores = prio.score(X_test)
    for j, t in enumerate(["A", "B"]):
        assert f1[t] == pytest.approx(f1_score(y_test == t, scores[:, j] > 0))
    assert min(f1.values()) > 0.5


def test_simulate_with_view_choice_reports_each_views_contested_picks(
    csv_files, real_pool, tmp_path, capsys
):
    from backend.cli import main

    out = tmp_path / "views"
    args = [str(csv_files["pool"]), "--target", real_pool.targets[0], "--budget", "30"]
    assert main(["simulate", *args, "--view-choice", "--out", str(out)]) == 0
    views = json.loads((out / "curve.json").read_text())["views"]
    assert sum(views["picks"]) > 0
    assert all(0 <= h <= n for h, n in zip(views["hits"], views["picks"], strict=True))
    assert sum(views["picks"]) <= 30  # one slot per label at most
    assert "view choice (system)" in capsys.readouterr().out
    assert main(["simulate", *args, "--out", str(tmp_path / "plain")]) == 0
    assert json.loads((tmp_path / "plain" / "curve.json").read_text())["views"] is None
