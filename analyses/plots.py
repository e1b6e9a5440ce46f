"""Charts with matplotlib: inline SVG for the offline HTML pages, a PNG beside it on request.

Figures are ``matplotlib.figure.Figure`` objects made without ``pyplot`` (no global figure
registry, no backend switch): ``savefig`` renders SVG with matplotlib's SVG backend and PNG with
Agg. ``embed`` returns the ``<svg>`` element alone (no XML prolog), with text kept as text and
ids salted by the figure's name, so several figures on one page never share a clip-path id.
"""

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from analyses.html import esc
from sparse_lens.files.atomic import atomic_write

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True, kw_only=True)
class Series:
    """One line of a plot: ``points`` are ``(x, y)``; ``markers`` draws dots instead of a line."""

    name: str
    points: Sequence[tuple[int | float, int | float]]
    markers: bool = False


def new_figure(width: float = 6.0, height: float = 3.4) -> Figure:
    """A figure of ``width`` x ``height`` inches (not registered with pyplot)."""
    return Figure(figsize=(width, height), layout="constrained")


def embed(fig: Figure, name: str, png_dir: Path | None = None) -> str:
    """The figure as an inline ``<svg class="figure">`` (and ``png_dir/name.png`` if given).

    Raises:
        ValueError: ``name`` is not a plain file stem (letters, digits, ``-``, ``_``, ``.``).
    """
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
        if png_dir is not None:
            atomic_write(png_dir / f"{name}.png", lambda p: fig.savefig(p, format="png", dpi=150))
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    return svg.replace("<svg ", f'<svg class="figure" data-name="{esc(name)}" ', 1)


def _finite(
    points: Sequence[tuple[int | float, int | float]], xlog: bool, ylog: bool
) -> list[tuple[int | float, int | float]]:
    return [
        (x, y)
        for x, y in points
        if math.isfinite(x) and math.isfinite(y) and (not xlog or x > 0) and (not ylog or y > 0)
    ]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlog: bool = False,
    ylog: bool = False,
    hlines: Sequence[tuple[float, str]] = (),
    vlines: Sequence[tuple[float, str]] = (),
    ylim: tuple[float, float] | None = None,
) -> Figure | None:
    """Lines (or dots) of ``series`` with labelled dashed reference lines, the y axis over
    ``ylim`` when given (else fitted to the data); ``None`` when no point can be drawn
    (non-finite, or not positive on a log axis)."""
    drawn = [(s, _finite(s.points, xlog, ylog)) for s in series]
    if not any(pts for _, pts in drawn):
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    for i, (s, pts) in enumerate(drawn):
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        # a lone point has no line to draw: it gets a marker
        style = {"linestyle": "none", "marker": "o", "markersize": 4} if s.markers else {}
        if len(pts) == 1 and not s.markers:
            style = {"marker": "o", "markersize": 5}
        ax.plot(xs, ys, color=PALETTE[i % len(PALETTE)], label=s.name, **style)
    # reference labels inside the axes (right end of a line, top of a column): clear of the
    # title and of the legend outside the axes
    for v, label in hlines:
        if not ylog or v > 0:
            ax.axhline(v, color="#555", linestyle="--", linewidth=1)
            ax.annotate(label, (0.99, v), xycoords=("axes fraction", "data"), fontsize=8,
                        ha="right", va="bottom", color="#333")  # fmt: skip
    for v, label in vlines:
        if not xlog or v > 0:
            ax.axvline(v, color="#555", linestyle="--", linewidth=1)
            ax.annotate(label, (v, 0.98), xycoords=("data", "axes fraction"), fontsize=8,
                        ha="right", va="top", rotation=90, color="#333")  # fmt: skip
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if ylim is not None:  # before the scale: a log scale of flat data warns of a singular axis
        ax.set_ylim(*ylim)
    ax.set_xscale("log" if xlog else "linear")
    ax.set_yscale("log" if ylog else "linear")
    if xlog:
        log_ticks(ax.xaxis, ax.get_xlim())
    if ylog:
        log_ticks(ax.yaxis, ax.get_ylim())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def plain_number(value: float, _pos: object = None) -> str:
    """A tick label without exponents: ``2,000``, ``50``, ``0.2``."""
    return f"{value:,.0f}" if value >= 1 else f"{value:.3g}"


def log_ticks(axis: Axis, limits: tuple[float, float]) -> None:
    """Log-axis ticks that never run into each other: powers of ten labelled as plain numbers,
    minor ticks unlabelled, where at least two powers of ten fall on the axis. Otherwise (less
    than about two decades: a circuit-size curve's 0.02..0.4 showed the one label 0.1) the
    axis is labelled at 1x, 2x and 5x powers of ten if two of them fall on it, else at four or
    so round numbers.
    """
    lo, hi = sorted(limits)
    minor = LogLocator(base=10, subs=tuple(float(i) for i in range(2, 10)))
    axis.set_minor_locator(minor)
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(plain_number))
    if lo <= 0:
        axis.set_major_locator(LogLocator(base=10))
        return
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if sum(lo <= 10.0**k <= hi for k in range(k0, k1 + 1)) >= 2:
        axis.set_major_locator(LogLocator(base=10))
        return
    ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in (1, 2, 5) if lo <= m * 10.0**k <= hi]
    if len(ticks) < 2:
        ticks = [
            t
            for t in MaxNLocator(nbins=4, steps=[1, 2, 5, 10]).tick_values(lo, hi)
            if lo <= t <= hi
        ]
    axis.set_major_locator(FixedLocator(ticks))


def nice_log_limits(lo: float, hi: float) -> tuple[float, float]:
    """Log-axis limits that reach past ``lo`` and ``hi`` to the nearest 1x, 2x or 5x power of
    ten (``229,952 .. 898,200`` -> ``200,000 .. 1,000,000``), so ``log_ticks`` labels a tick at
    or beyond each end of the data; ``lo == hi`` on such a value gets the next one above.

    Raises:
        ValueError: ``lo`` or ``hi`` is not positive and finite, or ``lo > hi``.
    """
    if not (0 < lo <= hi < math.inf):
        raise ValueError(f"log limits need 0 < lo <= hi < inf, got lo={lo!r}, hi={hi!r}")

    def steps(k: int) -> list[float]:
        return [m * 10.0**k for m in (1, 2, 5)]

    below = [t for t in steps(math.floor(math.log10(lo))) if t <= lo * (1 + 1e-12)]
    top = [t for k in (0, 1) for t in steps(math.floor(math.log10(hi)) + k)]
    above = [t for t in top if t >= hi and t > max(below)]  # lo == hi: one step up
    return max(below), min(above)


def bar_chart(
    rows: Sequence[tuple[str, float]],
    *,
    title: str,
    xlabel: str,
    references: Sequence[tuple[float, str]] = (),
    mark_at_most: tuple[float, str] | None = None,
) -> Figure | None:
    """Horizontal bars, one per ``(label, value)`` (top to bottom), each labelled with its
    value, and a dashed vertical line per ``(x, label)`` of ``references`` (named in a legend
    under the axes). With ``mark_at_most = (x, label)`` the bars of value at most ``x`` are
    green and named ``label`` in the legend. The x axis runs from 0 past the longest bar and
    every reference line with room for the value labels. Non-finite values get no bar (their
    label says ``nan``). ``None`` when ``rows`` is empty."""
    if not rows:
        return None
    fig = new_figure(6.5, 1.8 + 0.22 * len(rows))
    ax = fig.add_subplot()
    values = [v if math.isfinite(v) else 0.0 for _, v in rows]
    marked = [mark_at_most is not None and v <= mark_at_most[0] for v in values]
    colors = [PALETTE[2] if m else PALETTE[0] for m in marked]
    bars = ax.barh(range(len(rows)), values, color=colors)
    ax.bar_label(bars, labels=[f"{v:.3g}" for _, v in rows], fontsize=7, padding=2)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    if mark_at_most is not None and any(marked):
        bars[marked.index(True)].set_label(mark_at_most[1])
    for i, (x, label) in enumerate(references):
        color = ("#d62728", "#555", "#9467bd")[i % 3]
        ax.axvline(x, color=color, linestyle="--", linewidth=1.2, label=label)
    ax.set_xlim(0, bar_axis_end([*values, *(x for x, _ in references)]))
    ax.set(title=title, xlabel=xlabel)
    if references or (mark_at_most is not None and any(marked)):
        fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def bar_axis_end(values: Sequence[float], room: float = 0.18) -> float:
    """Where a bar chart's value axis ends: ``room`` (a share of the largest value) past the
    largest finite non-negative value, so a value label beside the longest bar fits inside the
    axes; 1 when there is no positive value."""
    top = max((v for v in values if math.isfinite(v) and v > 0), default=0.0)
    return top * (1 + room) if top > 0 else 1.0


def heatmap(
    values: Sequence[Sequence[float]],
    *,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    symmetric: bool = True,
) -> Figure:
    """A heatmap with a colour bar: red-blue around 0 when ``symmetric``, white to blue else."""
    flat = [abs(v) for row in values for v in row if math.isfinite(v)]
    vmax = max(flat + [1e-9])
    fig = new_figure(1.5 + 0.25 * len(col_labels), 1.2 + 0.25 * len(row_labels))
    ax = fig.add_subplot()
    if symmetric:
        image = ax.imshow(values, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
    else:
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=60, fontsize=7, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def chart_html(fig: Figure | None, name: str, title: str, png_dir: Path | None = None) -> str:
    """``embed(fig)``, or a note that ``title`` has no data when ``fig`` is ``None``."""
    if fig is None:
        return f'<p class="note">{esc(title)}: no data</p>'
    return embed(fig, name, png_dir)
