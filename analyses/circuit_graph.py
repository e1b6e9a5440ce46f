"""The circuit as a layered graph: a layout, an inline SVG with hover, and a Graphviz export.

Rows run bottom (layer 0) to top (the final residual read), one per node location that keeps
nodes: residual reads (``attn_in``, ``mlp_in``, ``final``), the q/k/v channels grouped in a box
per head, residual writes (``attn_out``, ``mlp_out``) and MLP neurons. Solid edges are the
circuit's weights (``circuits/nodes.py``): thickness from ``|w|``, blue positive, red negative. Dashed grey
lines are residual identity paths (a write to channel c read later at channel c); they are drawn
for reading, not counted as edges.
"""

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analyses.html import esc
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.nodes import NodeKind, node_label, node_locations
from sparse_lens.model.config import SparseTransformerConfig

KIND_COLOUR = {
    "attn_in": "#6b8fb5",
    "mlp_in": "#6b8fb5",
    "final": "#333333",
    "q": "#2ca02c",
    "k": "#ff7f0e",
    "v": "#9467bd",
    "attn_out": "#17becf",
    "neuron": "#d62728",
    "mlp_out": "#17becf",
}
READS, WRITES = ("attn_in", "mlp_in", "final"), ("attn_out", "mlp_out")
DX, DY, LEFT, PAD, MAX_WIDTH = 16, 70, 120, 30, 2000


@dataclass(frozen=True)
class GraphNode:
    label: str
    hook: str
    kind: NodeKind
    layer: int
    channel: int
    row: int
    x: float
    y: float
    head: int | None


def _row_key(kind: NodeKind, layer: int) -> tuple[int, int]:
    order = {"attn_in": 0, "q": 1, "k": 1, "v": 1, "attn_out": 2, "mlp_in": 3}
    order |= {"neuron": 4, "mlp_out": 5, "final": 6}
    return (layer, order[kind])


def layout(circuit: Circuit, cfg: SparseTransformerConfig) -> tuple[list[GraphNode], list[str]]:
    """Positions of the circuit's nodes and the row names (bottom row first)."""
    rows: dict[tuple[int, int], list[tuple[Any, int]]] = {}
    for loc in node_locations(cfg):
        for c in circuit.nodes.get(loc.hook, []):
            rows.setdefault(_row_key(loc.kind, loc.layer), []).append((loc, c))
    keys = sorted(rows)
    slots = {k: len(v) + len({c // cfg.d_head for _, c in v}) for k, v in rows.items()}
    # spacing: DX, squeezed for wide circuits so the widest row spans at most MAX_WIDTH pixels
    dx = min(DX, MAX_WIDTH / max(slots.values(), default=1))
    width = max(slots.values(), default=1)
    names, out = [], []
    for r, key in enumerate(keys):
        members = rows[key]
        if members[0][0].kind in ("q", "k", "v"):
            kinds = {"q": 0, "k": 1, "v": 2}
            members.sort(key=lambda m: (m[1] // cfg.d_head, kinds[m[0].kind], m[1]))
        else:
            members.sort(key=lambda m: m[1])
        loc0 = members[0][0]
        names.append(
            f"L{loc0.layer} qkv" if loc0.kind in ("q", "k", "v") else f"L{loc0.layer} {loc0.kind}"
        )
        if loc0.kind == "final":
            names[-1] = "final resid"
        heads = [c // cfg.d_head if loc.kind in ("q", "k", "v") else None for loc, c in members]
        gaps = [0] + [int(heads[i] != heads[i - 1]) for i in range(1, len(members))]
        n_gaps = sum(gaps) if heads[0] is not None else 0
        offset = LEFT + (width + 1 - len(members) - n_gaps) * dx / 2
        y = float(PAD + (len(keys) - 1 - r) * DY + 20)
        shift = 0
        for i, (loc, c) in enumerate(members):
            head = heads[i]
            shift += gaps[i] if head is not None else 0
            x = offset + (i + shift) * dx + dx / 2
            out.append(
                GraphNode(node_label(loc, c, cfg), loc.hook, loc.kind, loc.layer, c, r, x, y, head)
            )
    return out, names


def residual_paths(nodes: list[GraphNode]) -> list[tuple[GraphNode, GraphNode]]:
    """``(write, read)`` pairs on the same residual channel, the read in a later row."""
    reads: dict[int, list[GraphNode]] = {}
    for n in nodes:
        if n.kind in READS:
            reads.setdefault(n.channel, []).append(n)
    return [
        (w, r) for w in nodes if w.kind in WRITES for r in reads.get(w.channel, []) if r.row > w.row
    ]


@dataclass(frozen=True, kw_only=True)
class CircuitGraph:
    """A circuit laid out for drawing: its task, nodes with positions (``layout``), the row
    names (bottom row first) and its edges ``(source label, destination label, weight)``."""

    task: str
    nodes: tuple[GraphNode, ...]
    rows: tuple[str, ...]
    edges: tuple[tuple[str, str, float], ...]


def circuit_graph(circuit: Circuit, cfg: SparseTransformerConfig) -> CircuitGraph:
    """``circuit`` laid out as a ``CircuitGraph`` (for ``graph_svg``)."""
    nodes, names = layout(circuit, cfg)
    edges = tuple((s, d, w) for s, d, w in circuit.edges)
    return CircuitGraph(task=circuit.task, nodes=tuple(nodes), rows=tuple(names), edges=edges)


def circuit_svg(
    circuit: Circuit,
    cfg: SparseTransformerConfig,
    node_info: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """The layered graph as an ``<svg>`` (``graph_svg`` of ``circuit_graph``)."""
    return graph_svg(circuit_graph(circuit, cfg), node_info)


def graph_svg(
    graph: CircuitGraph, node_info: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    """The layered graph as an ``<svg>``; ``node_info[label]`` adds hover facts (and an
    ``effect`` key sets the node's size)."""
    node_info = node_info or {}
    nodes, names = list(graph.nodes), list(graph.rows)
    if not nodes:
        return '<p class="note">the circuit keeps no nodes</p>'
    pos = {n.label: n for n in nodes}
    width = int(max(n.x for n in nodes) + DX + 40)
    dense_rows = max(Counter(n.row for n in nodes).values()) * DX > MAX_WIDTH
    radius_scale = 0.6 if dense_rows else 1.0
    height = int(PAD * 2 + len(names) * DY)
    wmax = max((abs(w) for _, _, w in graph.edges), default=1.0) or 1.0
    out = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="max-width:100%;height:auto;font:10px sans-serif" class="circuit-graph" '
        f'role="img" aria-label="circuit graph of {esc(graph.task)}">'
    ]
    for r, name in enumerate(names):
        y = PAD + (len(names) - 1 - r) * DY + 20
        out.append(f'<text x="6" y="{y + 4}" fill="#555">{esc(name)}</text>')
    out += _head_boxes(nodes)
    out.append('<g class="residual-paths">')
    for w, r in residual_paths(nodes):
        out.append(
            f'<line class="edge resid" data-src="{esc(w.label)}" data-dst="{esc(r.label)}" '
            f'x1="{w.x:.1f}" y1="{w.y:.1f}" x2="{r.x:.1f}" y2="{r.y:.1f}" stroke="#bbb" '
            f'stroke-dasharray="3 3" stroke-width="0.8"><title>residual channel {w.channel}: '
            f"{esc(w.label)} → {esc(r.label)}</title></line>"
        )
    out.append('</g><g class="edges">')
    for s, d, w in graph.edges:
        a, b = pos[s], pos[d]
        colour = "#1f5fbf" if w > 0 else "#c0392b"
        sw = 0.4 + 3.0 * abs(w) / wmax
        out.append(
            f'<line class="edge" data-src="{esc(s)}" data-dst="{esc(d)}" x1="{a.x:.1f}" '
            f'y1="{a.y:.1f}" x2="{b.x:.1f}" y2="{b.y:.1f}" stroke="{colour}" '
            f'stroke-width="{sw:.2f}" stroke-opacity="0.6"><title>{esc(s)} → {esc(d)}: '
            f"w = {w:+.4g}</title></line>"
        )
    out.append('</g><g class="nodes">')
    out += _node_marks(nodes, node_info, radius_scale)
    out.append("</g></svg>")
    return "".join(out)


def _head_boxes(nodes: list[GraphNode]) -> list[str]:
    """A labelled box around each head's q/k/v nodes."""
    heads: dict[tuple[int, int], list[GraphNode]] = {}
    for n in nodes:
        if n.head is not None:
            heads.setdefault((n.layer, n.head), []).append(n)
    out = []
    for i, ((layer, head), members) in enumerate(sorted(heads.items())):
        x0, x1 = min(m.x for m in members) - 7, max(m.x for m in members) + 7
        y = members[0].y
        ty = y - 14 if i % 2 == 0 else y + 22  # alternate so narrow heads' labels do not overlap
        out.append(
            f'<rect x="{x0:.1f}" y="{y - 12}" width="{x1 - x0:.1f}" height="24" rx="5" '
            f'fill="#f3eefa" stroke="#c9b8e6"/><text x="{x0 + 1:.1f}" y="{ty}" '
            f'fill="#7a5aa8">L{layer}H{head}</text>'
        )
    return out


def _node_marks(
    nodes: list[GraphNode], node_info: Mapping[str, Mapping[str, float]], radius_scale: float
) -> list[str]:
    """A circle per node, its area growing with ``|effect|``, its hover facts as a title."""
    emax = max((abs(i.get("effect", 0.0)) for i in node_info.values()), default=0.0)
    out = []
    for n in nodes:
        info = node_info.get(n.label, {})
        eff = abs(info.get("effect", 0.0))
        radius = radius_scale * (3.0 + (4.0 * math.sqrt(eff / emax) if emax > 0 else 0.0))
        facts = "".join(f"\n{k}: {v:.4g}" for k, v in info.items())
        out.append(
            f'<g class="node" data-label="{esc(n.label)}"><circle cx="{n.x:.1f}" cy="{n.y:.1f}" '
            f'r="{radius:.1f}" fill="{KIND_COLOUR[n.kind]}" stroke="#fff" stroke-width="0.8"/>'
            f"<title>{esc(n.label)}\n{esc(n.hook)} channel {n.channel}{esc(facts)}</title></g>"
        )
    return out


GRAPH_SCRIPT = """
<script>
document.querySelectorAll('svg.circuit-graph').forEach(function (svg) {
  var edges = svg.querySelectorAll('line.edge');
  svg.querySelectorAll('g.node').forEach(function (node) {
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


def circuit_dot(circuit: Circuit, cfg: SparseTransformerConfig) -> str:
    """The circuit in Graphviz ``dot``: one rank per row, weights as labels and pen widths."""
    nodes, names = layout(circuit, cfg)
    wmax = max((abs(w) for _, _, w in circuit.edges), default=1.0) or 1.0
    lines = [
        f"digraph {_dot_id(circuit.task)} {{",
        "  rankdir=BT; node [shape=circle, style=filled, fontsize=8, width=0.3];",
        f'  label="{_dot_str(circuit.summary())}";',
    ]
    for r, name in enumerate(names):
        members = " ".join(f'"{_dot_str(n.label)}"' for n in nodes if n.row == r)
        lines.append(f"  subgraph row{r} {{ rank=same; {members} }}  // {name}")
    for n in nodes:
        lines.append(
            f'  "{_dot_str(n.label)}" [fillcolor="{KIND_COLOUR[n.kind]}", '
            f'tooltip="{_dot_str(n.hook)} channel {n.channel}"];'
        )
    for s, d, w in circuit.edges:
        colour = "#1f5fbf" if w > 0 else "#c0392b"
        lines.append(
            f'  "{_dot_str(s)}" -> "{_dot_str(d)}" [color="{colour}", '
            f'penwidth={0.4 + 3 * abs(w) / wmax:.2f}, label="{w:+.3g}"];'
        )
    for w, r in residual_paths(nodes):
        lines.append(
            f'  "{_dot_str(w.label)}" -> "{_dot_str(r.label)}" [style=dashed, color="#bbbbbb"];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_id(text: str) -> str:
    ident = "".join(c if c.isalnum() else "_" for c in text)
    return ident if ident and not ident[0].isdigit() else f"c_{ident}"
