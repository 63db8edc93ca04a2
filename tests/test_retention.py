"""`rarelabel retain`: per-label retention ratios on real dbpedia rows and small Label Studio
exports, the adaptive ratios, and a one-line error for every bad input."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from backend.cli import main
from backend.labelstudio import choices_result
from model.data import DataError
from model.retention import (
    CSV_KIND,
    LS_JSON,
    adaptive_ratios,
    kept_count,
    parse_ratios,
    read_export,
    retain,
    write_export,
)
from tests.data_paths import DBPEDIA_SAMPLE

DBPEDIA = DBPEDIA_SAMPLE
SEED_SCHEME = [
    "--ratio",
    "Company=1",
    "--ratio",
    "EducationalInstitution=1",
    "--ratio",
    "Artist=1",
    "--ratio",
    "Athlete=1",
    "--ratio",
    "OfficeHolder=1",
    "--ratio",
    "MeanOfTransportation=0.9",
    "--ratio",
    "Building=0.8",
    "--ratio",
    "NaturalPlace=0.8",
    "--default",
    "0.001",
]
# Label counts of the first 3,000 rows of tests/data/dbpedia14_sample.csv.gz, and what the
# seed's scheme keeps: round(fraction * count), halves up (0.9 * 179 = 161.1, 0.8 * 251 = 200.8).
SAMPLE_COUNTS = {
    "Animal": 312,
    "Village": 306,
    "NaturalPlace": 251,
    "Plant": 245,
    "Athlete": 234,
    "Album": 233,
    "Film": 228,
    "OfficeHolder": 205,
    "Artist": 181,
    "MeanOfTransportation": 179,
    "EducationalInstitution": 177,
    "Company": 165,
    "WrittenWork": 159,
    "Building": 125,
}
SAMPLE_KEPT = {
    "Athlete": 234,
    "OfficeHolder": 205,
    "NaturalPlace": 201,
    "Artist": 181,
    "EducationalInstitution": 177,
    "Company": 165,
    "MeanOfTransportation": 161,
    "Building": 100,
}


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory) -> Path:
    """The first 3,000 rows of the dbpedia14 sample (real rows), as a gzipped CSV."""
    path = tmp_path_factory.mktemp("retain") / "sample.csv.gz"
    with gzip.open(DBPEDIA, "rt", encoding="utf-8", newline="") as f:
        rows = list(itertools.islice(csv.reader(f), 3001))
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def ann(label: str | None, *, id: int, cancelled: bool = False, updated: str = "") -> dict:
    result = [] if label is None else choices_result(label, "label", "text")
    return {"id": id, "result": result, "was_cancelled": cancelled, "updated_at": updated}


@pytest.fixture
def ls_export(tmp_path) -> tuple[Path, list[dict]]:
    """A small export: 30 'common', 6 'rare' tasks, plus tasks that carry no label."""
    tasks = []
    for i in range(36):
        label = "common" if i < 30 else "rare"
        tasks.append(
            {
                "id": i,
                "data": {"text": f"text {i}"},
                "annotations": [ann(label, id=i)],
                "predictions": [],
                "meta": {"n": i},
            }
        )
    # newest annotation wins (by updated_at), cancelled ones are ignored
    tasks[0]["annotations"] = [
        ann("rare", id=100, updated="2024-01-02T00:00:00Z"),
        ann("common", id=101, updated="2024-01-01T00:00:00Z"),
        ann("common", id=102, cancelled=True, updated="2024-01-03T00:00:00Z"),
    ]
    tasks.append(
        {
            "id": 36,
            "data": {"text": "skipped"},
            "annotations": [ann("rare", id=200, cancelled=True)],
        }
    )
    tasks.append({"id": 37, "data": {"text": "no annotation"}, "annotations": []})
    tasks.append({"id": 38, "data": {"text": "empty result"}, "annotations": [ann(None, id=300)]})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path, tasks


# --- the core functions -------------------------------------------------------------------------


def test_parse_ratios():
    assert parse_ratios(["Company=1", "Building = 0.8", "a=b=0"]) == {
        "Company": 1.0,
        "Building": 0.8,
        "a=b": 0.0,
    }
    assert parse_ratios(None) == {}


def test_same_seed_same_rows_other_seed_other_rows():
    labels = ["a"] * 500 + ["b"] * 300 + ["c"] * 7
    ratios = {"a": 0.1, "b": 0.5}
    first = retain(labels, ratios, default=1.0, seed=3)
    np.testing.assert_array_equal(first, retain(labels, ratios, default=1.0, seed=3))
    assert not np.array_equal(first, retain(labels, ratios, default=1.0, seed=4))
    # a label's draw does not depend on the other labels' ratios
    other = retain(labels, {"a": 0.1, "b": 0.2}, default=1.0, seed=3)
    np.testing.assert_array_equal(first[first < 500], other[other < 500])


@pytest.mark.parametrize("n", [1, 7, 10, 333, 2000])
@pytest.mark.parametrize("f", [0.0, 0.001, 0.15, 0.25, 0.5, 0.8, 0.9, 1.0])
def test_counts_are_rounded_fraction_of_each_label(n, f):
    labels = ["x"] * n + ["y"] * 40
    kept = retain(labels, {"x": f}, default=0.5, seed=0)
    counts = Counter(labels[i] for i in kept)
    assert counts["x"] == kept_count(f, n) == min(n, int(np.floor(f * n + 0.5)))
    assert counts["y"] == 20
    assert len(set(kept.tolist())) == len(kept) and np.all(np.diff(kept) > 0)


def test_fraction_one_keeps_all_zero_keeps_none_and_smaller_is_subset():
    labels = ["a", "b", "a", "c", "a", "b"] * 50
    np.testing.assert_array_equal(retain(labels, {}, 1.0, seed=1), np.arange(len(labels)))
    assert len(retain(labels, {}, 0.0, seed=1)) == 0
    small, big = retain(labels, {}, 0.3, seed=1), retain(labels, {}, 0.7, seed=1)
    assert set(small.tolist()) <= set(big.tolist())


def test_adaptive_ratios_cap_the_big_labels():
    counts = {"a": 100, "b": 50, "c": 10, "d": 5}
    ratios = adaptive_ratios(counts, 0.4)
    kept = {lab: kept_count(ratios[lab], n) for lab, n in counts.items()}
    # cap 30: 30 <= 0.4 * (30 + 30 + 10 + 5) = 30, and 31 would not fit
    assert kept == {"a": 30, "b": 30, "c": 10, "d": 5}
    assert ratios["c"] == ratios["d"] == 1.0
    assert max(kept.values()) <= 0.4 * sum(kept.values())
    # a share no label exceeds changes nothing
    assert set(adaptive_ratios(counts, 0.65).values()) == {1.0}  # 100 of 165
    with pytest.raises(DataError, match="1/4"):
        adaptive_ratios(counts, 0.2)


def test_unknown_label_is_named_with_the_labels_present():
    with pytest.raises(DataError, match=r"unknown label 'Compny'; labels present: a, b"):
        retain(["a", "b"], {"Compny": 1.0}, 1.0, 0)


# --- files --------------------------------------------------------------------------------------


def test_seed_scheme_on_real_dbpedia_sample(sample_csv, tmp_path, capsys):
    out = tmp_path / "kept.csv.gz"
    assert (
        main(["retain", str(sample_csv), *SEED_SCHEME, "--random-state", "0", "--out", str(out)])
        == 0
    )
    with gzip.open(sample_csv, "rt", encoding="utf-8", newline="") as f:
        original = list(csv.reader(f))
    with gzip.open(out, "rt", encoding="utf-8", newline="") as f:
        kept = list(csv.reader(f))
    assert kept[0] == original[0] == ["id", "label", "text"]
    assert Counter(r[1] for r in original[1:]) == SAMPLE_COUNTS
    assert Counter(r[1] for r in kept[1:]) == SAMPLE_KEPT  # 0.001 * <= 312 rounds to 0
    originals = {tuple(r) for r in original[1:]}
    assert all(tuple(r) in originals for r in kept[1:])  # rows verbatim, in input order
    assert [int(r[0]) for r in kept[1:]] == sorted(int(r[0]) for r in kept[1:])
    table = capsys.readouterr().out
    assert "MeanOfTransportation" in table and "0.9" in table
    assert table.splitlines()[1].split()[:2] == ["Animal", "312"]  # largest first
    assert "total" in table and "1424" in table

    # the seed's snake_case names resolve to dbpedia's labels; same seed, same file
    renames = {
        "EducationalInstitution=1": "educational_institution=1",
        "MeanOfTransportation=0.9": "mean_of_transportation=0.9",
    }
    snake = [renames.get(a, a) for a in SEED_SCHEME]
    again = tmp_path / "again.csv.gz"
    assert main(["retain", str(sample_csv), *snake, "--out", str(again)]) == 0
    assert gzip.decompress(again.read_bytes()) == gzip.decompress(out.read_bytes())


def test_label_studio_export_round_trip(ls_export, tmp_path, capsys):
    path, tasks = ls_export
    export = read_export(path)
    assert export.kind == LS_JSON and export.skipped == 3
    assert export.labels[0] == "rare"  # the newest non-cancelled annotation
    assert Counter(export.labels) == {"common": 29, "rare": 7}

    out = tmp_path / "kept.json"
    assert (
        main(
            ["retain", str(path), "--ratio", "common=0.5", "--random-state", "1", "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "skipped 3 unlabelled tasks" in printed
    kept = json.loads(out.read_text(encoding="utf-8"))
    by_id = {t["id"]: t for t in tasks}
    assert all(t == by_id[t["id"]] for t in kept)  # verbatim, predictions and meta included
    assert Counter(read_export(out).labels) == {"common": 15, "rare": 7}  # round(14.5) = 15
    assert not {36, 37, 38} & {t["id"] for t in kept}

    as_csv = tmp_path / "kept.csv"
    assert (
        main(
            [
                "retain",
                str(path),
                "--ratio",
                "common=0.5",
                "--random-state",
                "1",
                "--out",
                str(as_csv),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(as_csv.open(encoding="utf-8", newline="")))
    assert [int(r["id"]) for r in rows] == [t["id"] for t in kept]
    assert rows[0].keys() == {"id", "text", "label"}
    assert {r["text"] for r in rows} == {t["data"]["text"] for t in kept}


def test_write_export_is_atomic_and_keeps_csv_columns(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,label,text,extra\n1,a,hello,x\n2,,unlabelled,y\n3,b,world,z\n")
    export = read_export(src)
    assert export.kind == CSV_KIND and export.skipped == 1 and export.labels == ["a", "b"]
    out = tmp_path / "out.csv"
    write_export(out, export, [1])
    assert out.read_bytes() == b"id,label,text,extra\r\n3,b,world,z\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]  # no temp file


def test_adaptive_from_the_command_line(tmp_path, capsys):
    src = tmp_path / "skewed.csv"
    rows = [("a", 100), ("b", 50), ("c", 10), ("d", 5)]
    src.write_text(
        "label,text\n" + "".join(f"{lab},t{lab}{i}\n" for lab, n in rows for i in range(n))
    )
    out = tmp_path / "out.csv"
    assert main(["retain", str(src), "--adaptive", "0.4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "capped at 30 rows" in printed
    assert Counter(r["label"] for r in csv.DictReader(out.open())) == {
        "a": 30,
        "b": 30,
        "c": 10,
        "d": 5,
    }


# --- bad input ----------------------------------------------------------------------------------


def _bad_inputs(tmp: Path, export: Path) -> dict[str, tuple[list[str], str]]:
    csv_ok = tmp / "ok.csv"
    csv_ok.write_text("label,text\na,x\nb,y\n")
    blob = tmp / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    plain = tmp / "notes.txt"
    plain.write_text("just some text\nwithout a label column\n")
    obj = tmp / "dict.json"
    obj.write_text('{"data": {"text": "x"}}')
    cancelled = tmp / "cancelled.json"
    cancelled.write_text(
        json.dumps([{"data": {"text": "x"}, "annotations": [ann("a", id=1, cancelled=True)]}])
    )
    no_labels = tmp / "nolabels.csv"
    no_labels.write_text("label,text\n,x\n,y\n")
    out = str(tmp / "o.csv")
    return {
        "unknown label": ([str(csv_ok), "--ratio", "c=1", "--out", out], "unknown label 'c'"),
        "fraction > 1": ([str(csv_ok), "--ratio", "a=1.5", "--out", out], "[0, 1]"),
        "fraction < 0": ([str(csv_ok), "--ratio", "a=-0.1", "--out", out], "[0, 1]"),
        "not a number": ([str(csv_ok), "--ratio", "a=half", "--out", out], "not a number"),
        "nan": ([str(csv_ok), "--ratio", "a=nan", "--out", out], "[0, 1]"),
        "no equals": ([str(csv_ok), "--ratio", "a", "--out", out], "LABEL=FRACTION"),
        "bad default": ([str(csv_ok), "--default", "2", "--out", out], "[0, 1]"),
        "binary file": ([str(blob), "--out", out], "neither a Label Studio JSON export"),
        "plain text": ([str(plain), "--out", out], "neither a Label Studio JSON export"),
        "json dict": ([str(obj), "--out", out], "neither a Label Studio JSON export"),
        "missing file": ([str(tmp / "nope.json"), "--out", out], "no such file"),
        "all cancelled": ([str(cancelled), "--out", out], "no labelled rows"),
        "no labels": ([str(no_labels), "--out", out], "no labelled rows"),
        "adaptive too small": ([str(csv_ok), "--adaptive", "0.3", "--out", out], "1/2"),
        "adaptive + ratio": (
            [str(csv_ok), "--adaptive", "0.5", "--ratio", "a=1", "--out", out],
            "do not combine",
        ),
        "bad seed": ([str(csv_ok), "--random-state", "-1", "--out", out], ">= 0"),
        "out dir missing": ([str(csv_ok), "--out", str(tmp / "no" / "o.csv")], "does not exist"),
        "csv to json": ([str(csv_ok), "--out", str(tmp / "o.json")], "written as CSV"),
        "overwrite input": ([str(export), "--out", str(export)], "overwrite the input"),
    }


def test_every_bad_input_is_one_line_and_non_zero(ls_export, tmp_path, capsys):
    cases = _bad_inputs(tmp_path, ls_export[0])
    for name, (argv, message) in cases.items():
        code = main(["retain", *argv])
        err = capsys.readouterr().err
        assert code != 0, name
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("rarelabel retain: error: ") and message in err, (name, err)
        assert "Traceback" not in err, name
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.json").exists()


def test_command_line_entry_point(tmp_path):
    src = tmp_path / "ok.csv"
    src.write_text("label,text\nArtist,x\nVillage,y\n")
    proc = subprocess.run(
        ["rarelabel", "retain", str(src), "--ratio", "Artst=1", "--out", str(tmp_path / "o.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "rarelabel retain: error: --ratio: unknown label 'Artst'; labels present: Artist, Village"
    ]
