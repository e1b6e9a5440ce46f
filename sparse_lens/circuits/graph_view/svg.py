"""A laid-out ``Drawing`` as an inline ``<svg>`` (no script, no network): label boxes coloured
by site, column headers, edges as curves (blue positive, red negative weights, width ``|w|``;
grey with their count between collapsed boxes), residual identity paths dashed. Each box's hover
title gives its node's label, role and knockout. ``GRAPH_SCRIPT`` (optional) dims the edges
that do not touch the hovered box."""

import html
import math
from collections.abc import Mapping

from sparse_lens.circuits.graph_view.graph import Drawing, Item, Link
from sparse_lens.circuits.graph_view.layout import (
    COL_GAP,
    FONT_PX,
    PAD_X,
    Box,
    Layout,
    layered_layout,
)

KIND_COLOUR = {  # one colour per site, so the legend names each once
    "attn_in": "#6b8fb5", "mlp_in": "#1f3f7a", "final": "#333333",
    "q": "#2ca02c", "k": "#ff7f0e", "v": "#9467bd",
    "attn_out": "#17becf", "neuron": "#d62728", "mlp_out": "#8c6d31",
}  # fmt: skip
GROUP_COLOUR = "#9a9a9a"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _path(a: Box, b: Box, residual: bool) -> str:
    """A curve from ``a``'s right edge to ``b``'s left edge. A residual path that skips columns
    of its band runs along the band's lane below its lowest row (so it passes under no box and
    is not read as entering one); to a later band (leftwards) it leaves right and enters left."""
    x1, y1, x2, y2 = a.x + a.w, a.y + a.h / 2, b.x, b.y + b.h / 2
    if residual and a.below == b.below and x2 - x1 > COL_GAP + 1:
        lane, r = a.below, COL_GAP / 2
        return (
            f"M{x1:.1f} {y1:.1f}C{x1 + r:.1f} {y1:.1f} {x1 + r:.1f} {lane:.1f} {x1 + r + 6:.1f} "
            f"{lane:.1f}L{x2 - r - 6:.1f} {lane:.1f}C{x2 - r:.1f} {lane:.1f} {x2 - r:.1f} "
            f"{y2:.1f} {x2:.1f} {y2:.1f}"
        )
    c1, c2 = ((x1 + x2) / 2,) * 2 if x2 > x1 else (x1 + 90, x2 - 90)
    return f"M{x1:.1f} {y1:.1f}C{c1:.1f} {y1:.1f} {c2:.1f} {y2:.1f} {x2:.1f} {y2:.1f}"


def _link_svg(link: Link, a: Box, b: Box, wmax: float) -> str:
    path = _path(a, b, link.residual)
    ends = f'data-src="{esc(link.source)}" data-dst="{esc(link.target)}" d="{path}" fill="none"'
    if link.residual:
        what = "residual identity path" + (f"s: {link.count}" if link.count > 1 else "")
        return (
            f'<path class="edge resid" {ends} stroke="#bbb" stroke-dasharray="3 3" '
            f'stroke-width="0.8"><title>{esc(what)}</title></path>'
        )
    if link.count > 1 or a.key.startswith("group:") or b.key.startswith("group:"):
        width = 0.6 + 1.2 * math.log2(1 + link.count)
        return (
            f'<path class="edge agg" {ends} stroke="#888" stroke-width="{width:.2f}" '
            f'stroke-opacity="0.5"><title>{link.count} edge{"s" if link.count > 1 else ""} '
            f"(sum |w| = {link.weight:.4g})</title></path>"
        )
    colour = "#1f5fbf" if link.weight > 0 else "#c0392b"
    return (
        f'<path class="edge" {ends} stroke="{colour}" stroke-width="'
        f'{0.5 + 2.5 * abs(link.weight) / wmax:.2f}" stroke-opacity="0.7"><title>'
        f"{esc(link.source)} → {esc(link.target)}: w = {link.weight:+.4g}</title></path>"
    )


def _box_svg(item: Item, box: Box, facts: Mapping[str, float]) -> str:
    colour = KIND_COLOUR[item.kind] if item.kind is not None else GROUP_COLOUR
    group = item.kind is None
    cls = "group" if group else "node"
    dash = ' stroke-dasharray="4 2"' if group else ""
    fill = "#f4f4f4" if group else "#ffffff"
    hover = item.tooltip + "".join(f"\n{k}: {v:.4g}" for k, v in facts.items())
    return (
        f'<g class="{cls}" data-label="{esc(item.key)}"><rect x="{box.x:.1f}" y="{box.y:.1f}" '
        f'width="{box.w:.1f}" height="{box.h:.1f}" rx="4" fill="{fill}" stroke="{colour}" '
        f'stroke-width="1.4"{dash}/><text class="label" x="{box.x + PAD_X:.1f}" '
        f'y="{box.y + box.h / 2 + FONT_PX * 0.36:.1f}" fill="#222">{esc(item.text)}</text>'
        f"<title>{esc(hover)}</title></g>"
    )


def drawing_svg(
    drawing: Drawing,
    node_info: Mapping[str, Mapping[str, float]] | None = None,
    layout: Layout | None = None,
) -> str:
    """``drawing`` as an ``<svg class="circuit-graph" data-view=...>`` at its natural size (a
    page scrolls it sideways rather than shrinking its text); ``node_info[label]`` adds hover
    facts; ``layout`` defaults to ``layered_layout(drawing)``."""
    if not drawing.items:
        return '<p class="note">the circuit keeps no nodes</p>'
    lay = layout or layered_layout(drawing)
    node_info = node_info or {}
    w, h = math.ceil(lay.width), math.ceil(lay.height)
    weights = [abs(link.weight) for link in drawing.links if link.count == 1]
    wmax = max(weights, default=1.0) or 1.0
    out = [
        f'<svg class="circuit-graph" data-view="{esc(drawing.view)}" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" style="font:{FONT_PX}px sans-serif" role="img" '
        f'aria-label="{esc(drawing.view)} graph of the {esc(drawing.task)} circuit">'
    ]
    out += [
        f'<text class="column" x="{b.x:.1f}" y="{b.y + 12:.1f}" fill="#555" '
        f'font-weight="bold">{esc(b.text)}</text>'
        for b in lay.headers
    ]
    order = sorted(drawing.links, key=lambda link: not link.residual)  # dashed ones underneath
    out.append('<g class="edges">')
    out += [_link_svg(link, lay.boxes[link.source], lay.boxes[link.target], wmax) for link in order]
    out.append('</g><g class="boxes">')
    out += [_box_svg(it, lay.boxes[it.key], node_info.get(it.key, {})) for it in drawing.items]
    out.append("</g></svg>")
    return "".join(out)


GRAPH_SCRIPT = """
<script>
document.querySelectorAll('svg.circuit-graph').forEach(function (svg) {
  var edges = svg.querySelectorAll('.edge');
  svg.querySelectorAll('g.node, g.group').forEach(function (node) {
    var label = node.getAttribute('data-label');
    node.addEventListener('mouseenter', function () {
      edges.forEach(function (e) {
        var on = e.getAttribute('data-src') === label || e.getAttribute('data-dst') === label;
        e.style.opacity = on ? '1' : '0.06';
      });
    });
    node.addEventListener('mouseleave', function () {
      edges.forEach(function (e) { e.style.opacity = ''; });
    });
  });
});
</script>
"""
