"""Retention split: per-label retention ratios that keep rare classes whole and thin out the rest.

`rarelabel retain` reads a labelled dataset (a Label Studio JSON export or a CSV with a label
column), keeps `round(fraction * count)` rows of every label (fixed fractions from `--ratio`
and `--default`, or adaptive ones from `--adaptive SHARE`) and writes the kept rows in the
input's format. Rows are drawn uniformly with a numpy Generator seeded from the random state
and the label, so the split is reproducible, each label's draw is independent of the others'
ratios, and a smaller fraction keeps a subset of the rows a larger one keeps.

Every problem a user can fix is a `DataError` with a one-line message.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from model.data import DataError

LS_JSON, CSV_KIND = "label-studio-json", "csv"


class Export(NamedTuple):
    """A labelled dataset: `records[i]` (a task dict or a raw CSV row) carries `labels[i]`.

    Only labelled records are kept; `skipped` counts the others (no usable annotation, or an
    empty label cell). `header` is the CSV header, None for a Label Studio export.
    """

    records: list[Any]
    labels: list[str]
    kind: str
    skipped: int = 0
    header: list[str] | None = None


# --- ratios -----------------------------------------------------------------------------------


def parse_fraction(text: str | float, what: str) -> float:
    """A fraction in [0, 1]; anything else is a DataError naming `what` (e.g. the option)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{what}: {text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise DataError(f"{what}: fraction must be in [0, 1], got {text}")
    return value


def parse_ratios(items: Iterable[str] | None) -> dict[str, float]:
    """`["Company=1", "Building=0.8"]` -> `{"Company": 1.0, "Building": 0.8}`.

    Split at the last '=' so a label may itself contain '='. A label given twice with
    different fractions is an error rather than a silent override.
    """
    ratios: dict[str, float] = {}
    for item in items or []:
        label, sep, value = str(item).rpartition("=")
        label = label.strip()
        if not sep or not label:
            raise DataError(f"--ratio {item!r}: expected LABEL=FRACTION")
        fraction = parse_fraction(value.strip(), f"--ratio {item}")
        if label in ratios and ratios[label] != fraction:
            raise DataError(f"--ratio: {label!r} given twice ({ratios[label]:g} and {fraction:g})")
        ratios[label] = fraction
    return ratios


def _norm(label: str) -> str:
    return re.sub(r"[^0-9a-z]", "", label.lower())


def resolve_ratios(ratios: dict[str, float], present: Iterable[str]) -> dict[str, float]:
    """Map each `--ratio` label onto a label of the data.

    An exact match wins; otherwise a label that matches once case and punctuation are
    ignored, so the seed's `educational_institution` finds dbpedia's `EducationalInstitution`.
    An unknown or ambiguous name is an error that lists the labels present: a typo must never
    silently fall back to the default fraction.
    """
    present = sorted(set(present))
    by_norm: dict[str, list[str]] = {}
    for lab in present:
        by_norm.setdefault(_norm(lab), []).append(lab)
    resolved: dict[str, float] = {}
    for name, fraction in ratios.items():
        if name in present:
            label = name
        else:
            matches = by_norm.get(_norm(name), [])
            if len(matches) != 1:
                why = "ambiguous label" if matches else "unknown label"
                raise DataError(f"--ratio: {why} {name!r}; labels present: {', '.join(present)}")
            label = matches[0]
        if label in resolved and resolved[label] != fraction:
            raise DataError(f"--ratio: {label!r} given twice with different fractions")
        resolved[label] = fraction
    return resolved


def kept_count(fraction: float, count: int) -> int:
    """round(fraction * count), halves rounded up (not to even), within [0, count]."""
    return min(count, max(0, math.floor(fraction * count + 0.5)))


def adaptive_ratios(counts: dict[str, int], share: float) -> dict[str, float]:
    """Fractions such that no label makes up more than `share` of the kept rows.

    Water-filling: every label is capped at the same row count `cap` (labels at or below it
    are kept whole, larger ones are cut to `cap`), and `cap` is the largest integer with
    `cap <= share * sum(min(count, cap))`, i.e. a capped label is at most `share` of what is
    kept. `share * sum(min(count, c)) - c` is concave in `c` and 0 at 0, so the feasible caps
    form an interval and a bisection finds its end. Rare labels are never cut. With L labels
    no label can be below 1/L of the total, so `share` must be at least 1/L.
    """
    if not counts:
        raise DataError("no labelled rows")
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise DataError(f"--adaptive: share must be in (0, 1], got {share:g}")
    n = np.array(list(counts.values()), dtype=np.int64)
    if share * len(n) < 1 - 1e-9:
        raise DataError(
            f"--adaptive {share:g}: with {len(n)} labels some label is at least "
            f"1/{len(n)} = {1 / len(n):.4g} of the kept rows; use a share of at least that"
        )

    def feasible(cap: int) -> bool:
        return cap <= share * np.minimum(n, cap).sum() + 1e-9

    lo, hi = 0, int(n.max())  # feasible(0) holds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid - 1)
    cap = lo
    return {lab: (1.0 if c <= cap else cap / c) for lab, c in counts.items()}


def retain(
    labels: Sequence[str], ratios: dict[str, float], default: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Sorted indices of the rows kept: `kept_count(fraction, count)` rows of each label.

    Each label draws from its own Generator seeded with `(seed, crc32(label))`: the result is
    the same for the same seed on any machine, one label's fraction never changes which rows
    another keeps, and the kept rows are a prefix of one permutation, so lowering a fraction
    only drops rows. Labels not in `ratios` get `default`.
    """
    if int(seed) < 0:
        raise DataError(f"--random-state must be >= 0, got {seed}")
    default = parse_fraction(default, "--default")
    ratios = resolve_ratios(
        {k: parse_fraction(v, f"--ratio {k}") for k, v in ratios.items()}, labels
    )
    arr = np.asarray(labels, dtype=object)
    kept = []
    for lab in sorted(set(labels)):
        rows = np.flatnonzero(arr == lab)
        k = kept_count(ratios.get(lab, default), len(rows))
        rng = np.random.default_rng([int(seed), zlib.crc32(lab.encode("utf-8"))])
        kept.append(rng.permutation(rows)[:k])
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, dtype=np.int64)


# --- reading ----------------------------------------------------------------------------------


def _annotation_label(annotation: dict) -> str | None:
    for region in annotation.get("result") or []:
        if isinstance(region, dict) and region.get("type") == "choices":
            choices = (region.get("value") or {}).get("choices") or []
            if choices and isinstance(choices[0], str) and choices[0].strip():
                return choices[0].strip()
    return None


def task_label(task: dict) -> str | None:
    """The label of a Label Studio task: the first `choices` result of its newest
    non-cancelled annotation that has one ("newest" by updated_at, then created_at, then id,
    then position), so a relabelled task counts with its latest decision; None if none."""
    best, best_key = None, None
    for pos, ann in enumerate(task.get("annotations") or []):
        if not isinstance(ann, dict) or ann.get("was_cancelled"):
            continue
        label = _annotation_label(ann)
        if label is None:
            continue
        ident = ann.get("id") if isinstance(ann.get("id"), int) else -1
        key = (str(ann.get("updated_at") or ann.get("created_at") or ""), ident, pos)
        if best_key is None or key > best_key:
            best, best_key = label, key
    return best


def _read_text(path: Path) -> str | None:
    """The file's text (gunzipped if it is gzip, whatever its name); None if it is not text."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _is_ls_export(obj: Any) -> bool:
    return isinstance(obj, list) and all(isinstance(t, dict) and "data" in t for t in obj)


def read_export(path: str | Path, label_column: str = "label", text_column: str = "text") -> Export:
    """Read a Label Studio JSON export or a CSV (.gz allowed), telling them apart by content.

    A JSON list of task dicts with `data` is an export; otherwise a CSV whose header holds
    `label_column` (and `text_column`, non-empty on every row, as `model.data.read_csv`
    demands). Unlabelled tasks or rows are dropped and counted in `skipped`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    neither = (
        f"{path} is neither a Label Studio JSON export nor a CSV with a {label_column!r} column"
    )
    text = _read_text(path)
    if text is None:
        raise DataError(f"{neither} (not a UTF-8 text file)")
    if text.lstrip()[:1] in ("[", "{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if _is_ls_export(obj):
            return _from_tasks(path, obj)
        if obj is not None:
            raise DataError(f"{neither} (JSON, but not a list of tasks with 'data')")
    return _from_csv(path, text, label_column, text_column, neither)


def _from_tasks(path: Path, tasks: list[dict]) -> Export:
    records, labels = [], []
    for task in tasks:
        label = task_label(task)
        if label is not None:
            records.append(task)
            labels.append(label)
    if not records:
        raise DataError(f"{path}: no labelled rows ({len(tasks)} tasks, none with a choice)")
    return Export(records, labels, LS_JSON, len(tasks) - len(records))


def _from_csv(path: Path, text: str, label_column: str, text_column: str, neither: str) -> Export:
    csv.field_size_limit(sys.maxsize)
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r != []]
    except csv.Error as e:
        raise DataError(f"{neither} ({e})") from None
    if not rows or label_column not in rows[0]:
        columns = ", ".join(rows[0][:8]) if rows else "empty file"
        raise DataError(f"{neither} (columns: {columns})")
    header = rows[0]
    if text_column not in header:
        raise DataError(f"{path}: no column {text_column!r} (columns: {', '.join(header)})")
    li, ti = header.index(label_column), header.index(text_column)
    records, labels = [], []
    for n, row in enumerate(rows[1:], start=2):
        if ti >= len(row) or not row[ti].strip():
            raise DataError(f"{path}:{n}: empty text in column {text_column!r}")
        label = row[li].strip() if li < len(row) else ""
        if label:
            records.append(row)
            labels.append(label)
    if not records:
        raise DataError(f"{path}: no labelled rows ({len(rows) - 1} rows, no {label_column!r})")
    return Export(records, labels, CSV_KIND, len(rows) - 1 - len(records), header)


# --- writing ----------------------------------------------------------------------------------


def _is_csv_name(path: Path) -> bool:
    return path.name.lower().endswith((".csv", ".csv.gz"))


def write_export(
    path: str | Path,
    export: Export,
    rows: Sequence[int],
    text_column: str = "text",
    label_column: str = "label",
) -> None:
    """Write the kept `rows` of `export` atomically (a temp file in the same directory, then a
    rename), so a failed run never leaves half a training set where a good one was expected.

    An export stays JSON with its tasks verbatim, unless `path` ends in .csv / .csv.gz: then
    it becomes an `id,text,label` CSV. A CSV keeps its header and rows verbatim. A name ending
    in .gz is gzipped.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"--out {path}: directory {path.parent} does not exist")
    if export.kind == CSV_KIND and not _is_csv_name(path):
        raise DataError(f"--out {path}: a CSV input is written as CSV (name it .csv or .csv.gz)")
    if export.kind == LS_JSON and not _is_csv_name(path):
        kept = [export.records[i] for i in rows]
        payload = json.dumps(kept, ensure_ascii=False, indent=1)
    else:
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        if export.kind == CSV_KIND:
            w.writerow(export.header)
            w.writerows(export.records[i] for i in rows)
        else:
            w.writerow(["id", text_column, label_column])
            for i in rows:
                task = export.records[i]
                value = (task.get("data") or {}).get(text_column)
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"task {task.get('id')}: no text in data[{text_column!r}]")
                w.writerow([task.get("id", i), value, export.labels[i]])
        payload = buf.getvalue()
    data = payload.encode("utf-8")
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the command ------------------------------------------------------------------------------


@dataclass
class RetentionReport:
    before: dict[str, int]
    fractions: dict[str, float]
    after: dict[str, int]
    skipped: int
    kind: str
    adaptive_cap: int | None = None


def retain_file(
    export_path: str | Path,
    out: str | Path,
    ratio_items: Sequence[str] | None = None,
    default: str | float | None = None,
    random_state: str | int = 0,
    label_column: str = "label",
    text_column: str = "text",
    adaptive: str | float | None = None,
) -> RetentionReport:
    """Read, compute the fractions, draw the kept rows, write them; the CLI prints the report.

    The options are checked before the input is read, so a typo fails fast on a big file.
    """
    try:
        seed = int(str(random_state))
    except ValueError:
        raise DataError(f"--random-state: {random_state!r} is not an integer") from None
    if seed < 0:
        raise DataError(f"--random-state must be >= 0, got {seed}")
    ratios = parse_ratios(ratio_items)
    default_f = 1.0 if default is None else parse_fraction(default, "--default")
    share = None
    if adaptive is not None:
        if ratios or default is not None:
            raise DataError(
                "--adaptive computes every fraction: do not combine with --ratio/--default"
            )
        try:
            share = float(adaptive)
        except ValueError:
            raise DataError(f"--adaptive: {adaptive!r} is not a number") from None
        if not 0.0 < share <= 1.0:
            raise DataError(f"--adaptive: share must be in (0, 1], got {adaptive}")
    if Path(out).resolve() == Path(export_path).resolve():
        raise DataError(f"--out {out}: would overwrite the input")
    if not Path(out).parent.is_dir():
        raise DataError(f"--out {out}: directory {Path(out).parent} does not exist")

    export = read_export(export_path, label_column=label_column, text_column=text_column)
    before = dict(Counter(export.labels))
    cap = None
    if share is not None:
        fixed, default_f = adaptive_ratios(before, share), 1.0
        capped = [lab for lab, f in fixed.items() if f < 1.0]
        cap = round(fixed[capped[0]] * before[capped[0]]) if capped else max(before.values())
    else:
        fixed = resolve_ratios(ratios, before)
    fractions = {lab: fixed.get(lab, default_f) for lab in before}
    kept = retain(export.labels, fixed, default_f, seed)
    after = dict.fromkeys(before, 0)
    after.update(Counter(export.labels[i] for i in kept))
    write_export(out, export, kept, text_column=text_column, label_column=label_column)
    return RetentionReport(before, fractions, after, export.skipped, export.kind, cap)
