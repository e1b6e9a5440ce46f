"""A layered left-to-right layout of a ``Drawing`` that stays legible up to a few hundred boxes.

Columns are the forward pass's steps (``graph.SITE_ORDER`` within each layer, layers left to
right, the final residual last). Within a column, boxes are ordered to reduce edge crossings by
barycentre sweeps (each box moved to the mean position of its neighbours in the columns already
placed, alternately left to right and right to left; Sugiyama et al. 1981). A column of more than
``max_rows`` boxes is wrapped into side-by-side sub-columns. Every box is as wide as the widest
label of its sub-column (text width estimated at ``CHAR_PX`` per character of an 11 px
sans-serif font), so no two label boxes overlap: columns and rows are disjoint by construction.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sparse_lens.circuits.graph_view.graph import (
    SITE_ORDER,
    Column,
    Drawing,
    Item,
    Link,
    column_name,
)

FONT_PX = 11
CHAR_PX = 6.3  # width per character at FONT_PX: DejaVu Sans's, the widest common sans-serif,
# averages 6.2 px on a digit-heavy label ("L0 mlp 212")
PAD_X = 7.0  # text inset in its box, each side
BOX_H, ROW_H = 18.0, 24.0  # box height, row pitch (px)
COL_GAP, SUB_GAP = 40.0, 12.0  # between columns (room for edges), between sub-columns
TOP, LEFT = 30.0, 10.0  # room for the column headers, left margin
BAND_GAP = 14.0  # between two bands
LANE = 6.0  # a band's lane below its lowest row, for residual paths that skip columns
MAX_WIDTH = 1150.0  # a layer is cut where it would pass this (a report page's content width)
MAX_ROWS = 32


@dataclass(frozen=True, kw_only=True)
class Box:
    """A placed label box (px, top-left origin); ``key`` is its item's (or ``header:...``);
    ``below`` the y of the free lane under its band's lowest row."""

    key: str
    text: str
    x: float
    y: float
    w: float
    h: float
    below: float = 0.0

    def overlaps(self, other: "Box") -> bool:
        return (
            self.x < other.x + other.w
            and other.x < self.x + self.w
            and self.y < other.y + other.h
            and other.y < self.y + self.h
        )


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where each item's box is (``boxes[key]``), the column headers, and the drawing's size."""

    boxes: dict[str, Box]
    headers: tuple[Box, ...]
    width: float
    height: float


def text_width(text: str) -> float:
    """The estimated width (px) of a box holding ``text``."""
    return len(text) * CHAR_PX + 2 * PAD_X


def _neighbours(items: Sequence[Item], links: Sequence[Link]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {it.key: set() for it in items}
    for link in links:
        if link.source in out and link.target in out:
            out[link.source].add(link.target)
            out[link.target].add(link.source)
    return out


def order_columns(
    items: Sequence[Item], links: Sequence[Link], sweeps: int = 4
) -> list[list[Item]]:
    """The items by column (left to right), each column ordered by barycentre sweeps."""
    columns: dict[Column, list[Item]] = {}
    for it in sorted(items, key=lambda it: (it.column, it.order, it.key)):
        columns.setdefault(it.column, []).append(it)
    cols = [columns[c] for c in sorted(columns)]
    index = {it.key: i for i, col in enumerate(cols) for it in col}
    nbrs = _neighbours(items, links)
    pos = {it.key: (j + 0.5) / len(col) for col in cols for j, it in enumerate(col)}
    for sweep in range(2 * sweeps):
        forward = sweep % 2 == 0
        for c in range(1, len(cols)) if forward else range(len(cols) - 2, -1, -1):

            def barycentre(it: Item, c: int = c, forward: bool = forward) -> float:
                seen = [pos[n] for n in nbrs[it.key] if (index[n] < c if forward else index[n] > c)]
                return sum(seen) / len(seen) if seen else pos[it.key]

            cols[c] = sorted(cols[c], key=barycentre)
            pos.update({it.key: (j + 0.5) / len(cols[c]) for j, it in enumerate(cols[c])})
    return cols


def crossings(cols: Sequence[Sequence[Item]], links: Sequence[Link]) -> int:
    """Crossings of the links between adjacent columns in the order of ``cols``."""
    rank = {it.key: (i, j) for i, col in enumerate(cols) for j, it in enumerate(col)}
    total = 0
    for i in range(len(cols) - 1):
        pairs = []
        for link in links:
            a, b = rank.get(link.source), rank.get(link.target)
            if a and b and {a[0], b[0]} == {i, i + 1}:
                pairs.append((a[1], b[1]) if a[0] == i else (b[1], a[1]))
        total += sum(1 for p in pairs for q in pairs if p[0] < q[0] and p[1] > q[1])
    return total


def _wrap(col: list[Item], max_rows: int) -> list[list[Item]]:
    """``col`` in ``ceil(len / max_rows)`` sub-columns of near-equal length."""
    n_sub = max(1, math.ceil(len(col) / max_rows))
    size = math.ceil(len(col) / n_sub)
    return [col[i : i + size] for i in range(0, len(col), size)]


def _place_band(
    cols: list[list[Item]], max_rows: int, top: float, boxes: dict[str, Box], headers: list[Box]
) -> tuple[float, float]:
    """Place the columns of one band (one layer) from ``top``; returns its width and height."""
    wrapped = [_wrap(col, max_rows) for col in cols]
    rows = max(len(sub) for subs in wrapped for sub in subs)
    x = LEFT
    for col, subs in zip(cols, wrapped, strict=True):
        title = column_name(col[0].column)
        header_w = text_width(title)
        for k, sub in enumerate(subs):
            w = max(text_width(it.text) for it in sub)
            if k == 0:
                w = max(w, header_w)
                headers.append(Box(key=f"header:{title}", text=title, x=x, y=top + 4.0, w=header_w, h=BOX_H))  # fmt: skip
            y0 = top + TOP + (rows - len(sub)) * ROW_H / 2
            below = top + TOP + rows * ROW_H + LANE
            for j, it in enumerate(sub):
                y = y0 + j * ROW_H + (ROW_H - BOX_H) / 2
                boxes[it.key] = Box(key=it.key, text=it.text, x=x, y=y, w=w, h=BOX_H, below=below)
            x += w + (SUB_GAP if k < len(subs) - 1 else COL_GAP)
    return x - COL_GAP + LEFT, TOP + rows * ROW_H + 2 * LANE


def _column_width(col: list[Item], max_rows: int) -> float:
    """The width ``_place_band`` gives ``col`` (its sub-columns and the gaps between them)."""
    subs = _wrap(col, max_rows)
    widths = [max(text_width(it.text) for it in sub) for sub in subs]
    widths[0] = max(widths[0], text_width(column_name(col[0].column)))
    return sum(widths) + SUB_GAP * (len(subs) - 1)


def _units(cols: list[list[Item]], max_rows: int, max_width: float) -> list[list[list[Item]]]:
    """The columns by layer; a layer wider than ``max_width`` is cut between its attention and
    its MLP (no edge crosses either cut: edges stay within a block, and the attention's writes
    reach the MLP's reads by residual paths only)."""
    layers: dict[int, list[list[Item]]] = {}
    for col in cols:
        layers.setdefault(col[0].column[0], []).append(col)
    units: list[list[list[Item]]] = []
    for layer in layers.values():
        mlp = [
            col for col in layer if SITE_ORDER["mlp_in"] <= col[0].column[1] < SITE_ORDER["final"]
        ]
        attn = [col for col in layer if col[0].column[1] < SITE_ORDER["mlp_in"]]
        if _width(layer, max_rows) > max_width and attn and mlp:
            final = [col for col in layer if col[0].column[1] == SITE_ORDER["final"]]
            units += [attn, mlp + final]
        else:
            units.append(layer)
    return units


def _width(cols: list[list[Item]], max_rows: int) -> float:
    """The width of a band of ``cols``, margins included."""
    return 2 * LEFT + sum(_column_width(col, max_rows) + COL_GAP for col in cols) - COL_GAP


def _bands(cols: list[list[Item]], max_rows: int, max_width: float) -> list[list[list[Item]]]:
    """The columns in bands, like lines of text: whole layers (or half-layers, ``_units``) in
    forward order, each band filled left to right while it stays within ``max_width``, so a
    small circuit reads in one row and the final residual stays at the right of its band."""
    bands: list[list[list[Item]]] = []
    for unit in _units(cols, max_rows, max_width):
        if bands and _width(bands[-1] + unit, max_rows) <= max_width:
            bands[-1] = bands[-1] + unit
        else:
            bands.append(unit)
    return bands


def layered_layout(
    drawing: Drawing,
    *,
    max_rows: int = MAX_ROWS,
    sweeps: int = 4,
    max_width: float | None = MAX_WIDTH,
) -> Layout:
    """Boxes of ``drawing``'s items in columns (module docstring). The columns are set in bands
    stacked top to bottom, each filled with whole layers left to right while it fits
    ``max_width`` px (``_bands``; None: one band, however wide); a layer wider than that is cut
    between its attention and its MLP, and a half-layer wider still is left wide (a page
    scrolls it). The final residual closes the last band.

    Raises:
        ValueError: ``max_rows`` is below 1.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows!r}")
    cols = order_columns(drawing.items, drawing.links, sweeps)
    bands = [cols] if max_width is None else _bands(cols, max_rows, max_width)
    boxes: dict[str, Box] = {}
    headers: list[Box] = []
    width, top = 2 * LEFT, 0.0
    for band in bands:
        if band:
            w, h = _place_band(band, max_rows, top, boxes, headers)
            width, top = max(width, w), top + h + BAND_GAP
    height = top - BAND_GAP if boxes else TOP
    return Layout(boxes=boxes, headers=tuple(headers), width=width, height=height)
