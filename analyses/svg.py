"""Small inline-SVG plots (line plots and horizontal bars) for offline HTML pages."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from analyses.html import esc

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True, kw_only=True)
class Series:
    """One line of a plot: ``points`` are ``(x, y)``; ``markers`` draws dots instead of a line."""

    name: str
    points: Sequence[tuple[int | float, int | float]]
    markers: bool = False


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1)]
    span = hi - lo or 1.0
    step = 10.0 ** math.floor(math.log10(span / 4))
    step *= next(m for m in (1.0, 2.0, 5.0, 10.0) if span / (step * m) <= 6)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_plot(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlog: bool = False,
    ylog: bool = False,
    hlines: Sequence[tuple[float, str]] = (),
    vlines: Sequence[tuple[float, str]] = (),
    width: int = 520,
    height: int = 300,
) -> str:
    """An ``<svg>`` plot of ``series``; ``hlines``/``vlines`` are labelled reference lines."""

    def tx(v: float | int, log: bool) -> float:
        return math.log10(v) if log else float(v)

    pts = [
        (tx(x, xlog), tx(y, ylog))
        for s in series
        for x, y in s.points
        if math.isfinite(x) and math.isfinite(y) and (not xlog or x > 0) and (not ylog or y > 0)
    ]
    pts += [(pts[0][0] if pts else 0.0, tx(v, ylog)) for v, _ in hlines if not ylog or v > 0]
    pts += [(tx(v, xlog), pts[0][1] if pts else 0.0) for v, _ in vlines if not xlog or v > 0]
    if not pts:
        return f'<p class="note">{esc(title)}: no data</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 60, 130, 28, 42
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f'<svg width="{width}" height="{height}" '
        f'class="plot" role="img" aria-label="{esc(title)}" style="font:11px sans-serif">',
        f'<text x="{left}" y="16" style="font-weight:bold">{esc(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for t in _ticks(x0, x1, False):
        label = _fmt(10**t) if xlog else _fmt(t)
        out.append(
            f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top}" y2="{top + ph}" stroke="#eee"/>'
            f'<text x="{px(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{label}</text>'
        )
    for t in _ticks(y0, y1, False):
        label = _fmt(10**t) if ylog else _fmt(t)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{label}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{esc(xlabel)}</text>'
        f'<text transform="translate(12 {top + ph / 2}) rotate(-90)" '
        f'text-anchor="middle">{esc(ylabel)}</text>'
    )
    refs = [(v, label, True) for v, label in hlines] + [(v, label, False) for v, label in vlines]
    for v, label, horizontal in refs:
        if (ylog if horizontal else xlog) and v <= 0:
            continue
        if horizontal:
            y = py(tx(v, ylog))
            xy = f'x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"'
            at = f'x="{left + pw + 4}" y="{y + 4:.1f}"'
        else:
            x = px(tx(v, xlog))
            xy = f'x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}"'
            at = f'x="{x + 3:.1f}" y="{top + 10}"'
        out.append(
            f'<line {xy} stroke="#555" stroke-dasharray="4 3"/><text {at}>{esc(label)}</text>'
        )
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        sp = [
            (px(tx(x, xlog)), py(tx(y, ylog)))
            for x, y in s.points
            if math.isfinite(x) and math.isfinite(y) and (not xlog or x > 0) and (not ylog or y > 0)
        ]
        if s.markers:
            out += [
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>'
                f"{esc(s.name)}</title></circle>"
                for x, y in sp
            ]
        elif sp:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in sp)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        out.append(
            f'<rect x="{left + pw + 6}" y="{top + 8 + 16 * i}" width="10" height="10" '
            f'fill="{colour}"/><text x="{left + pw + 20}" y="{top + 17 + 16 * i}">'
            f"{esc(s.name)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    rows: Sequence[tuple[str, float]],
    *,
    title: str,
    xlabel: str,
    reference: tuple[float, str] | None = None,
    width: int = 620,
) -> str:
    """Horizontal bars, one per ``(label, value)``, with an optional dashed reference line."""
    if not rows:
        return f'<p class="note">{esc(title)}: no data</p>'
    left, right, top, bar = 190, 60, 28, 16
    height = top + bar * len(rows) + 36
    vmax = max([v for _, v in rows if math.isfinite(v)] + [reference[0] if reference else 0, 1e-9])
    pw = width - left - right
    out = [
        f'<svg width="{width}" height="{height}" '
        f'class="plot" role="img" aria-label="{esc(title)}" style="font:11px sans-serif">',
        f'<text x="{left}" y="16" style="font-weight:bold">{esc(title)}</text>',
    ]
    for i, (label, v) in enumerate(rows):
        y = top + i * bar
        w = max(0.0, v) / vmax * pw if math.isfinite(v) else 0.0
        out.append(
            f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{esc(label)}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{bar - 4}" fill="#1f77b4">'
            f"<title>{esc(label)}: {v:.4g}</title></rect>"
            f'<text x="{left + w + 4:.1f}" y="{y + 12}">{v:.3g}</text>'
        )
    if reference is not None:
        x = left + reference[0] / vmax * pw
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + bar * len(rows)}" '
            f'stroke="#d62728" stroke-dasharray="4 3"/><text x="{x + 3:.1f}" '
            f'y="{top + bar * len(rows) + 12}" fill="#d62728">{esc(reference[1])}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{esc(xlabel)}</text></svg>'
    )
    return "".join(out)


def heatmap(
    values: Sequence[Sequence[float]],
    *,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cell: int = 18,
    symmetric: bool = True,
) -> str:
    """A heatmap (blue positive, red negative when ``symmetric``; white to blue otherwise)."""
    flat = [v for row in values for v in row if math.isfinite(v)]
    vmax = max([abs(v) for v in flat] + [1e-9])
    left, top = 70, 30
    width = max(left + cell * len(col_labels) + 20, left + 6 * (len(title) + 16))
    height = top + cell * len(row_labels) + 70
    out = [
        f'<svg width="{width}" height="{height}" class="plot heatmap" role="img" '
        f'aria-label="{esc(title)}" style="font:10px sans-serif">',
        f'<text x="{left}" y="16" style="font-weight:bold">{esc(title)} (max |v| {vmax:.3g})</text>',
    ]
    for i, row in enumerate(values):
        y = top + i * cell
        out.append(
            f'<text x="{left - 4}" y="{y + cell * 0.7:.1f}" text-anchor="end">{esc(row_labels[i])}</text>'
        )
        for j, v in enumerate(row):
            t = max(-1.0, min(1.0, v / vmax)) if math.isfinite(v) else 0.0
            if symmetric:
                colour = f"rgb({255 - int(200 * max(t, 0))},{255 - int(200 * abs(t))},{255 - int(200 * max(-t, 0))})"
            else:
                colour = f"rgb({255 - int(200 * abs(t))},{255 - int(150 * abs(t))},255)"
            out.append(
                f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{colour}"><title>{esc(row_labels[i])}, {esc(col_labels[j])}: '
                f"{v:.4g}</title></rect>"
            )
    for j, label in enumerate(col_labels):
        x = left + j * cell + cell / 2
        y = top + cell * len(row_labels) + 6
        out.append(
            f'<text transform="translate({x:.1f} {y}) rotate(60)" text-anchor="start">'
            f"{esc(label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)
