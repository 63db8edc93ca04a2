"""The found-vs-labels curve as inline SVG: the status page draws it with no script, no
plotting library and nothing from the network."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 560, 260, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _by_label_count(points: list[dict]) -> list[dict]:
    """The latest point for each label count, in label order (a deleted label can make a
    later retrain see fewer)."""
    latest = {int(p["labels"]): p for p in points}
    return [latest[k] for k in sorted(latest)]


def curve_svg(points: list[dict], targets: list[str]) -> str:
    """Rare items found against labels spent, per class, with the estimated total as a band
    (its 90% interval) and a dashed line where an estimate exists."""
    points = _by_label_count(points)
    if len(points) < 2:
        return '<p class="curve-empty">The curve starts after the second retrain.</p>'
    xs = [int(p["labels"]) for p in points]
    top = 1.0
    for p in points:
        top = max(top, *[float(v) for v in p.get("found", {}).values()], 1.0)
        for e in p.get("estimate", {}).values():
            if e.get("high") is not None:
                top = max(top, float(e["high"]))
    x0, x1 = min(xs), max(xs)

    def x(v: float) -> float:
        return PAD + (v - x0) / max(1, x1 - x0) * (WIDTH - 2 * PAD)

    def y(v: float) -> float:
        return HEIGHT - PAD - v / top * (HEIGHT - 2 * PAD)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="rare items found by labels spent">',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#888"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">'
        f"labels spent ({x0}–{x1})</text>",
        f'<text x="{PAD - 6}" y="{PAD}" text-anchor="end" font-size="12">{top:.0f}</text>',
        f'<text x="{PAD - 6}" y="{HEIGHT - PAD}" text-anchor="end" font-size="12">0</text>',
    ]
    for i, t in enumerate(targets):
        colour = COLOURS[i % len(COLOURS)]
        band = [
            (int(p["labels"]), p["estimate"][t])
            for p in points
            if p.get("estimate", {}).get(t, {}).get("high") is not None
        ]
        if len(band) >= 2:
            upper = " ".join(f"{x(n):.1f},{y(float(e['high'])):.1f}" for n, e in band)
            lower = " ".join(f"{x(n):.1f},{y(float(e['low'])):.1f}" for n, e in reversed(band))
            total = " ".join(f"{x(n):.1f},{y(float(e['total'])):.1f}" for n, e in band)
            parts.append(
                f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.15" '
                f'data-band="{escape(t)}"/>'
            )
            parts.append(
                f'<polyline points="{total}" fill="none" stroke="{colour}" stroke-dasharray="4 3"/>'
            )
        found = " ".join(
            f"{x(int(p['labels'])):.1f},{y(float(p.get('found', {}).get(t, 0))):.1f}"
            for p in points
        )
        parts.append(
            f'<polyline points="{found}" fill="none" stroke="{colour}" stroke-width="2" '
            f'data-found="{escape(t)}"/>'
        )
        parts.append(
            f'<text x="{PAD + 8}" y="{PAD + 14 * i}" font-size="12" fill="{colour}">'
            f"{escape(t)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
