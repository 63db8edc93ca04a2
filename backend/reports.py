"""What the offline commands print and write for people: tables, CSV files and plots.

The model computes the reports (`model.simulate`, `model.screening`, `model.retention`);
this module only shows them, so matplotlib and tqdm stay out of the model and the service:
they are the `[plots]` extra, and `pyplot` says so when it is missing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.retention import RetentionReport
from model.screening import ScreenReport
from model.simulate import CHECKPOINTS, SimulationReport, recall_at

PLOTS_MISSING = "rarelabel: this command draws plots: pip install 'rarelabel[plots]'"


def pyplot():
    """matplotlib's pyplot, drawing to files; a one-line exit without the `[plots]` extra.
    The commands call it before their work starts, so a missing extra costs no wait."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(PLOTS_MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def progress_bars(total: int) -> Callable[[str, int], None] | None:
    """One progress bar per simulated method, `total` labels long; none without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bars: dict[str, tqdm] = {}

    def update(method: str, done: int) -> None:
        bar = bars.get(method)
        if bar is None:
            bar = bars[method] = tqdm(total=total, desc=method, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def retention_table(rep: RetentionReport) -> str:
    """label | before | fraction | after, largest labels first, then the totals."""
    order = sorted(rep.before, key=lambda lab: (-rep.before[lab], lab))
    width = max([len("label"), len("total"), *map(len, order)])
    lines = [f"{'label':<{width}}  {'before':>8}  {'fraction':>8}  {'after':>8}"]
    for lab in order:
        lines.append(
            f"{lab:<{width}}  {rep.before[lab]:>8}  {rep.fractions[lab]:>8.4g}  {rep.after[lab]:>8}"
        )
    total_before, total_after = sum(rep.before.values()), sum(rep.after.values())
    lines.append(f"{'total':<{width}}  {total_before:>8}  {'':>8}  {total_after:>8}")
    return "\n".join(lines)


def screen_table(rep: ScreenReport, max_labels: int = 20) -> str:
    s = rep.summary
    share = s["likely_rare"] / s["n"] if s["n"] else 0.0
    lines = [
        f"screened {s['n']} tasks with {rep.method} (rarity > {rep.threshold} = more unusual "
        f"than {rep.threshold:.0%} of the pool)",
        f"  likely rare   {s['likely_rare']:>8}  ({share:.1%})",
        f"  likely common {s['likely_common']:>8}",
        f"  time: embed {rep.seconds.get('embed', 0):.1f} s, "
        f"fit + score {rep.seconds.get('fit_score', 0):.1f} s",
    ]
    rows = rep.per_label()
    if rows:
        small = rep.small_labels()
        lines.append(f"{'label':<28}{'n':>8}{'mean rarity':>13}{'flagged':>9}")
        for lab, n, mean, flagged in rows[:max_labels]:
            mark = "  (small class)" if lab in small else ""
            lines.append(f"{lab[:27]:<28}{n:>8}{mean:>13.3f}{flagged:>9.1%}{mark}")
        if len(rows) > max_labels:
            lines.append(f"... {len(rows) - max_labels} more labels in screen.csv")
    return "\n".join(lines)


def write_screen(rep: ScreenReport, out: Path) -> None:
    """`screen.csv` (id, rarity, flagged[, label]) and `rarity_hist.png`."""
    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "screen.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "rarity", "flagged"] + (["label"] if rep.labels else []))
        for i, task_id in enumerate(rep.ids):
            row = [task_id, f"{rep.rarity[i]:.6f}", int(rep.flagged[i])]
            w.writerow(row + ([rep.labels[i]] if rep.labels else []))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(0, 1, 41)
    small = rep.small_labels()
    if small:
        is_small = np.isin(np.array(rep.labels), sorted(small))
        ax.hist(
            [rep.rarity[~is_small], rep.rarity[is_small]],
            bins=bins,
            stacked=True,
            label=[
                "other labels",
                f"small classes ({', '.join(sorted(small)[:4])}"
                + (", ..." if len(small) > 4 else "")
                + ")",
            ],
            color=["tab:blue", "tab:orange"],
        )
    else:
        ax.hist(rep.rarity, bins=bins, color="tab:blue", label="tasks")
    ax.axvline(rep.threshold, color="k", linestyle="--", label=f"threshold {rep.threshold}")
    ax.set_xlabel(f"rarity ({rep.method}; percentile of the outlier score)")
    ax.set_ylabel("tasks")
    s = rep.summary
    ax.set_title(f"{s['n']} tasks: {s['likely_rare']} likely rare, {s['likely_common']} common")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "rarity_hist.png", dpi=110)
    plt.close(fig)


def simulation_table(rep: SimulationReport) -> str:
    ks = [k for k in CHECKPOINTS if k <= rep.budget] or [rep.budget]
    head = f"{'method':<10}" + "".join(f"{'found@' + str(k):>11}{'recall':>8}" for k in ks)
    lines = [f"pool holds {rep.positives} rare positives besides the seeds", head]
    for method, found in rep.found.items():
        cells = ""
        for k in ks:
            r = recall_at(found, rep.positives, k)
            cells += f"{found[k - 1] if k <= len(found) else '-':>11}"
            cells += f"{'-' if r is None else f'{r:.2f}':>8}"
        lines.append(f"{method:<10}{cells}")
    if rep.estimate is not None and rep.estimate["total"]:
        total, low, high = (rep.estimate[k][-1] for k in ("total", "low", "high"))
        at = "never" if rep.stopped_at is None else f"at {rep.stopped_at} labels"
        guess = "unknown" if total is None else f"{total:.1f} [{low:.0f}, {high:.0f}]"
        lines.append(
            f"estimate after {len(rep.estimate['total'])} labels: {guess} rare items besides "
            f"the seeds (90% interval; truth {rep.positives}); stopping rule: {at}"
        )
    if rep.views:
        (pw, pe), (hw, he) = rep.views["picks"], rep.views["hits"]
        lines.append(
            f"view choice (system): the words view filled {pw} contested slots ({hw} rare), "
            f"the embedding view {pe} ({he} rare)"
        )
    if rep.f1:
        f1s = ", ".join(f"{t} {v:.2f}" for t, v in rep.f1.items())
        lines.append(f"held-out F1 (system): mean {np.mean(list(rep.f1.values())):.2f} ({f1s})")
    return "\n".join(lines)


def write_simulation(rep: SimulationReport, out: Path) -> None:
    """`curve.json` for machines and `curve.png` (found vs labels, with the ideal) for people."""
    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(rep.to_json(), indent=1))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(1, rep.budget + 1)
    ax.plot(x, np.minimum(x, rep.positives), "k:", label="ideal")
    for method, found in rep.found.items():
        ax.plot(np.arange(1, len(found) + 1), found, label=method)
    ax.set_xlabel("labels spent")
    ax.set_ylabel("rare positives found")
    ax.set_title(f"{', '.join(rep.targets)}: {rep.positives} rare items in the pool")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)
    if rep.estimate is not None:
        plot_estimate(rep, out / "estimate.png")


def plot_estimate(rep: SimulationReport, path: Path) -> None:
    """The estimated rare items (besides the seeds) with the 90% band, against the truth."""
    plt = pyplot()
    est = rep.estimate
    assert est is not None
    x = np.arange(1, len(est["total"]) + 1)

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in est[key]], dtype=float)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(x, series("low"), series("high"), alpha=0.25, label="90% interval")
    ax.plot(x, series("total"), label="estimated rare items")
    ax.axhline(rep.positives, color="k", linestyle=":", label="true rare items")
    ax.plot(np.arange(1, len(rep.found["system"]) + 1), rep.found["system"], label="found")
    if rep.stopped_at is not None:
        ax.axvline(rep.stopped_at, color="r", alpha=0.6, label="stopping rule fires")
    top = 3 * max(rep.positives, max(rep.found["system"], default=0), 1)
    ax.set_ylim(0, top)  # an early interval can span the whole pool: its top is cut off
    ax.set_xlabel("labels spent")
    ax.set_ylabel("rare items in the pool besides the seeds")
    ax.set_title(f"{', '.join(rep.targets)}: estimate against the truth")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
