"""What a manager sees at `/status`: per project, whether the ranking is healthy and what is
wrong when it is not. Plain HTML from the store, no script and nothing from the network.

`project_status` is also the JSON of `/status.json`; every figure on the page is one of its
fields, and the same fields feed `/metrics`.
"""

from __future__ import annotations

import json
import time
from html import escape

from backend.curve_svg import curve_svg
from backend.store import Store
from model.estimate import TARGET_RECALL


def project_status(
    store: Store, project: int, now: float | None = None, curve: bool = True
) -> dict:
    """Everything the page shows of a project; `curve=False` leaves out the found curve (up
    to CURVE_POINTS points), which /metrics has no use for."""
    now = time.time() if now is None else now
    st = store.status(project)
    cfg = store.config(project)

    def number(key: str) -> float | None:
        return float(st[key]) if key in st else None

    retrain, error = number("last_retrain_at"), number("last_error_at")
    failing = error is not None and (retrain is None or error > retrain)
    return {
        "project": project,
        "targets": cfg.targets if cfg else [],
        "pool_size": int(number("pool_size") or 0),
        "labels_seen": int(number("labels_seen") or 0),
        "positives": {
            k.split(":", 1)[1]: int(float(v)) for k, v in st.items() if k.startswith("positives:")
        },
        "last_retrain_at": retrain,
        "last_retrain_ago_s": None if retrain is None else round(now - retrain, 1),
        "predictions_written": int(number("last_predictions_written") or 0),
        "pending_events": store.queued_events(project),
        "to_embed": store.backlog_size(project),
        "ranking_stale": store.dirty(project),
        "failing": failing,
        "last_error": st.get("last_error") if failing else None,
        "set_aside": [
            {"action": e.get("action"), "error": e.get("error")}
            for e in store.set_aside_events(project)
        ],
        "last_reconciled_ago_s": None
        if "reconciled_at" not in st
        else round(now - float(st["reconciled_at"]), 1),
        "estimates": json.loads(st["estimates"]) if "estimates" in st else {},
        "curve": store.curve(project) if curve else [],
        "audit": {
            "rate": cfg.audit_rate if cfg else 0.0,
            "labelled": int(number("audit_labels") or 0),
        },
        "target_recall": cfg.target_recall if cfg else TARGET_RECALL,
        # with view_choice: each view's contested picks and hits (model.view_choice)
        "views": json.loads(st["views"]) if st.get("views") else None,
        "import": {
            "tasks": int(number("last_import_tasks") or 0),
            "likely_rare": int(number("last_import_likely_rare") or 0),
            "likely_common": int(number("last_import_likely_common") or 0),
        },
    }


def health_word(s: dict) -> tuple[str, str]:
    """One word for the project's state, and why."""
    if s["failing"]:
        return "failing", s["last_error"] or "the last job failed"
    if s["set_aside"]:
        return "attention", f"{len(s['set_aside'])} events could not be applied"
    if s["last_retrain_at"] is None:
        return "starting", "no ranking pushed yet"
    if s["to_embed"]:
        return "catching up", f"embedding: {s['to_embed']} tasks to go (ranked as they come)"
    if s["ranking_stale"] or s["pending_events"]:
        return "catching up", f"{s['pending_events']} events pending"
    return "healthy", "the ranking in Label Studio follows every label"


CLASS_HEAD = (
    "<tr><th>class</th><th>found</th><th>estimated in the pool (90%)</th><th>recall</th>"
    "<th>labels to the next find</th><th>stop? (the model's hint)</th>"
    "<th>verified by the random sample?</th></tr>"
)


def _verify_text(e: dict | None) -> str:
    """The sample test's answer: yes, or what it would cost (model.recall_test.sample_test)."""
    more = (e or {}).get("random_labels_to_verify")
    if more is None:
        return "-"
    if e["verified"]:
        return "yes: recall ≥ target with 95% confidence"
    return f"no: {more} random labels more, all misses, would verify it"


def _class_row(t: str, s: dict) -> str:
    """One class: what was found, and the estimate, or "unknown" and why."""
    e = s["estimates"].get(t)
    cls = escape(t)

    def cell(field: str, text: str) -> str:
        return f'<td data-field="{field}" data-class="{cls}">{escape(text)}</td>'

    found = cell("positives", str(s["positives"].get(t, 0)))
    if not e or e.get("total") is None:
        why = e["reason"] if e else "no retrain yet"
        unknown = f'<td colspan="4" data-field="unknown" data-class="{cls}">'
        verify = cell("verified", _verify_text(e))
        return f"<tr><th>{cls}</th>{found}{unknown}unknown: {escape(why)}</td>{verify}</tr>"
    wait = e["labels_to_next_find"]
    stop = "suggested: recall ≥ target with 95% confidence" if e["stop"] else "not yet"
    return (
        f"<tr><th>{cls}</th>{found}"
        + cell("estimated_total", f"{e['total']:.0f} [{e['low']:.0f}–{e['high']:.0f}]")
        + cell("recall", f"{e['recall']:.0%} (≥ {e['recall_low']:.0%})")
        + cell("next_find", "none expected" if wait is None else f"{wait:.0f}")
        + cell("stop", stop)
        + cell("verified", _verify_text(e))
        + f'</tr><tr><td></td><td colspan="6" class="why">{escape(e["reason"])}</td></tr>'
    )


def _views_text(v: dict) -> str:
    (pw, pe), (hw, he) = v["picks"], v["hits"]
    return (
        f"words view: {hw} rare of {pw} contested picks; embedding view: {he} of {pe}; "
        f"chance the words view is the better: {v['p_words_better']:.0%}"
    )


def _row(label: str, value, field: str) -> str:
    return f'<tr><th>{escape(label)}</th><td data-field="{field}">{escape(str(value))}</td></tr>'


def render(statuses: list[dict]) -> str:
    sections = []
    for s in statuses:
        word, why = health_word(s)
        p = s["project"]
        rows = [
            _row("state", word, "state"),
            _row("why", why, "why"),
            _row("tasks in the pool", s["pool_size"], "pool_size"),
            _row("tasks still to embed", s["to_embed"], "to_embed"),
            _row("labels seen", s["labels_seen"], "labels_seen"),
            _row("pending events", s["pending_events"], "pending_events"),
            _row("events set aside", len(s["set_aside"]), "set_aside"),
            _row(
                "last retrain",
                "never"
                if s["last_retrain_ago_s"] is None
                else f"{s['last_retrain_ago_s']:.0f} s ago",
                "last_retrain",
            ),
            _row("predictions written then", s["predictions_written"], "predictions_written"),
            _row(
                "last checked against Label Studio",
                "never"
                if s["last_reconciled_ago_s"] is None
                else f"{s['last_reconciled_ago_s']:.0f} s ago",
                "last_reconciled",
            ),
            _row("audit sample: share of retrains", f"{s['audit']['rate']:g}", "audit_rate"),
            _row("audit sample: labelled", s["audit"]["labelled"], "audit_labels"),
            _row(
                "target recall (stopping rule, sample test)",
                f"{s['target_recall']:g}",
                "target_recall",
            ),  # fmt: skip
            *([_row("view choice", _views_text(s["views"]), "views")] if s["views"] else []),
            _row("last import: tasks", s["import"]["tasks"], "import_tasks"),
            _row("last import: likely rare", s["import"]["likely_rare"], "import_likely_rare"),
        ]
        found = "".join(_class_row(t, s) for t in s["targets"])
        aside = "".join(
            f"<li>{escape(str(e['action']))}: {escape(str(e['error']))}</li>"
            for e in s["set_aside"]
        )
        total = s["pool_size"] + s["to_embed"]
        bar = (
            f'<p>Embedding <progress max="{total}" value="{s["pool_size"]}"></progress> '
            f"{s['pool_size']} of {total}</p>"
            if s["to_embed"]
            else ""
        )
        sections.append(
            f'<section id="project-{p}" class="{word.replace(" ", "-")}">'
            f"<h2>Project {p} <span class=badge>{escape(word)}</span></h2>{bar}"
            f"<table>{''.join(rows)}</table>"
            f"<h3>Rare items found</h3><table>{CLASS_HEAD}{found}</table>"
            f"<figure>{curve_svg(s['curve'], s['targets'])}</figure>"
            + (f"<h3>Events set aside</h3><ul>{aside}</ul>" if aside else "")
            + "</section>"
        )
    body = "".join(sections) or "<p>No project has connected yet.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>rarelabel status</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
section {{ border-left: 6px solid #999; padding: 0 1em 1em; margin-bottom: 2em; }}
section.healthy {{ border-color: #2a8a3e; }} section.failing {{ border-color: #c0392b; }}
section.attention, section.catching-up, section.starting {{ border-color: #d49a00; }}
th {{ text-align: left; font-weight: normal; color: #555; padding-right: 2em; }}
.why {{ color: #777; font-size: 0.85em; }}
.badge {{ font-size: 0.7em; padding: 0.1em 0.5em; border-radius: 0.4em; background: #eee; }}
</style></head><body><h1>rarelabel</h1>{body}
<p><a href="/metrics">/metrics</a> · <a href="/status.json">/status.json</a></p></body></html>"""
