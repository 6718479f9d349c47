"""Charts as inline SVG, drawn on the server: no script, no network, the same in a browser and in a saved report.

Every label is escaped here (labels can be channel names or poll answers people wrote); the result is `Markup`,
which the templates insert as is. Each chart is `<svg class="chart" data-chart="ID">` and each mark carries
`data-label`/`data-value`, so tests (and curious owners) can read the numbers back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 960
HEIGHT = 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 16, 44
PALETTE = ("#5b8def", "#f2a541", "#4cb782", "#e5566f", "#9b6cd9", "#3fb6c6", "#a0a0a0")  # last = "other"
MAX_X_LABELS = 12  # x-axis labels drawn; the rest are in each mark's tooltip


def _num(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _nice_max(value: float) -> float:
    """The smallest 4 x (1, 2, 2.5 or 5 x 10^k) at or above `value`: the axis gets four round steps."""
    if value <= 0:
        return 1.0
    quarter = value / 4
    magnitude = 10 ** math.floor(math.log10(quarter))
    for step in (1, 2, 2.5, 5, 10):
        if quarter <= step * magnitude * (1 + 1e-9):
            return 4 * step * magnitude
    return 40 * magnitude  # pragma: no cover - the loop always returns


def _frame(chart_id: str, title: str, body: list[str], *, height: int = HEIGHT, legend: str = "") -> Markup:
    return Markup(
        f'<figure class="chart-box"><figcaption>{escape(title)}</figcaption>'
        f'<svg class="chart" data-chart="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>{legend}</figure>"
    )


def _axis(y_max: float, height: int, fmt: Callable[[float], str]) -> list[str]:
    plot_h = height - PAD_TOP - PAD_BOTTOM
    out = []
    for i in range(5):
        value = y_max * i / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        out.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(fmt(value))}</text>'
        )
    return out


def _legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{PALETTE[min(i, len(PALETTE) - 1)]}"></i>{escape(name)}</span>'
        for i, name in enumerate(names)
    )
    return f'<div class="legend">{items}</div>'


def empty(chart_id: str, title: str, message: str = "No data in this period.") -> Markup:
    body = [
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">{escape(message)}</text>'
    ]
    return _frame(chart_id, title, body)


def stacked_bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    height: int = HEIGHT,
) -> Markup:
    """One column per label, stacked by series (e.g. hours x channels)."""
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return empty(chart_id, title)
    y_max = _nice_max(max(totals))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    step = plot_w / len(labels)
    bar_w = max(1.0, step * 0.8)
    body = _axis(y_max, height, lambda v: f"{v:,.0f}" if v == int(v) else f"{v:,.1f}")
    for i, label in enumerate(labels):
        x = PAD_LEFT + i * step + (step - bar_w) / 2
        base: float = PAD_TOP + plot_h
        for s, (name, values) in enumerate(series):
            value = values[i]
            if not value:
                continue
            h = plot_h * value / y_max
            base -= h
            color = PALETTE[min(s, len(PALETTE) - 1)]
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{color}" '
                f'data-label="{escape(label)}" data-series="{escape(name)}" data-value="{_num(value)}">'
                f"<title>{escape(label)} · {escape(name)}: {_num(value)}</title></rect>"
            )
    every = max(1, -(-len(labels) // MAX_X_LABELS))
    for i in range(0, len(labels), every):
        x = PAD_LEFT + i * step + step / 2
        body.append(
            f'<text x="{x:.1f}" y="{height - PAD_BOTTOM + 16}" text-anchor="middle" class="tick">'
            f"{escape(labels[i])}</text>"
        )
    return _frame(chart_id, title, body, height=height, legend=_legend([name for name, _ in series]))


def bars(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float | None]],
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:.3g}",
    y_max: float | None = None,
    height: int = 200,
) -> Markup:
    """One bar per item (e.g. model versions); an item without a value gets a "n/a" mark."""
    values = [v for _, v in items if v is not None]
    if not items or not values:
        return empty(chart_id, title, "No values yet.")
    top = y_max if y_max is not None else _nice_max(max(values))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    step = plot_w / len(items)
    bar_w = min(80.0, step * 0.6)
    body = _axis(top, height, fmt)
    for i, (label, value) in enumerate(items):
        cx = PAD_LEFT + i * step + step / 2
        if value is None:
            body.append(
                f'<text x="{cx:.1f}" y="{PAD_TOP + plot_h - 4}" text-anchor="middle" class="na" '
                f'data-label="{escape(label)}">n/a</text>'
            )
        else:
            h = plot_h * min(value, top) / top
            y = PAD_TOP + plot_h - h
            body.append(
                f'<rect class="bar" x="{cx - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[i % (len(PALETTE) - 1)]}" data-label="{escape(label)}" data-value="{_num(value)}">'
                f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
                f'<text x="{cx:.1f}" y="{y - 4:.1f}" text-anchor="middle" class="value">{escape(fmt(value))}</text>'
            )
        body.append(
            f'<text x="{cx:.1f}" y="{height - PAD_BOTTOM + 16}" text-anchor="middle" class="tick">{escape(label)}</text>'
        )
    return _frame(chart_id, title, body, height=height)


def line(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float | None]],
    *,
    y_min: float,
    y_max: float,
    fmt: Callable[[float], str] = lambda v: f"{v:+.2f}",
    height: int = 200,
) -> Markup:
    """A line over labelled points; gaps (None) break the line. A zero line is drawn when 0 is in range."""
    if not points or all(v is None for _, v in points):
        return empty(chart_id, title)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    span = (y_max - y_min) or 1.0
    step = plot_w / max(1, len(points) - 1) if len(points) > 1 else 0.0

    def y_of(v: float) -> float:
        return PAD_TOP + plot_h - plot_h * (min(max(v, y_min), y_max) - y_min) / span

    body = []
    for i in range(5):
        tick = y_min + span * i / 4
        y = y_of(tick)
        body.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="{"zero" if abs(tick) < 1e-9 else "grid"}"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(fmt(tick))}</text>'
        )
    segment: list[str] = []
    paths: list[str] = []
    marks: list[str] = []
    for i, (label, value) in enumerate(points):
        x = PAD_LEFT + (i * step if len(points) > 1 else plot_w / 2)
        if value is None:
            if len(segment) > 1:
                paths.append(" ".join(segment))
            segment = []
            continue
        segment.append(f"{x:.1f},{y_of(value):.1f}")
        marks.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y_of(value):.1f}" r="3.5" data-label="{escape(label)}" '
            f'data-value="{_num(value)}"><title>{escape(label)}: {escape(fmt(value))}</title></circle>'
        )
    if len(segment) > 1:
        paths.append(" ".join(segment))
    body += [f'<polyline class="line" points="{p}"/>' for p in paths] + marks
    every = max(1, -(-len(points) // MAX_X_LABELS))
    for i in range(0, len(points), every):
        x = PAD_LEFT + (i * step if len(points) > 1 else plot_w / 2)
        body.append(
            f'<text x="{x:.1f}" y="{height - PAD_BOTTOM + 16}" text-anchor="middle" class="tick">'
            f"{escape(points[i][0])}</text>"
        )
    return _frame(chart_id, title, body, height=height)


def hbars(chart_id: str, items: Sequence[tuple[str, float]], *, fmt: Callable[[float], str] = _num) -> Markup:
    """Small horizontal bars (poll results, topics), sized to their content."""
    if not items:
        return Markup("")
    row_h, label_w, bar_max = 22, 300, WIDTH - 300 - 90
    top = max(v for _, v in items) or 1
    height = row_h * len(items) + 4
    body = []
    for i, (label, value) in enumerate(items):
        y = 2 + i * row_h
        w = bar_max * value / top
        body.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="hlabel">{escape(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{PALETTE[0]}" data-label="{escape(label)}" data-value="{_num(value)}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="value">{escape(fmt(value))}</text>'
        )
    return Markup(
        f'<svg class="chart hchart" data-chart="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'role="img" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>'
    )
